import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Database } from '../db/database.js';
import type { RouteDefinition } from '../http/route.js';
import { createCheckedResolver, type GuardedFetch, type OutboundPolicy } from '../net/outbound.js';
import type { Metrics } from '../ops/metrics.js';
import type { DataKeyring } from '../secrets/data-keyring.js';
import type { AuditService } from './audit.service.js';
import type { Transact } from './audited-transaction.js';
import { transportOf } from './sinks.config.js';
import { createSinkDelivery, DEFAULT_DELIVERY } from './sinks.delivery.js';
import { checkSinkDir } from './sinks.file.js';
import { createSinkMetrics } from './sinks.metrics.js';
import { sinksRoutes } from './sinks.routes.js';
import { createSinksService } from './sinks.service.js';
import { createSinksStore } from './sinks.store.js';

/** What the sinks service needs beyond the database, whether the server or the CLI builds it. */
export interface SinksDeps {
  config: Pick<Config, 'auditSinks'>;
  database: Pick<Database, 'db'>;
  dataKeys: Pick<DataKeyring, 'seal' | 'open'>;
  transact: Transact;
  fetch: GuardedFetch;
  /** The policy `fetch` enforces (and its resolver), applied to syslog's TCP connections too. */
  outboundPolicy: Pick<OutboundPolicy, 'allowlist' | 'allowPrivate' | 'dnsServers'>;
  clock: () => number;
}

/** The sinks service and the transports it tests with: the API's and `bulwark audit sinks`'s. */
export function createSinksServiceFor(deps: SinksDeps, onRemoved?: (sinkId: string, kind: string) => void) {
  const { config, clock } = deps;
  // Refused before the server starts, not at the first write: see checkSinkDir.
  if (config.auditSinks.dir) checkSinkDir(config.auditSinks.dir);
  // Resolved once, by the guard's own resolver, every answer checked; the connection goes to the
  // address that was checked.
  const resolveSyslogHost = createCheckedResolver(deps.outboundPolicy);
  const transports = (sinkId: string, sinkConfig: Parameters<typeof transportOf>[1]) =>
    transportOf(sinkId, sinkConfig, {
      fetch: deps.fetch,
      resolveSyslogHost,
      fileDir: config.auditSinks.dir,
      fileMaxBytes: config.auditSinks.fileMaxBytes,
      clock,
    });
  const service = createSinksService({
    store: createSinksStore(deps.database.db),
    dataKeys: deps.dataKeys,
    transact: deps.transact,
    clock,
    fileDir: config.auditSinks.dir,
    transportOf: transports,
    ...(onRemoved ? { onRemoved } : {}),
  });
  return { service, transports };
}

/**
 * Audit sinks (AUD-6) as the server runs them: the routes, and the one delivery loop of this process
 * (started here; the CLI never builds one). docs/audit-sinks.md.
 */
export function createAuditSinks(
  deps: SinksDeps & {
    audit: Pick<AuditService, 'exportLines'>;
    metrics: Pick<Metrics, 'registry'>;
    logger: Logger;
    /** Whether this instance holds the delivery lease now (ops/leases.ts); asked at each pass. */
    leads?: () => Promise<boolean>;
  },
): { routes: RouteDefinition[]; start(): void; stop(): Promise<void> } {
  const { config, clock } = deps;
  let delivery: ReturnType<typeof createSinkDelivery> | undefined;
  const { service, transports } = createSinksServiceFor(deps, (sinkId, kind) =>
    delivery?.forget(sinkId, kind),
  );
  delivery = createSinkDelivery({
    store: createSinksStore(deps.database.db),
    exportLines: (chainId, filters, limit, afterSeq, personalData) =>
      deps.audit.exportLines(chainId, filters, limit, afterSeq, personalData),
    open: service.open,
    transportOf: transports,
    metrics: createSinkMetrics(deps.metrics.registry),
    clock,
    logger: deps.logger,
    ...(deps.leads ? { leads: deps.leads } : {}),
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
