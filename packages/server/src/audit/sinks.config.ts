import type { GuardedFetch } from '../net/outbound.js';
import { createFileTransport } from './sinks.file.js';
import type { SinkTransport } from './sinks.lines.js';
import { createOtlpTransport } from './sinks.otlp.js';
import { createSyslogTransport, type SyslogResolver } from './sinks.syslog.js';
import { createWebhookTransport } from './sinks.webhook.js';

export const SINK_KINDS = ['webhook', 'syslog', 'file', 'otlp'] as const;
export type SinkKind = (typeof SINK_KINDS)[number];

/**
 * A sink's configuration as sealed at rest (one value, bound to the org and the sink): credentials
 * (the webhook signing secret, OTLP headers) are inside and never returned; the destination is inside
 * too, so a database writer cannot quietly point an organization's audit stream elsewhere.
 */
export type SinkConfig = SinkDestination & {
  /**
   * Whether lines carry `shown` (people's opened email/name, IP, user agent). Off (the default, and
   * for sinks sealed before it existed): only the sealed/hashed form, which a person's erasure
   * reaches; a copy delivered with personal data is beyond erasure (the receiver's retention applies).
   */
  personalData?: boolean;
};

type SinkDestination =
  | { kind: 'webhook'; url: string; signingSecret: string }
  | {
      kind: 'syslog';
      host: string;
      port: number;
      caPem: string;
      serverName: string | null;
      facility: number;
      appHostname: string | null;
    }
  | { kind: 'file' }
  | { kind: 'otlp'; url: string; headers: Record<string, string> };

/** What the API shows of a configuration: everything but the credentials. */
export type SinkConfigView = (
  | { kind: 'webhook'; url: string }
  | Extract<SinkDestination, { kind: 'syslog' }>
  | { kind: 'file'; file: string }
  | { kind: 'otlp'; url: string; headerNames: string[] }
) & { personalData: boolean };

export function viewOfConfig(config: SinkConfig, sinkId: string): SinkConfigView {
  const personalData = config.personalData === true;
  switch (config.kind) {
    case 'webhook':
      return { kind: 'webhook', url: config.url, personalData };
    case 'syslog':
      return { ...config, personalData };
    case 'file':
      return { kind: 'file', file: `${sinkId}.ndjson`, personalData };
    case 'otlp':
      return { kind: 'otlp', url: config.url, headerNames: Object.keys(config.headers), personalData };
  }
}

export const sinkConfigContext = (orgId: string, sinkId: string) => `audit-sink:${orgId}:${sinkId}`;

export interface TransportDeps {
  fetch: GuardedFetch;
  /** Syslog's connection target, approved by the outbound policy. */
  resolveSyslogHost: SyslogResolver;
  fileDir: string | undefined;
  fileMaxBytes: number;
  clock: () => number;
}

export function transportOf(sinkId: string, config: SinkConfig, deps: TransportDeps): SinkTransport {
  switch (config.kind) {
    case 'webhook':
      return createWebhookTransport({
        url: config.url,
        signingSecret: config.signingSecret,
        fetch: deps.fetch,
        clock: deps.clock,
      });
    case 'otlp':
      return createOtlpTransport({ url: config.url, headers: config.headers, fetch: deps.fetch });
    case 'syslog':
      return createSyslogTransport(
        {
          host: config.host,
          port: config.port,
          caPem: config.caPem,
          serverName: config.serverName ?? undefined,
          facility: config.facility,
          appHostname: config.appHostname ?? undefined,
        },
        deps.resolveSyslogHost,
      );
    case 'file':
      if (!deps.fileDir)
        return {
          send: () => Promise.reject(new Error('BULWARK_AUDIT_SINK_DIR is not set on this server')),
        };
      return createFileTransport({ dir: deps.fileDir, sinkId, maxBytes: deps.fileMaxBytes });
  }
}
