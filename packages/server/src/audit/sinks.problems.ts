import { OutboundError } from '../net/outbound.js';

/**
 * What a failed delivery or test says to the API (the test route's `problem`, the stored
 * `last_error`, the audit event): a fixed reason code and sentence, never Node's own message. Those
 * carry the resolved address and port (`connect ECONNREFUSED 10.0.0.5:6514`), which would turn a sink
 * into a port scanner of the server's network; the full error goes to the server log only.
 */
const BY_CODE: Record<string, string> = {
  ECONNREFUSED: 'connection_refused: the receiver refused the connection',
  ECONNRESET: 'connection_reset: the connection was closed by the other side',
  EPIPE: 'connection_reset: the connection was closed by the other side',
  UND_ERR_SOCKET: 'connection_reset: the connection was closed by the other side',
  ETIMEDOUT: 'timeout: the receiver did not answer in time',
  UND_ERR_CONNECT_TIMEOUT: 'timeout: the receiver did not answer in time',
  UND_ERR_HEADERS_TIMEOUT: 'timeout: the receiver did not answer in time',
  EHOSTUNREACH: 'unreachable: no route to the receiver',
  ENETUNREACH: 'unreachable: no route to the receiver',
  ENOTFOUND: 'dns_failed: the receiver’s name did not resolve',
  EAI_AGAIN: 'dns_failed: the receiver’s name did not resolve',
  ELOOP: 'file_refused: the sink file is a symbolic link',
  EACCES: 'file_refused: the sink file cannot be written',
  EPERM: 'file_refused: the sink file cannot be written',
  ENOENT: 'file_refused: the sink directory is missing',
  ENOSPC: 'file_refused: no space left for the sink file',
};
const TLS = 'tls_failed: the receiver’s certificate or TLS handshake was refused';

function codeOf(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    if (typeof code === 'string') return code;
    current = (current as Error & { cause?: unknown }).cause;
  }
  return undefined;
}

export function sinkProblem(error: unknown): string {
  // The guard's messages name the host as configured, never an address (outbound.ts).
  if (error instanceof OutboundError) return `${error.reason}: ${error.message}`;
  const code = codeOf(error);
  if (code !== undefined) {
    if (BY_CODE[code]) return BY_CODE[code];
    if (/^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|HOSTNAME_MISMATCH)/.test(code)) return TLS;
    return `delivery_failed: ${code.replace(/[^A-Z0-9_]/g, '').slice(0, 40)}`;
  }
  // Our transports' own errors (a plain Error, no code: "webhook receiver answered 503") say nothing
  // of the network; anything else (a TypeError from a library) is not trusted to.
  if (error instanceof Error && Object.getPrototypeOf(error) === Error.prototype)
    return error.message.slice(0, 500);
  return 'delivery_failed: see the server log';
}
