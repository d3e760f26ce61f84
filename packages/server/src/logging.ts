import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * Central log redaction (PLAT-5). Credentials reach the server in headers, cookies, bodies and query
 * strings; every one of those paths is censored here, once, for every log line. Request bodies are
 * never logged at all. A test drives real requests carrying each kind of secret and reads the output.
 */
export const REDACTED = '[redacted]';

const SECRET_FIELDS = [
  'password',
  'newPassword',
  'currentPassword',
  'token',
  'secret',
  'apiKey',
  'privateKey',
  'masterKey',
  'totpCode',
  'recoveryCode',
  // MFA answers: the recovery codes, and the otpauth URI that carries the seed.
  'recoveryCodes',
  'uri',
];

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-csrf-token"]',
  'req.headers["x-api-key"]',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  ...SECRET_FIELDS.flatMap((field) => [field, `*.${field}`, `*.*.${field}`]),
];

/** Query parameters whose values are never written to a log, whatever route they arrive on. */
const SECRET_QUERY_PARAMS =
  /^(token|code|secret|password|key|api_?key|access_token|id_token|state|ticket|signature|sig)$/i;

/** The URL as it may be logged: secret-looking query parameter values replaced. */
export function redactUrl(url: string): string {
  const queryStart = url.indexOf('?');
  if (queryStart === -1) return url;
  const params = new URLSearchParams(url.slice(queryStart + 1));
  for (const key of [...params.keys()]) {
    if (SECRET_QUERY_PARAMS.test(key)) params.set(key, REDACTED);
  }
  return `${url.slice(0, queryStart)}?${params.toString()}`;
}

let stampedAt = Number.NaN;
let stamp = '';

/**
 * pino's `isoTime`, formatted once per millisecond: formatting a date costs more than the rest of an
 * access line, and a busy server writes several lines in the same millisecond (bench/api-read).
 */
export function isoTimestamp(): string {
  const now = Date.now();
  if (now !== stampedAt) {
    stampedAt = now;
    stamp = `,"time":"${new Date(now).toISOString()}"`;
  }
  return stamp;
}

export function createLogger(options: {
  level: string;
  destination?: DestinationStream;
  name?: string;
}): Logger {
  return pino(
    {
      level: options.level,
      name: options.name ?? 'bulwark',
      base: { pid: process.pid },
      timestamp: isoTimestamp,
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      serializers: {
        err: pino.stdSerializers.err,
        // Fastify hands its request here: log what identifies it, never its headers or body.
        // Anything else logged under `req` is reduced the same way, so its headers never appear.
        req: (req: { method?: unknown; url?: unknown; ip?: unknown }) => ({
          method: req.method,
          url: typeof req.url === 'string' ? redactUrl(req.url) : undefined,
          ip: req.ip,
        }),
        res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
      },
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
