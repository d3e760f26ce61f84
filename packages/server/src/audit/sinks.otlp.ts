import type { GuardedFetch } from '../net/outbound.js';
import type { SinkLine, SinkTransport } from './sinks.lines.js';

const TIMEOUT_MS = 15_000;
/** OpenTelemetry SeverityNumber: ERROR3 for critical (alerting rules key on >= 17), WARN, INFO. */
const SEVERITY = {
  critical: { n: 19, text: 'ERROR' },
  warning: { n: 13, text: 'WARN' },
  info: { n: 9, text: 'INFO' },
};

/** OTLP/HTTP JSON logs (opentelemetry-proto `ExportLogsServiceRequest`): one log record per line. */
export function otlpBody(lines: SinkLine[]): string {
  const str = (stringValue: string) => ({ stringValue });
  return JSON.stringify({
    resourceLogs: [
      {
        resource: { attributes: [{ key: 'service.name', value: str('bulwark') }] },
        scopeLogs: [
          {
            scope: { name: 'bulwark.audit' },
            logRecords: lines.map((line) => ({
              timeUnixNano: `${BigInt(line.ts) * 1_000_000n}`,
              severityNumber: SEVERITY[line.severity].n,
              severityText: SEVERITY[line.severity].text,
              eventName: line.name,
              body: str(line.text.replace(/\n$/, '')),
              attributes: [
                { key: 'bulwark.audit.kind', value: str(line.kind) },
                { key: 'bulwark.audit.chain', value: str(line.chain) },
                { key: 'bulwark.audit.seq', value: { intValue: String(line.seq) } },
                { key: 'bulwark.audit.id', value: str(line.id) },
              ],
            })),
          },
        ],
      },
    ],
  });
}

/** Headers (an API key of the collector, say) are part of the sealed configuration, never returned. */
export function createOtlpTransport(options: {
  url: string;
  headers: Record<string, string>;
  fetch: GuardedFetch;
}): SinkTransport {
  return {
    async send(lines: SinkLine[]): Promise<void> {
      const response = await options.fetch(options.url, {
        method: 'POST',
        headers: { ...options.headers, 'content-type': 'application/json' },
        body: otlpBody(lines),
        redirect: 'manual',
        timeoutMs: TIMEOUT_MS,
        // Judged by the status alone (a partial-success body is advisory): see the webhook sink.
        discardBody: true,
      });
      if (response.status < 200 || response.status > 299)
        throw new Error(`OTLP collector answered ${response.status}`);
    },
  };
}
