import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
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
  verifies(service: BackingService): boolean;
}

export function createBackingTls(settings: BackingTlsSettings): BackingTls {
  const readCa = (file: string | undefined) => (file ? readFileSync(file, 'utf8') : undefined);
  return {
    caPem: (_service, caFile) => readCa(caFile ?? settings.caFile),
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
): { connectionString: string; ssl: ConnectionOptions | false } {
  const parsed = new URL(url);
  const mode =
    parsed.searchParams.get('sslmode') ?? (parsed.searchParams.get('ssl') === 'true' ? 'require' : null);
  const rootCert = parsed.searchParams.get('sslrootcert') ?? undefined;
  for (const name of ['sslmode', 'ssl', 'sslrootcert', 'sslcert', 'sslkey', 'uselibpqcompat'])
    parsed.searchParams.delete(name);
  const connectionString = parsed.toString();
  if (mode === null || mode === 'disable') return { connectionString, ssl: false };
  if (mode === 'no-verify' || mode === 'allow')
    throw new Error(
      `sslmode=${mode} does not verify the server; use sslmode=verify-full and, only if you must, BULWARK_TLS_INSECURE_SKIP_VERIFY=postgres`,
    );
  // pg sets the server name (SNI and the host name checked) from the host itself.
  return { connectionString, ssl: tls.options('postgres', rootCert) };
}
