import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import tls from 'node:tls';
import type { SinkLine, SinkTransport } from './sinks.lines.js';

/** RFC 5424 §6.2.1: facility 13 is "log audit". */
export const DEFAULT_SYSLOG_FACILITY = 13;
/** RFC 5612's example enterprise number, for the structured data id until Bulwark has its own. */
const SD_ID = 'bulwark@32473';
const SEVERITY = { critical: 2, warning: 4, info: 6 } as const;
const TIMEOUT_MS = 15_000;

export interface SyslogConfig {
  host: string;
  port: number;
  /** PEM of the CA that signed the receiver's certificate: verified, never skipped. */
  caPem: string;
  /** The name the certificate must carry; the host by default. */
  serverName?: string | undefined;
  facility: number;
  /** HOSTNAME field; this machine's name by default. */
  appHostname?: string | undefined;
}

/**
 * Resolves the receiver's host to the one address to connect to, after the outbound policy (NET-3)
 * approved it: the same rule as webhooks, so an org admin cannot use a syslog sink to reach the
 * server's loopback or private network unless the operator allowed that destination.
 */
export type SyslogResolver = (host: string) => Promise<string>;

/** PRINTUSASCII without space, at most `max` characters (RFC 5424 §6). */
const printable = (value: string, max: number) => value.replace(/[^\x21-\x7e]/g, '_').slice(0, max) || '-';
const sdValue = (value: string) => value.replace(/[\\"\]]/g, (c) => `\\${c}`);

/**
 * One RFC 5424 message per line: the NDJSON line as MSG (UTF-8, so after a BOM), the event's action as
 * MSGID, its chain and sequence number as structured data, severity from the line (critical events
 * are `crit`).
 */
export function syslogMessage(
  line: SinkLine,
  config: Pick<SyslogConfig, 'facility' | 'appHostname'>,
): string {
  const pri = config.facility * 8 + SEVERITY[line.severity];
  const host = printable(config.appHostname ?? osHostname(), 255);
  const sd = `[${SD_ID} chain="${sdValue(line.chain)}" seq="${line.seq}" kind="${line.kind}" id="${sdValue(line.id)}"]`;
  return `<${pri}>1 ${new Date(line.ts).toISOString()} ${host} bulwark - ${printable(line.name, 32)} ${sd} \uFEFF${line.text.replace(/\n$/, '')}`;
}

/** RFC 6587 §3.4.1 octet counting: `<length> <message>`, so a message may hold any byte, newlines too. */
export function octetCounted(message: string): Buffer {
  const body = Buffer.from(message, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `), body]);
}

/**
 * Syslog over TLS (RFC 5425). One connection per batch, closed by us after the batch: the receiver
 * closing its side in answer means it read everything we sent, which is the only acknowledgement
 * syslog has. A batch whose connection fails before that is sent again (at least once).
 */
export function createSyslogTransport(config: SyslogConfig, resolveHost: SyslogResolver): SinkTransport {
  return {
    async send(lines: SinkLine[]): Promise<void> {
      const payload = Buffer.concat(lines.map((line) => octetCounted(syslogMessage(line, config))));
      const address = await resolveHost(config.host);
      return new Promise<void>((resolve, reject) => {
        const servername = config.serverName ?? (isIP(config.host) ? undefined : config.host);
        const socket = tls.connect({
          host: address,
          port: config.port,
          ca: config.caPem,
          ...(servername ? { servername } : {}),
          rejectUnauthorized: true,
          minVersion: 'TLSv1.2',
        });
        let settled = false;
        const finish = (error?: Error) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          socket.destroy();
          if (error) reject(error);
          else resolve();
        };
        const timer = setTimeout(
          () => finish(new Error('syslog receiver did not answer in time')),
          TIMEOUT_MS,
        );
        let sent = false;
        socket.once('secureConnect', () => {
          sent = true;
          socket.end(payload);
        });
        socket.on('data', () => {});
        socket.once('error', (error) => finish(error));
        // The receiver ended its side after reading ours to the end.
        socket.once('end', () =>
          finish(sent ? undefined : new Error('syslog receiver closed the connection')),
        );
        socket.once('close', () =>
          finish(new Error('syslog connection closed before the receiver took the batch')),
        );
      });
    },
  };
}
