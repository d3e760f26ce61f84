import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';

/**
 * TLS to the services Bulwark depends on (NET-4): PostgreSQL, Redis, LDAP and SMTP. Their
 * certificates are always verified — chain and host name — against `BULWARK_TLS_CA_FILE` when it is
 * set (that bundle only: a private CA then pins the service, and a certificate from any other CA,
 * public or not, is a man in the middle), against the system's roots otherwise. Verification is off
 * only for the services named in `BULWARK_TLS_INSECURE_SKIP_VERIFY`, and every start says so at warn.
 */

export const BACKING_SERVICES = ['postgres', 'redis', 'ldap', 'smtp'] as const;
export type BackingService = (typeof BACKING_SERVICES)[number];

export interface BackingTlsSettings {
  /** PEM bundle of the CAs trusted for backing services; the system's roots when unset. */
  caFile: string | undefined;
  /** Services whose certificates are not verified (an explicit, logged choice). */
  insecureSkipVerify: BackingService[];
}

export interface BackingTls {
  /** Node TLS options for a connection to `service` at `host` (read the CA file now: it may rotate). */
  options(service: BackingService, caFile?: string): ConnectionOptions;
  /** The PEM text the connection trusts, or undefined for the system's roots. */
  caPem(service: BackingService, caFile?: string): string | undefined;
  /** The CA file the connection trusts (`caFile`, else the configured one), or undefined for the system's roots. */
  caFileOf(service: BackingService, caFile?: string): string | undefined;
  verifies(service: BackingService): boolean;
}

export function createBackingTls(settings: BackingTlsSettings): BackingTls {
  const readCa = (file: string | undefined) => (file ? readFileSync(file, 'utf8') : undefined);
  return {
    caPem: (_service, caFile) => readCa(caFile ?? settings.caFile),
    caFileOf: (_service, caFile) => caFile ?? settings.caFile,
    verifies: (service) => !settings.insecureSkipVerify.includes(service),
    options(service, caFile) {
      const ca = readCa(caFile ?? settings.caFile);
      return {
        ...(ca ? { ca } : {}),
        rejectUnauthorized: !settings.insecureSkipVerify.includes(service),
        minVersion: 'TLSv1.2',
      };
    },
  };
}

/**
 * Said at every start, once per service: a connection whose certificate is not checked can be read
 * and changed by anyone on the path, and an operator should not forget having allowed it.
 */
export function warnAboutUnverifiedTls(logger: Logger, settings: BackingTlsSettings): void {
  for (const service of settings.insecureSkipVerify)
    logger.warn(
      { service, setting: 'BULWARK_TLS_INSECURE_SKIP_VERIFY' },
      `TLS certificate verification is OFF for ${service}: anyone on the network path can impersonate it`,
    );
}

/**
 * The same policy in libpq's words, for pg_dump and pg_restore (backups): `verify-full` against
 * `sslrootcert` wherever the server itself verifies (`rootCertFile` undefined: the roots Node trusts,
 * which the caller writes to a file, since libpq 15 has no `sslrootcert=system`); `require` only when
 * verification is explicitly off for postgres; `disable` where the server uses no TLS. Never libpq's
 * own `require` or `prefer` for a URL that asks for TLS: libpq would encrypt without verifying, or
 * fall back to plain text.
 */
export type LibpqTls =
  | { sslmode: 'disable' | 'require' }
  | { sslmode: 'verify-full'; rootCertFile: string | undefined };

/**
 * The TLS options of a PostgreSQL URL, with the URL's own ssl parameters taken out. `pg` reads
 * `sslmode` and `sslrootcert` from the URL and lets them override the options given beside it, and
 * treats `require` differently across versions; here every mode that asks for TLS (`require`,
 * `verify-ca`, `verify-full`, `prefer`) gets full verification (chain and host name) against the
 * configured CA, `disable` or no sslmode gets none, and `no-verify` is refused in favour of the one
 * explicit setting.
 */
export function postgresTls(
  url: string,
  tls: BackingTls,
): { connectionString: string; ssl: ConnectionOptions | false; libpq: LibpqTls } {
  const parsed = new URL(url);
  const mode =
    parsed.searchParams.get('sslmode') ?? (parsed.searchParams.get('ssl') === 'true' ? 'require' : null);
  const rootCert = parsed.searchParams.get('sslrootcert') ?? undefined;
  for (const name of ['sslmode', 'ssl', 'sslrootcert', 'sslcert', 'sslkey', 'uselibpqcompat'])
    parsed.searchParams.delete(name);
  const connectionString = parsed.toString();
  if (mode === null || mode === 'disable')
    return { connectionString, ssl: false, libpq: { sslmode: 'disable' } };
  if (mode === 'no-verify' || mode === 'allow')
    throw new Error(
      `sslmode=${mode} does not verify the server; use sslmode=verify-full and, only if you must, BULWARK_TLS_INSECURE_SKIP_VERIFY=postgres`,
    );
  // pg sets the server name (SNI and the host name checked) from the host itself.
  return {
    connectionString,
    ssl: tls.options('postgres', rootCert),
    libpq: tls.verifies('postgres')
      ? { sslmode: 'verify-full', rootCertFile: tls.caFileOf('postgres', rootCert) }
      : { sslmode: 'require' },
  };
}

const isLoopback = (host: string): boolean => {
  const bare = host.replace(/^\[|\]$/g, '');
  if (bare === 'localhost' || bare.endsWith('.localhost')) return true;
  return ipaddr.isValid(bare) && ipaddr.process(bare).range() === 'loopback';
};

/**
 * The backing services this configuration reaches in plain text over the network: PostgreSQL
 * without an sslmode that asks for TLS, `redis://`, to a host that is not loopback (a Unix socket
 * or 127.0.0.1 never leaves the host). Passwords, hashes and sealed keys cross that path readable.
 */
export function plaintextBackingServices(urls: {
  databaseUrl?: string | undefined;
  redisUrl?: string | undefined;
}): Array<{ service: BackingService; host: string }> {
  const found: Array<{ service: BackingService; host: string }> = [];
  // Only a warning: a URL this cannot read (several hosts, say) is left to the connection to judge.
  const parse = (url: string | undefined) => {
    try {
      return url ? new URL(url) : undefined;
    } catch {
      return undefined;
    }
  };
  const database = parse(urls.databaseUrl);
  if (database) {
    const host = database.searchParams.get('host') ?? database.hostname;
    const mode =
      database.searchParams.get('sslmode') ??
      (database.searchParams.get('ssl') === 'true' ? 'require' : null);
    // An empty host or a path is a Unix socket.
    if ((mode === null || mode === 'disable') && host !== '' && !host.startsWith('/') && !isLoopback(host))
      found.push({ service: 'postgres', host });
  }
  const redis = parse(urls.redisUrl);
  if (redis?.protocol === 'redis:' && redis.hostname !== '' && !isLoopback(redis.hostname))
    found.push({ service: 'redis', host: redis.hostname });
  return found;
}

/** Said at every start, like unverified TLS: plain text on the network is easy to forget once allowed. */
export function warnAboutPlaintextBackingServices(
  logger: Logger,
  urls: { databaseUrl?: string | undefined; redisUrl?: string | undefined },
): void {
  for (const { service, host } of plaintextBackingServices(urls))
    logger.warn(
      { service, host, setting: service === 'postgres' ? 'BULWARK_DATABASE_URL' : 'BULWARK_REDIS_URL' },
      `the connection to ${service} at ${host} is NOT encrypted: anyone on the network path can read and change it (${service === 'postgres' ? 'add sslmode=verify-full' : 'use rediss://'})`,
    );
}
