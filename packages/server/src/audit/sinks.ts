import { lookup } from 'node:dns/promises';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Database } from '../db/database.js';
import type { RouteDefinition } from '../http/route.js';
import {
  createOutboundDecider,
  type GuardedFetch,
  OutboundBlockedError,
  type OutboundPolicy,
} from '../net/outbound.js';
import type { Metrics } from '../ops/metrics.js';
import type { DataKeyring } from '../secrets/data-keyring.js';
import type { AuditService } from './audit.service.js';
import type { Transact } from './audited-transaction.js';
import { transportOf } from './sinks.config.js';
import { createSinkDelivery, DEFAULT_DELIVERY } from './sinks.delivery.js';
import { createSinkMetrics } from './sinks.metrics.js';
import { sinksRoutes } from './sinks.routes.js';
import { createSinksService } from './sinks.service.js';
import { createSinksStore } from './sinks.store.js';

/**
 * Audit sinks (AUD-6) as the server runs them: the routes, and the one delivery loop of this process
 * (started here; the CLI never builds one). docs/audit-sinks.md.
 */
export function createAuditSinks(deps: {
  config: Pick<Config, 'auditSinks'>;
  database: Pick<Database, 'db'>;
  audit: Pick<AuditService, 'exportLines'>;
  dataKeys: Pick<DataKeyring, 'seal' | 'open'>;
  transact: Transact;
  fetch: GuardedFetch;
  /** The policy `fetch` enforces, applied to syslog's TCP connections too. */
  outboundPolicy: Pick<OutboundPolicy, 'allowlist' | 'allowPrivate'>;
  metrics: Pick<Metrics, 'registry'>;
  logger: Logger;
  clock: () => number;
}): { routes: RouteDefinition[]; start(): void; stop(): Promise<void> } {
  const { config, clock } = deps;
  const store = createSinksStore(deps.database.db);
  const decider = createOutboundDecider(deps.outboundPolicy);
  // Resolved once and every answer checked; the connection goes to the address that was checked.
  const resolveSyslogHost = async (host: string): Promise<string> => {
    const named = decider.checkName(host);
    if (!named.allowed) throw new OutboundBlockedError(named.reason ?? 'not_in_allowlist', host);
    const answers = await lookup(host, { all: true });
    for (const { address } of answers) {
      const verdict = decider.checkAddress(host, address);
      if (!verdict.allowed) throw new OutboundBlockedError(verdict.reason ?? 'address_not_public', host);
    }
    if (!answers[0]) throw new Error(`the name "${host}" did not resolve`);
    return answers[0].address;
  };
  const transports = (sinkId: string, sinkConfig: Parameters<typeof transportOf>[1]) =>
    transportOf(sinkId, sinkConfig, {
      fetch: deps.fetch,
      resolveSyslogHost,
      fileDir: config.auditSinks.dir,
      fileMaxBytes: config.auditSinks.fileMaxBytes,
      clock,
    });
  let delivery: ReturnType<typeof createSinkDelivery> | undefined;
  const service = createSinksService({
    store,
    dataKeys: deps.dataKeys,
    transact: deps.transact,
    clock,
    fileDir: config.auditSinks.dir,
    transportOf: transports,
    onRemoved: (sinkId, kind) => delivery?.forget(sinkId, kind),
  });
  delivery = createSinkDelivery({
    store,
    exportLines: (chainId, filters, limit, afterSeq) =>
      deps.audit.exportLines(chainId, filters, limit, afterSeq),
    open: service.open,
    transportOf: transports,
    metrics: createSinkMetrics(deps.metrics.registry),
    clock,
    logger: deps.logger,
    options: {
      ...DEFAULT_DELIVERY,
      pollMs: config.auditSinks.pollMs,
      backoffMaxMs: config.auditSinks.backoffMaxSeconds * 1000,
    },
  });
  return {
    routes: sinksRoutes(service),
    start: () => delivery.start(),
    stop: () => delivery.stop(),
  };
}
