import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';

/**
 * Every setting Bulwark reads, in one table: its environment variable, its config-file key, its
 * default, whether it is a secret, and how it is parsed. `loadConfig` validates all of them at
 * start, `bulwark config check` prints them, and a test holds docs/configuration.md to this table.
 *
 * Precedence: built-in default < config file (`BULWARK_CONFIG_FILE`, YAML or JSON) < environment.
 */

export type SettingSource = 'default' | 'file' | 'env';

interface SettingSpec<T> {
  env: string;
  doc: string;
  /** The default as an operator reads it in the docs; `undefined` means "not set". */
  defaultText?: string;
  secret?: boolean;
  /** Turns a raw value (a string from the environment, anything from the file) into T or throws a reason. */
  parse: (raw: unknown) => T;
}

class SettingError extends Error {}

function fail(reason: string): never {
  throw new SettingError(reason);
}

function text(raw: unknown): string {
  if (typeof raw === 'string') return raw.trim();
  if (typeof raw === 'number' || typeof raw === 'boolean') return String(raw);
  return fail('must be a string');
}

const integer =
  (min: number, max: number) =>
  (raw: unknown): number => {
    const value = typeof raw === 'number' ? raw : Number(text(raw));
    if (!Number.isInteger(value) || value < min || value > max) {
      fail(`must be an integer from ${min} to ${max}`);
    }
    return value;
  };

const oneOf =
  <const T extends string>(...values: T[]) =>
  (raw: unknown): T => {
    const value = text(raw);
    if (!(values as string[]).includes(value)) fail(`must be one of ${values.join(', ')}`);
    return value as T;
  };

const nonEmpty = (raw: unknown): string => {
  const value = text(raw);
  if (value === '') fail('must not be empty');
  return value;
};

function list(raw: unknown): string[] {
  if (Array.isArray(raw)) return raw.map(text).filter((item) => item !== '');
  return text(raw)
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

function isAddressOrCidr(value: string): boolean {
  const [address, prefix, ...rest] = value.split('/');
  const family = isIP(address ?? '');
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  const bits = Number(prefix);
  return /^\d+$/.test(prefix) && bits <= (family === 4 ? 32 : 128);
}

/** Secrets that look typed by hand are refused: too short or too few distinct characters to be random. */
function looksRandom(value: string, minLength: number, minDistinct: number): boolean {
  return value.length >= minLength && new Set(value).size >= minDistinct;
}

function masterKey(raw: unknown): Buffer {
  const value = nonEmpty(raw);
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(value)) fail('must be 32 bytes encoded in base64');
  const key = Buffer.from(value, value.includes('-') || value.includes('_') ? 'base64url' : 'base64');
  if (key.length !== 32)
    fail(`must decode to exactly 32 bytes (got ${key.length}); generate one with: openssl rand -base64 32`);
  // 32 random bytes hold ~28 distinct values; under 16 means a pattern, not a key.
  if (new Set(key).size < 16)
    fail('is not random enough (a repeated or patterned value); generate one with: openssl rand -base64 32');
  return key;
}

function metricsToken(raw: unknown): string {
  const value = nonEmpty(raw);
  if (!looksRandom(value, 32, 12))
    fail('must be at least 32 random characters; generate one with: openssl rand -hex 32');
  return value;
}

function databaseUrl(raw: unknown): string {
  const value = nonEmpty(raw);
  if (value.startsWith('sqlite:')) {
    if (value.slice('sqlite:'.length) === '')
      fail('sqlite: needs a file path, e.g. sqlite:./data/bulwark.db');
    return value;
  }
  if (/^postgres(ql)?:\/\//.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return fail('is not a valid postgres:// URL');
    }
    // NET-4: skipping certificate checks is the one explicit setting's job, said at every start.
    const mode = url.searchParams.get('sslmode');
    if (mode === 'no-verify' || mode === 'allow')
      fail(
        `sslmode=${mode} does not verify the server's certificate; use sslmode=verify-full (and BULWARK_TLS_INSECURE_SKIP_VERIFY=postgres only if you must)`,
      );
    return value;
  }
  return fail('must start with sqlite: or postgres://');
}

/** A Redis key prefix: what one deployment's keys and channels start with. */
function redisKeyPrefix(raw: unknown): string {
  const value = nonEmpty(raw);
  if (!/^[A-Za-z0-9_.-]{1,64}(:[A-Za-z0-9_.-]{1,64}){0,3}$/.test(value))
    fail('must be letters, digits, _ . - in up to four parts joined by ":", e.g. bulwark:prod');
  return value;
}

function redisUrl(raw: unknown): string {
  const value = nonEmpty(raw);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fail('is not a valid URL');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') fail('must start with redis:// or rediss://');
  return value;
}

/**
 * The origin people open the console at. Passkeys are bound to its host name (their relying party
 * id), which cannot be an IP address; plain HTTP only for localhost, which browsers treat as secure.
 */
function publicUrl(raw: unknown): string {
  const value = nonEmpty(raw);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fail('is not a valid URL');
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && url.hostname === 'localhost'))
    fail('must start with https:// (http:// only for localhost)');
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '')
    fail('must be an origin only, like https://bulwark.example.com');
  if (isIP(url.hostname.replace(/^\[|\]$/g, '')) !== 0)
    fail('must use a host name, not an IP address: passkeys are bound to a domain');
  return url.origin;
}

/**
 * The audiences the issuer mints for (SEC-4). An agent declares the audience its action wants; only
 * these are honoured, so a rogue agent cannot obtain a token for any relying party it likes, and an
 * `org-slug=` entry keeps one team's audience (its own GCP pool, say) away from other organizations.
 */
export interface WorkloadAudienceRule {
  org: string | undefined;
  audience: string;
}

function workloadAudiences(raw: unknown): WorkloadAudienceRule[] {
  return list(raw).map((entry) => {
    const scoped = /^([a-z0-9][a-z0-9-]{0,62})=(.+)$/.exec(entry);
    const audience = scoped ? scoped[2]! : entry;
    if (!/^[\x21-\x7e]{1,256}$/.test(audience))
      fail(`"${entry}": an audience is 1 to 256 printable ASCII characters without spaces`);
    return { org: scoped?.[1], audience };
  });
}

const BACKING_SERVICES = ['postgres', 'redis', 'ldap', 'smtp'] as const;

function backingServices(raw: unknown): Array<(typeof BACKING_SERVICES)[number]> {
  const entries = list(raw);
  const bad = entries.find((entry) => !(BACKING_SERVICES as readonly string[]).includes(entry));
  if (bad !== undefined) fail(`"${bad}" is not one of ${BACKING_SERVICES.join(', ')}`);
  return [...new Set(entries)] as Array<(typeof BACKING_SERVICES)[number]>;
}

function trustedProxies(raw: unknown): string[] {
  const entries = list(raw);
  const bad = entries.find((entry) => !isAddressOrCidr(entry));
  if (bad !== undefined) fail(`"${bad}" is not an IP address or CIDR range`);
  // A /0 range trusts every client's X-Forwarded-For: any client could forge its audited address and
  // dodge per-address rate limits.
  const everyone = entries.find((entry) => entry.endsWith('/0'));
  if (everyone !== undefined) fail(`"${everyone}" would trust every client; list the proxies' own addresses`);
  return entries;
}

// An outbound allow entry: host name, `.domain` / `*.domain`, IP or CIDR (net/outbound.ts matches them).
function outboundEntries(raw: unknown): string[] {
  const entries = list(raw).map((entry) => entry.toLowerCase());
  const hostPattern = /^(\*\.|\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
  const bad = entries.find((entry) => !isAddressOrCidr(entry) && !hostPattern.test(entry));
  if (bad !== undefined) fail(`"${bad}" is not a host name, .domain, IP address or CIDR`);
  return entries;
}

function breachedPasswordsUrl(raw: unknown): string {
  const value = nonEmpty(raw);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    fail('must be an http(s) URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') fail('must be an http(s) URL');
  if (url.username || url.password || url.search || url.hash)
    fail('must not carry credentials, a query or a fragment');
  return url.href.endsWith('/') ? url.href : `${url.href}/`;
}

const optional =
  <T>(parse: (raw: unknown) => T) =>
  (raw: unknown): T | undefined =>
    raw === undefined || raw === null || (typeof raw === 'string' && raw.trim() === '')
      ? undefined
      : parse(raw);

export const settings = {
  configFile: {
    env: 'BULWARK_CONFIG_FILE',
    doc: 'Optional YAML or JSON file holding any of these settings by their file key; the environment overrides it.',
    parse: optional(nonEmpty),
  },
  dataDir: {
    env: 'BULWARK_DATA_DIR',
    doc: 'Directory for the SQLite database and the master key file; created with mode 0700.',
    defaultText: './data',
    parse: nonEmpty,
  },
  databaseUrl: {
    env: 'BULWARK_DATABASE_URL',
    doc: '`sqlite:<file>` or `postgres://user:pass@host:5432/db`. The password is masked in `config check`.',
    defaultText: 'sqlite:<dataDir>/bulwark.db',
    secret: true,
    parse: optional(databaseUrl),
  },
  databaseOwnerUrl: {
    env: 'BULWARK_DATABASE_OWNER_URL',
    doc: 'PostgreSQL only: a `postgres://` URL of the role that owns the schema. Migrations run as it, and it grants the role of `BULWARK_DATABASE_URL` row access only, so the server itself can neither change the schema nor turn row-level security off. Unset: one role does both.',
    secret: true,
    parse: optional(databaseUrl),
  },
  databasePoolMax: {
    env: 'BULWARK_DATABASE_POOL_MAX',
    doc: 'Maximum PostgreSQL connections per instance.',
    defaultText: '10',
    parse: integer(1, 200),
  },
  sqliteBusyTimeoutMs: {
    env: 'BULWARK_SQLITE_BUSY_TIMEOUT_MS',
    doc: 'How long a SQLite writer waits for another process holding the write lock (for example the CLI).',
    defaultText: '5000',
    parse: integer(0, 60_000),
  },
  redisUrl: {
    env: 'BULWARK_REDIS_URL',
    doc: '`redis://` or `rediss://` URL. When set, `/readyz` requires Redis to answer. The password is masked.',
    secret: true,
    parse: optional(redisUrl),
  },
  redisKeyPrefix: {
    env: 'BULWARK_REDIS_KEY_PREFIX',
    doc: 'What every Redis key and channel of this deployment starts with (`<prefix>:login`, `<prefix>:rl`, `<prefix>:cluster`). The instances of one deployment share it; deployments sharing one Redis each need their own.',
    defaultText: 'bulwark',
    parse: redisKeyPrefix,
  },
  host: {
    env: 'BULWARK_HOST',
    doc: 'Address to bind. Anything but loopback requires TLS or `BULWARK_TRUSTED_PROXIES`.',
    defaultText: '127.0.0.1',
    parse: nonEmpty,
  },
  port: {
    env: 'BULWARK_PORT',
    doc: 'TCP port for the API and console; 0 picks a free port (printed at start).',
    defaultText: '8080',
    parse: integer(0, 65_535),
  },
  publicUrl: {
    env: 'BULWARK_PUBLIC_URL',
    doc: 'The address people open the console at, like `https://bulwark.example.com`. Passkeys are bound to its host name; unset, they work only at `http://localhost`.',
    parse: optional(publicUrl),
  },
  workloadIdentityAudiences: {
    env: 'BULWARK_WORKLOAD_IDENTITY_AUDIENCES',
    doc: 'Comma-separated audiences workload-identity JWTs may be minted for ([workload-identity.md](workload-identity.md)): `audience` for every organization, `org-slug=audience` for one. Needs `BULWARK_PUBLIC_URL` (the issuer).',
    defaultText: '(none)',
    parse: workloadAudiences,
  },
  tlsCertFile: {
    env: 'BULWARK_TLS_CERT_FILE',
    doc: 'PEM certificate chain; with `BULWARK_TLS_KEY_FILE` the server terminates TLS itself and sends HSTS.',
    parse: optional(nonEmpty),
  },
  tlsKeyFile: {
    env: 'BULWARK_TLS_KEY_FILE',
    doc: 'PEM private key for `BULWARK_TLS_CERT_FILE`; must not be readable by group or others.',
    parse: optional(nonEmpty),
  },
  tlsMinVersion: {
    env: 'BULWARK_TLS_MIN_VERSION',
    doc: 'Oldest TLS version accepted: `TLSv1.3` or `TLSv1.2`.',
    defaultText: 'TLSv1.3',
    parse: oneOf('TLSv1.3', 'TLSv1.2'),
  },
  backingTlsCaFile: {
    env: 'BULWARK_BACKING_TLS_CA_FILE',
    doc: "PEM bundle of the CAs that sign the certificates of PostgreSQL, Redis, LDAP and SMTP (NET-4); when set, only these are trusted for them, otherwise the system's roots.",
    parse: optional(nonEmpty),
  },
  backingTlsInsecureSkipVerify: {
    env: 'BULWARK_TLS_INSECURE_SKIP_VERIFY',
    doc: 'Comma-separated backing services (`postgres`, `redis`, `ldap`, `smtp`) whose TLS certificates are NOT verified; logged at warn on every start. Never in production.',
    defaultText: '(none)',
    parse: backingServices,
  },
  smtpHost: {
    env: 'BULWARK_SMTP_HOST',
    doc: 'SMTP server for email notifications ([email.md](email.md)); unset, no email is sent (the console inbox works either way).',
    parse: optional(nonEmpty),
  },
  smtpPort: {
    env: 'BULWARK_SMTP_PORT',
    doc: 'SMTP port: 587 for STARTTLS, 465 for implicit TLS.',
    defaultText: '587',
    parse: integer(1, 65_535),
  },
  smtpTls: {
    env: 'BULWARK_SMTP_TLS',
    doc: '`starttls` (required: a server that does not offer it is refused) or `implicit` (TLS from the first byte). There is no plain-text mode.',
    defaultText: 'starttls',
    parse: oneOf('starttls', 'implicit'),
  },
  smtpCaFile: {
    env: 'BULWARK_SMTP_CA_FILE',
    doc: "PEM bundle trusted for the SMTP server's certificate instead of `BULWARK_BACKING_TLS_CA_FILE` (a public relay with a private database, say).",
    parse: optional(nonEmpty),
  },
  smtpFrom: {
    env: 'BULWARK_SMTP_FROM',
    doc: 'The From address of notification emails, like `Bulwark <bulwark@example.com>`; required with `BULWARK_SMTP_HOST`.',
    parse: optional(nonEmpty),
  },
  smtpUser: {
    env: 'BULWARK_SMTP_USER',
    doc: 'SMTP user name, when the server asks for authentication.',
    parse: optional(nonEmpty),
  },
  smtpPassword: {
    env: 'BULWARK_SMTP_PASSWORD',
    doc: 'SMTP password (prefer `BULWARK_SMTP_PASSWORD_FILE`). Never logged.',
    secret: true,
    parse: optional(nonEmpty),
  },
  smtpPasswordFile: {
    env: 'BULWARK_SMTP_PASSWORD_FILE',
    doc: 'File holding the SMTP password (trailing newline ignored); must not be readable by group or others.',
    parse: optional(nonEmpty),
  },
  smtpMaxAttempts: {
    env: 'BULWARK_SMTP_MAX_ATTEMPTS',
    doc: 'Attempts to send one email (with backoff from 30 s up to 1 h between them) before it is marked failed and counted in `bulwark_email_failed_total`.',
    defaultText: '20',
    parse: integer(1, 1000),
  },
  smtpPollSeconds: {
    env: 'BULWARK_SMTP_POLL_SECONDS',
    doc: 'How often the email outbox is checked for messages to send.',
    defaultText: '5',
    parse: integer(1, 3600),
  },
  invitationEmailsPerOrgPerDay: {
    env: 'BULWARK_INVITATION_EMAILS_PER_ORG_PER_DAY',
    doc: 'Invitation emails one organization may send in 24 hours (revoked invitations count); more are refused with 429 `invitation_email_limit`.',
    defaultText: '100',
    parse: integer(1, 100_000),
  },
  invitationRecipientCooldownMinutes: {
    env: 'BULWARK_INVITATION_RECIPIENT_COOLDOWN_MINUTES',
    doc: 'Minutes before an organization may email another invitation to the same address (revoked ones count); sooner is 429 `invitation_recently_sent`.',
    defaultText: '60',
    parse: integer(0, 10_080),
  },
  trustedProxies: {
    env: 'BULWARK_TRUSTED_PROXIES',
    doc: 'Comma-separated IPs or CIDRs of reverse proxies whose `X-Forwarded-*` headers are believed; empty trusts none.',
    defaultText: '(none)',
    parse: trustedProxies,
  },
  bodyLimitBytes: {
    env: 'BULWARK_HTTP_BODY_LIMIT_BYTES',
    doc: 'Largest request body accepted; larger ones get 413 `payload_too_large`.',
    defaultText: '1048576',
    parse: integer(1024, 64 * 1024 * 1024),
  },
  masterKey: {
    env: 'BULWARK_MASTER_KEY',
    doc: 'Master key (32 random bytes, base64). When unset, the key file below is used, created on first start.',
    secret: true,
    parse: optional(masterKey),
  },
  masterKeyFile: {
    env: 'BULWARK_MASTER_KEY_FILE',
    doc: 'Master key file, created with mode 0600; start is refused if group or others can read it.',
    defaultText: '<dataDir>/master.key',
    parse: optional(nonEmpty),
  },
  sessionIdleMinutes: {
    env: 'BULWARK_SESSION_IDLE_MINUTES',
    doc: 'A session unused this long ends. Above 30 (NIST SP 800-63B AAL2) is allowed and logged at start as a relaxation.',
    defaultText: '30',
    parse: integer(1, 24 * 60),
  },
  sessionAbsoluteHours: {
    env: 'BULWARK_SESSION_ABSOLUTE_HOURS',
    doc: 'A session ends this long after sign-in, however active. Above 12 (AAL2) is allowed and logged as a relaxation.',
    defaultText: '12',
    parse: integer(1, 30 * 24),
  },
  maxSessionsPerUser: {
    env: 'BULWARK_MAX_SESSIONS_PER_USER',
    doc: 'Live sessions one user may hold at once (OWASP ASVS 7.1.2); a sign-in beyond it ends the oldest sessions of that user.',
    defaultText: '10',
    parse: integer(1, 1000),
  },
  stepUpMinutes: {
    env: 'BULWARK_STEP_UP_MINUTES',
    doc: 'Privileged operations (role changes, session revocation, security settings) need a sign-in or re-authentication this recent.',
    defaultText: '15',
    parse: integer(1, 60),
  },
  loginAccountFailures: {
    env: 'BULWARK_LOGIN_ACCOUNT_FAILURES',
    doc: 'Failed sign-ins for one email within the login window before that email is locked until the window ends.',
    defaultText: '10',
    parse: integer(3, 1000),
  },
  loginIpFailures: {
    env: 'BULWARK_LOGIN_IP_FAILURES',
    doc: 'Failed sign-ins from one client address within the login window before that address is locked.',
    defaultText: '50',
    parse: integer(3, 100_000),
  },
  loginWindowMinutes: {
    env: 'BULWARK_LOGIN_WINDOW_MINUTES',
    doc: 'The window the sign-in failure limits count over. The limits live in Redis when BULWARK_REDIS_URL is set (shared by every instance; sign-in answers 503 while Redis is down), in memory otherwise.',
    defaultText: '15',
    parse: integer(1, 24 * 60),
  },
  agentHeartbeatSeconds: {
    env: 'BULWARK_AGENT_HEARTBEAT_SECONDS',
    doc: 'How often connected agents send a heartbeat; an agent that misses three is closed and shown offline.',
    defaultText: '15',
    parse: integer(1, 300),
  },
  commandDeliveryTimeoutSeconds: {
    env: 'BULWARK_COMMAND_DELIVERY_TIMEOUT_SECONDS',
    doc: 'How long a command ready to run waits for its agent to connect before it expires (CMD-5).',
    defaultText: '600',
    parse: integer(10, 86_400),
  },
  ssoTimeoutSeconds: {
    env: 'BULWARK_SSO_TIMEOUT_SECONDS',
    doc: 'How long a request to an identity provider (discovery, keys, token exchange) may take before the sign-in fails with a clear error (SSO-1).',
    defaultText: '10',
    parse: integer(1, 120),
  },
  dnsServers: {
    env: 'BULWARK_DNS_SERVERS',
    doc: "The DNS servers (comma-separated, host or host:port) asked for an organization's domain verification record and for the names server-side requests go to (NET-3); empty: the system's resolvers.",
    parse: (raw: unknown) => {
      const servers = list(raw);
      for (const server of servers)
        if (!/^[A-Za-z0-9.:[\]-]{1,100}$/.test(server)) fail(`"${server}" is not a DNS server address`);
      return servers;
    },
  },
  outboundAllowlist: {
    env: 'BULWARK_OUTBOUND_ALLOWLIST',
    doc: 'When set, the only destinations server-side requests (IdPs, webhooks, breached-password checks) may reach: comma-separated host names, `.domain` (with subdomains), IPs or CIDRs (NET-3, [security/outbound.md](security/outbound.md)).',
    defaultText: '(any public address)',
    parse: outboundEntries,
  },
  outboundAllowPrivate: {
    env: 'BULWARK_OUTBOUND_ALLOW_PRIVATE',
    doc: 'Destinations that may be private, loopback or link-local for server-side requests, such as an on-prem IdP: comma-separated host names, `.domain`, IPs or CIDRs. A name entry reaches only private, unique-local and CGNAT addresses; loopback and link-local need an IP or CIDR entry. Empty: only public addresses are reached.',
    defaultText: '(none)',
    parse: outboundEntries,
  },
  breachedPasswordsUrl: {
    env: 'BULWARK_BREACHED_PASSWORDS_URL',
    doc: 'Base URL of a k-anonymity range API (`https://api.pwnedpasswords.com/range/`); set, new passwords found in it are refused and an unreachable service refuses the change with 503 (AUTH-1). Unset: no check.',
    parse: optional(breachedPasswordsUrl),
  },
  agentConnectsPerMinute: {
    env: 'BULWARK_AGENT_CONNECTS_PER_MINUTE',
    doc: 'Agent connection attempts accepted per client address per minute; beyond it the upgrade is answered 429. Raise it when many agents share one address (NAT, a proxy).',
    defaultText: '120',
    parse: integer(1, 1_000_000),
  },
  bootstrapEmail: {
    env: 'BULWARK_BOOTSTRAP_EMAIL',
    doc: 'Email of the first owner, created on first start with an organization.',
    defaultText: 'admin@bulwark.localhost',
    parse: optional(nonEmpty),
  },
  bootstrapPassword: {
    env: 'BULWARK_BOOTSTRAP_PASSWORD',
    doc: "The first owner's password. Unset: a one-time password is generated, printed once, and must be changed at first sign-in.",
    secret: true,
    parse: optional(nonEmpty),
  },
  bootstrapOrgName: {
    env: 'BULWARK_BOOTSTRAP_ORG_NAME',
    doc: 'Name of the organization created on first start.',
    defaultText: 'Default',
    parse: nonEmpty,
  },
  bootstrapMfaRequired: {
    env: 'BULWARK_BOOTSTRAP_MFA_REQUIRED',
    doc: 'The first organization\'s "MFA required" policy (MFA-4). `false` creates it relaxed, which is audited and warned about; owners change it later in the security policy.',
    defaultText: 'true',
    parse: (raw: unknown) => oneOf('true', 'false')(raw) === 'true',
  },
  passwordHashConcurrency: {
    env: 'BULWARK_PASSWORD_HASH_CONCURRENCY',
    doc: 'Password hashes computed at once (argon2id, ~19 MiB and tens of ms each); more wait, and beyond 64 waiting sign-ins get 503.',
    defaultText: 'CPU cores - 1 (at least 1)',
    parse: optional(integer(1, 64)),
  },
  logLevel: {
    env: 'BULWARK_LOG_LEVEL',
    doc: 'Log level of the JSON logs on stdout. `info` writes one access line per request (method, URL with secret query values masked, client address, status, time); `debug` adds a line as each request arrives.',
    defaultText: 'info',
    parse: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'),
  },
  metricsToken: {
    env: 'BULWARK_METRICS_TOKEN',
    doc: 'Bearer token (32+ random characters) that `/metrics` on the main port requires. Unset: `/metrics` answers 404 there.',
    secret: true,
    parse: optional(metricsToken),
  },
  metricsPort: {
    env: 'BULWARK_METRICS_PORT',
    doc: 'Serve `/metrics` without a token on a separate listener bound to 127.0.0.1 at this port (0 picks one).',
    parse: optional(integer(0, 65_535)),
  },
  shutdownTimeoutMs: {
    env: 'BULWARK_SHUTDOWN_TIMEOUT_MS',
    doc: 'On SIGTERM (or after an error nothing handled), how long in-flight requests may take before the process exits anyway (with status 1).',
    defaultText: '10000',
    parse: integer(100, 600_000),
  },
  auditRetentionDays: {
    env: 'BULWARK_AUDIT_RETENTION_DAYS',
    doc: 'Audit events older than this are pruned; the chain stays verifiable from a signed anchor.',
    defaultText: '365',
    parse: integer(1, 36_500),
  },
  auditCheckpointEvery: {
    env: 'BULWARK_AUDIT_CHECKPOINT_EVERY',
    doc: 'Sign a checkpoint of an organization’s audit chain after this many new events.',
    defaultText: '1000',
    parse: integer(1, 1_000_000),
  },
  auditCheckpointIntervalSeconds: {
    env: 'BULWARK_AUDIT_CHECKPOINT_INTERVAL_SECONDS',
    doc: 'Also sign a checkpoint of every chain that moved at least this often, and at shutdown.',
    defaultText: '300',
    parse: integer(1, 86_400),
  },
  auditSinkDir: {
    env: 'BULWARK_AUDIT_SINK_DIR',
    doc: 'The directory NDJSON file audit sinks write in (one file per sink, named by the server). Unset: file sinks are refused.',
    parse: optional(nonEmpty),
  },
  auditSinkFileMaxBytes: {
    env: 'BULWARK_AUDIT_SINK_FILE_MAX_BYTES',
    doc: 'A file audit sink starts a new file once its current one would pass this size; rotated files are kept.',
    defaultText: '104857600',
    parse: integer(4096, 1_099_511_627_776),
  },
  auditSinkPollMs: {
    env: 'BULWARK_AUDIT_SINK_POLL_MS',
    doc: 'How often audit sink delivery looks for new events and checkpoints to send.',
    defaultText: '1000',
    parse: integer(10, 60_000),
  },
  auditSinkBackoffMaxSeconds: {
    env: 'BULWARK_AUDIT_SINK_BACKOFF_MAX_SECONDS',
    doc: 'Longest wait (before jitter) between attempts to deliver to an audit sink that keeps failing.',
    defaultText: '300',
    parse: integer(1, 86_400),
  },
  maintenanceIntervalSeconds: {
    env: 'BULWARK_MAINTENANCE_INTERVAL_SECONDS',
    doc: 'How often expired sessions, registration tokens, invitations and passkey challenges are deleted and command output past its retention is pruned.',
    defaultText: '300',
    parse: integer(1, 86_400),
  },
  commandOutputRetentionDays: {
    env: 'BULWARK_COMMAND_OUTPUT_RETENTION_DAYS',
    doc: 'Stored output of a command is deleted this many days after the command ended; the command and its audit events stay.',
    defaultText: '30',
    parse: integer(1, 36_500),
  },
  rateLimitReadPerMinute: {
    env: 'BULWARK_RATE_LIMIT_READ_PER_MINUTE',
    doc: 'Requests per minute per client on routes of the `read` class.',
    defaultText: '600',
    parse: integer(1, 1_000_000),
  },
  rateLimitWritePerMinute: {
    env: 'BULWARK_RATE_LIMIT_WRITE_PER_MINUTE',
    doc: 'Requests per minute per client on routes of the `write` class.',
    defaultText: '120',
    parse: integer(1, 1_000_000),
  },
  rateLimitAuthPerMinute: {
    env: 'BULWARK_RATE_LIMIT_AUTH_PER_MINUTE',
    doc: 'Requests per minute per client on routes of the `auth` class (credentials and tokens).',
    defaultText: '30',
    parse: integer(1, 1_000_000),
  },
  rateLimitExportPerMinute: {
    env: 'BULWARK_RATE_LIMIT_EXPORT_PER_MINUTE',
    doc: 'Requests per minute per client on routes of the `export` class (large streamed responses).',
    defaultText: '10',
    parse: integer(1, 1_000_000),
  },
} satisfies Record<string, SettingSpec<unknown>>;

type Settings = typeof settings;
export type SettingKey = keyof Settings;
type Parsed<K extends SettingKey> = ReturnType<Settings[K]['parse']>;

export interface Config {
  dataDir: string;
  database:
    | { kind: 'sqlite'; file: string }
    | {
        kind: 'postgres';
        url: string;
        /** The schema owner's URL, when migrations run as another role than the server (HA-2). */
        ownerUrl?: string;
      };
  databaseUrl: string;
  databasePoolMax: number;
  sqliteBusyTimeoutMs: number;
  redisUrl: string | undefined;
  redisKeyPrefix: string;
  host: string;
  port: number;
  /** The console's origin, when configured (passkeys' relying party). */
  publicUrl: string | undefined;
  /** The workload-identity issuer (SEC-4): on with `publicUrl`, minting only for these audiences. */
  workloadIdentity: { audiences: WorkloadAudienceRule[] };
  tls: { certFile: string; keyFile: string; minVersion: 'TLSv1.3' | 'TLSv1.2' } | undefined;
  /** TLS to PostgreSQL, Redis, LDAP and SMTP (NET-4). */
  backingTls: { caFile: string | undefined; insecureSkipVerify: Parsed<'backingTlsInsecureSkipVerify'> };
  /** Email notifications; undefined when no SMTP server is configured. */
  smtp: SmtpConfig | undefined;
  /** Invitation email limits (per organization), so `members:invite` is no mail cannon. */
  invitationEmails: { perOrgPerDay: number; recipientCooldownMinutes: number };
  trustedProxies: string[];
  bodyLimitBytes: number;
  masterKey: Buffer | undefined;
  masterKeyFile: string;
  logLevel: Parsed<'logLevel'>;
  sessions: { idleMinutes: number; absoluteHours: number; maxPerUser: number; stepUpMinutes: number };
  loginLimits: { accountFailures: number; ipFailures: number; windowSeconds: number };
  agents: { heartbeatSeconds: number; connectsPerMinute: number };
  commands: { deliveryTimeoutSeconds: number };
  sso: { timeoutSeconds: number; dnsServers: string[] };
  /** Where server-side requests may go (NET-3); the DNS servers are `sso.dnsServers`. */
  outbound: { allowlist: string[]; allowPrivate: string[] };
  /** The breached-password range API (AUTH-1); undefined: no check. */
  breachedPasswordsUrl: string | undefined;
  bootstrap: {
    email: string | undefined;
    password: string | undefined;
    orgName: string;
    mfaRequired: boolean;
  };
  passwordHashConcurrency: number | undefined;
  metricsToken: string | undefined;
  metricsPort: number | undefined;
  shutdownTimeoutMs: number;
  audit: { retentionDays: number; checkpointEvery: number; checkpointIntervalSeconds: number };
  auditSinks: { dir: string | undefined; fileMaxBytes: number; pollMs: number; backoffMaxSeconds: number };
  maintenance: { intervalSeconds: number; commandOutputRetentionDays: number };
  rateLimits: { read: number; write: number; auth: number; export: number };
  /** Where each setting's value came from, for `config check`. */
  sources: Record<SettingKey, SettingSource>;
  configFile: string | undefined;
}

export interface SmtpConfig {
  host: string;
  port: number;
  tls: 'starttls' | 'implicit';
  /** A CA bundle for SMTP only; otherwise the backing-services CA (or the system's roots). */
  caFile: string | undefined;
  from: string;
  user: string | undefined;
  /** From BULWARK_SMTP_PASSWORD or read from BULWARK_SMTP_PASSWORD_FILE at start. */
  password: string | undefined;
  passwordFile: string | undefined;
  maxAttempts: number;
  pollSeconds: number;
}

export interface ConfigProblem {
  setting: string;
  reason: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  ${p.setting}: ${p.reason}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const DEFAULTS: Partial<Record<SettingKey, unknown>> = {
  dataDir: './data',
  databasePoolMax: 10,
  sqliteBusyTimeoutMs: 5000,
  redisKeyPrefix: 'bulwark',
  host: '127.0.0.1',
  port: 8080,
  tlsMinVersion: 'TLSv1.3',
  backingTlsInsecureSkipVerify: [],
  smtpPort: 587,
  smtpTls: 'starttls',
  smtpMaxAttempts: 20,
  smtpPollSeconds: 5,
  invitationEmailsPerOrgPerDay: 100,
  invitationRecipientCooldownMinutes: 60,
  trustedProxies: [],
  workloadIdentityAudiences: [],
  bodyLimitBytes: 1024 * 1024,
  logLevel: 'info',
  sessionIdleMinutes: 30,
  sessionAbsoluteHours: 12,
  maxSessionsPerUser: 10,
  stepUpMinutes: 15,
  loginAccountFailures: 10,
  loginIpFailures: 50,
  loginWindowMinutes: 15,
  agentHeartbeatSeconds: 15,
  commandDeliveryTimeoutSeconds: 600,
  ssoTimeoutSeconds: 10,
  dnsServers: [],
  outboundAllowlist: [],
  outboundAllowPrivate: [],
  agentConnectsPerMinute: 120,
  bootstrapOrgName: 'Default',
  bootstrapMfaRequired: true,
  shutdownTimeoutMs: 10_000,
  auditRetentionDays: 365,
  auditCheckpointEvery: 1000,
  auditCheckpointIntervalSeconds: 300,
  auditSinkFileMaxBytes: 104_857_600,
  auditSinkPollMs: 1000,
  auditSinkBackoffMaxSeconds: 300,
  maintenanceIntervalSeconds: 300,
  commandOutputRetentionDays: 30,
  rateLimitReadPerMinute: 600,
  rateLimitWritePerMinute: 120,
  rateLimitAuthPerMinute: 30,
  rateLimitExportPerMinute: 10,
};

const LOOPBACK = /^(127(\.\d{1,3}){3}|::1|localhost)$/;

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK.test(host);
}

function readConfigFile(file: string): Record<string, unknown> {
  let content: string;
  try {
    content = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([
      {
        setting: 'BULWARK_CONFIG_FILE',
        reason: `cannot read ${file} (${(error as NodeJS.ErrnoException).code})`,
      },
    ]);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(content);
  } catch (error) {
    throw new ConfigError([
      {
        setting: 'BULWARK_CONFIG_FILE',
        reason: `${file} is not valid YAML/JSON: ${(error as Error).message}`,
      },
    ]);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError([
      { setting: 'BULWARK_CONFIG_FILE', reason: `${file} must hold a mapping of settings` },
    ]);
  }
  return parsed as Record<string, unknown>;
}

export interface LoadConfigOptions {
  env?: NodeJS.ProcessEnv;
  /** A config file given on the command line; takes the place of BULWARK_CONFIG_FILE. */
  configFile?: string;
  cwd?: string;
}

export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const problems: ConfigProblem[] = [];
  const sources = {} as Record<SettingKey, SettingSource>;
  const values = {} as { [K in SettingKey]: Parsed<K> };

  const configFile = options.configFile ?? (env.BULWARK_CONFIG_FILE?.trim() || undefined);
  const fileValues = configFile ? readConfigFile(path.resolve(cwd, configFile)) : {};
  for (const key of Object.keys(fileValues)) {
    if (!(key in settings) || key === 'configFile') {
      problems.push({ setting: `${configFile}: ${key}`, reason: 'is not a known setting' });
    }
  }
  const secretsInFile = Object.keys(fileValues).filter(
    (key) => key in settings && (settings[key as SettingKey] as SettingSpec<unknown>).secret === true,
  );
  if (configFile && secretsInFile.length > 0) {
    const mode = statSync(path.resolve(cwd, configFile)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      problems.push({
        setting: 'BULWARK_CONFIG_FILE',
        reason: `${configFile} holds secrets (${secretsInFile.join(', ')}) but is readable or writable by group or others (mode ${mode.toString(8).padStart(4, '0')}); run: chmod 600 ${configFile}`,
      });
    }
  }

  for (const key of Object.keys(settings) as SettingKey[]) {
    const spec: SettingSpec<unknown> = settings[key];
    let raw: unknown = DEFAULTS[key];
    let source: SettingSource = 'default';
    if (key !== 'configFile' && fileValues[key] !== undefined) {
      raw = fileValues[key];
      source = 'file';
    }
    const fromEnv = env[spec.env];
    if (fromEnv !== undefined && fromEnv.trim() !== '') {
      raw = fromEnv;
      source = 'env';
    }
    if (key === 'configFile') raw = configFile;
    sources[key] = source;
    try {
      (values as Record<string, unknown>)[key] = spec.parse(raw);
    } catch (error) {
      if (!(error instanceof SettingError)) throw error;
      // Never echo a secret back, even a malformed one: it may be a real secret pasted in the wrong place.
      const shown = spec.secret || typeof raw === 'object' ? '' : ` (got "${String(raw)}")`;
      problems.push({
        setting: source === 'file' ? `${configFile}: ${key}` : spec.env,
        reason: `${error.message}${shown}`,
      });
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const dataDir = path.resolve(cwd, values.dataDir);
  const databaseUrl = values.databaseUrl ?? `sqlite:${path.join(dataDir, 'bulwark.db')}`;
  const database: Config['database'] = databaseUrl.startsWith('sqlite:')
    ? { kind: 'sqlite', file: path.resolve(cwd, databaseUrl.slice('sqlite:'.length)) }
    : {
        kind: 'postgres',
        url: databaseUrl,
        ...(values.databaseOwnerUrl ? { ownerUrl: values.databaseOwnerUrl } : {}),
      };
  if (
    values.databaseOwnerUrl &&
    (database.kind !== 'postgres' || values.databaseOwnerUrl.startsWith('sqlite:'))
  ) {
    problems.push({
      setting: settings.databaseOwnerUrl.env,
      reason:
        'a schema owner role is for PostgreSQL: both BULWARK_DATABASE_URL and it must be postgres:// URLs',
    });
  }

  const tlsFiles = [values.tlsCertFile, values.tlsKeyFile].filter((v) => v !== undefined).length;
  if (tlsFiles === 1) {
    problems.push({
      setting: values.tlsCertFile ? settings.tlsKeyFile.env : settings.tlsCertFile.env,
      reason: 'TLS needs both BULWARK_TLS_CERT_FILE and BULWARK_TLS_KEY_FILE',
    });
  }
  const tls =
    values.tlsCertFile && values.tlsKeyFile
      ? {
          certFile: path.resolve(cwd, values.tlsCertFile),
          keyFile: path.resolve(cwd, values.tlsKeyFile),
          minVersion: values.tlsMinVersion,
        }
      : undefined;

  const smtp = smtpConfig(values, cwd, problems);

  if (!isLoopbackHost(values.host) && !tls && values.trustedProxies.length === 0) {
    problems.push({
      setting: settings.host.env,
      reason: `binding to ${values.host} (not loopback) would serve credentials over plain HTTP; configure TLS (BULWARK_TLS_CERT_FILE and BULWARK_TLS_KEY_FILE) or the reverse proxy that terminates it (BULWARK_TRUSTED_PROXIES)`,
    });
  }
  if (problems.length > 0) throw new ConfigError(problems);

  return {
    dataDir,
    database,
    databaseUrl,
    databasePoolMax: values.databasePoolMax,
    sqliteBusyTimeoutMs: values.sqliteBusyTimeoutMs,
    redisUrl: values.redisUrl,
    redisKeyPrefix: values.redisKeyPrefix,
    host: values.host,
    port: values.port,
    publicUrl: values.publicUrl,
    workloadIdentity: { audiences: values.workloadIdentityAudiences },
    tls,
    backingTls: {
      caFile: values.backingTlsCaFile ? path.resolve(cwd, values.backingTlsCaFile) : undefined,
      insecureSkipVerify: values.backingTlsInsecureSkipVerify,
    },
    smtp,
    invitationEmails: {
      perOrgPerDay: values.invitationEmailsPerOrgPerDay,
      recipientCooldownMinutes: values.invitationRecipientCooldownMinutes,
    },
    trustedProxies: values.trustedProxies,
    bodyLimitBytes: values.bodyLimitBytes,
    masterKey: values.masterKey,
    masterKeyFile: path.resolve(cwd, values.masterKeyFile ?? path.join(dataDir, 'master.key')),
    logLevel: values.logLevel,
    sessions: {
      idleMinutes: values.sessionIdleMinutes,
      absoluteHours: values.sessionAbsoluteHours,
      maxPerUser: values.maxSessionsPerUser,
      stepUpMinutes: values.stepUpMinutes,
    },
    loginLimits: {
      accountFailures: values.loginAccountFailures,
      ipFailures: values.loginIpFailures,
      windowSeconds: values.loginWindowMinutes * 60,
    },
    agents: {
      heartbeatSeconds: values.agentHeartbeatSeconds,
      connectsPerMinute: values.agentConnectsPerMinute,
    },
    commands: { deliveryTimeoutSeconds: values.commandDeliveryTimeoutSeconds },
    sso: { timeoutSeconds: values.ssoTimeoutSeconds, dnsServers: values.dnsServers },
    outbound: { allowlist: values.outboundAllowlist, allowPrivate: values.outboundAllowPrivate },
    breachedPasswordsUrl: values.breachedPasswordsUrl,
    bootstrap: {
      email: values.bootstrapEmail,
      password: values.bootstrapPassword,
      orgName: values.bootstrapOrgName,
      mfaRequired: values.bootstrapMfaRequired,
    },
    passwordHashConcurrency: values.passwordHashConcurrency,
    metricsToken: values.metricsToken,
    metricsPort: values.metricsPort,
    shutdownTimeoutMs: values.shutdownTimeoutMs,
    audit: {
      retentionDays: values.auditRetentionDays,
      checkpointEvery: values.auditCheckpointEvery,
      checkpointIntervalSeconds: values.auditCheckpointIntervalSeconds,
    },
    auditSinks: {
      dir: values.auditSinkDir ? path.resolve(cwd, values.auditSinkDir) : undefined,
      fileMaxBytes: values.auditSinkFileMaxBytes,
      pollMs: values.auditSinkPollMs,
      backoffMaxSeconds: values.auditSinkBackoffMaxSeconds,
    },
    maintenance: {
      intervalSeconds: values.maintenanceIntervalSeconds,
      commandOutputRetentionDays: values.commandOutputRetentionDays,
    },
    rateLimits: {
      read: values.rateLimitReadPerMinute,
      write: values.rateLimitWritePerMinute,
      auth: values.rateLimitAuthPerMinute,
      export: values.rateLimitExportPerMinute,
    },
    sources,
    configFile: configFile ? path.resolve(cwd, configFile) : undefined,
  };
}

/** The SMTP settings as one whole, or undefined when email is off; what is missing or unsafe is a problem. */
function smtpConfig(
  values: { [K in SettingKey]: Parsed<K> },
  cwd: string,
  problems: ConfigProblem[],
): SmtpConfig | undefined {
  if (!values.smtpHost) return undefined;
  if (!values.publicUrl)
    problems.push({
      setting: settings.publicUrl.env,
      reason: 'is required with BULWARK_SMTP_HOST: emails name the console, and invitations link to it',
    });
  if (!values.smtpFrom)
    problems.push({ setting: settings.smtpFrom.env, reason: 'is required with BULWARK_SMTP_HOST' });
  else if (/[\r\n]/.test(values.smtpFrom))
    problems.push({ setting: settings.smtpFrom.env, reason: 'must be one line' });
  if (values.smtpPassword && values.smtpPasswordFile)
    problems.push({
      setting: settings.smtpPasswordFile.env,
      reason: 'give the password or its file, not both',
    });
  let password = values.smtpPassword;
  const passwordFile = values.smtpPasswordFile ? path.resolve(cwd, values.smtpPasswordFile) : undefined;
  if (passwordFile && !values.smtpPassword) {
    try {
      if ((statSync(passwordFile).mode & 0o077) !== 0)
        problems.push({
          setting: settings.smtpPasswordFile.env,
          reason: `${passwordFile} is readable or writable by group or others; run: chmod 600 ${passwordFile}`,
        });
      password = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (error) {
      problems.push({
        setting: settings.smtpPasswordFile.env,
        reason: `cannot read ${passwordFile} (${(error as NodeJS.ErrnoException).code})`,
      });
    }
  }
  if (password && !values.smtpUser)
    problems.push({ setting: settings.smtpUser.env, reason: 'is required when an SMTP password is given' });
  return {
    host: values.smtpHost,
    port: values.smtpPort,
    tls: values.smtpTls,
    caFile: values.smtpCaFile ? path.resolve(cwd, values.smtpCaFile) : undefined,
    from: values.smtpFrom ?? '',
    user: values.smtpUser,
    password,
    passwordFile,
    maxAttempts: values.smtpMaxAttempts,
    pollSeconds: values.smtpPollSeconds,
  };
}

function maskUrlPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '****';
    return parsed.toString();
  } catch {
    return '****';
  }
}

/** The effective configuration as `NAME=value` lines, secrets masked, with where each value came from. */
export function describeConfig(config: Config): string[] {
  const shown: Record<SettingKey, string> = {
    configFile: config.configFile ?? '',
    dataDir: config.dataDir,
    databaseUrl: config.database.kind === 'sqlite' ? config.databaseUrl : maskUrlPassword(config.databaseUrl),
    databaseOwnerUrl:
      config.database.kind === 'postgres' && config.database.ownerUrl
        ? maskUrlPassword(config.database.ownerUrl)
        : '',
    databasePoolMax: String(config.databasePoolMax),
    sqliteBusyTimeoutMs: String(config.sqliteBusyTimeoutMs),
    redisUrl: config.redisUrl ? maskUrlPassword(config.redisUrl) : '',
    redisKeyPrefix: config.redisKeyPrefix,
    host: config.host,
    port: String(config.port),
    publicUrl: config.publicUrl ?? '',
    workloadIdentityAudiences: config.workloadIdentity.audiences
      .map((rule) => (rule.org ? `${rule.org}=${rule.audience}` : rule.audience))
      .join(','),
    tlsCertFile: config.tls?.certFile ?? '',
    tlsKeyFile: config.tls?.keyFile ?? '',
    tlsMinVersion: config.tls?.minVersion ?? 'TLSv1.3',
    backingTlsCaFile: config.backingTls.caFile ?? '',
    backingTlsInsecureSkipVerify: config.backingTls.insecureSkipVerify.join(','),
    smtpHost: config.smtp?.host ?? '',
    smtpPort: String(config.smtp?.port ?? 587),
    smtpTls: config.smtp?.tls ?? 'starttls',
    smtpCaFile: config.smtp?.caFile ?? '',
    smtpFrom: config.smtp?.from ?? '',
    smtpUser: config.smtp?.user ?? '',
    smtpPassword: config.smtp?.password ? '**** (set)' : '',
    smtpPasswordFile: config.smtp?.passwordFile ?? '',
    smtpMaxAttempts: String(config.smtp?.maxAttempts ?? 20),
    smtpPollSeconds: String(config.smtp?.pollSeconds ?? 5),
    invitationEmailsPerOrgPerDay: String(config.invitationEmails.perOrgPerDay),
    invitationRecipientCooldownMinutes: String(config.invitationEmails.recipientCooldownMinutes),
    trustedProxies: config.trustedProxies.join(','),
    bodyLimitBytes: String(config.bodyLimitBytes),
    masterKey: config.masterKey ? '**** (set)' : '',
    masterKeyFile: config.masterKey ? '(unused: BULWARK_MASTER_KEY is set)' : config.masterKeyFile,
    logLevel: config.logLevel,
    sessionIdleMinutes: String(config.sessions.idleMinutes),
    sessionAbsoluteHours: String(config.sessions.absoluteHours),
    maxSessionsPerUser: String(config.sessions.maxPerUser),
    stepUpMinutes: String(config.sessions.stepUpMinutes),
    loginAccountFailures: String(config.loginLimits.accountFailures),
    loginIpFailures: String(config.loginLimits.ipFailures),
    loginWindowMinutes: String(config.loginLimits.windowSeconds / 60),
    agentHeartbeatSeconds: String(config.agents.heartbeatSeconds),
    agentConnectsPerMinute: String(config.agents.connectsPerMinute),
    commandDeliveryTimeoutSeconds: String(config.commands.deliveryTimeoutSeconds),
    ssoTimeoutSeconds: String(config.sso.timeoutSeconds),
    dnsServers: config.sso.dnsServers.join(','),
    outboundAllowlist: config.outbound.allowlist.join(','),
    outboundAllowPrivate: config.outbound.allowPrivate.join(','),
    breachedPasswordsUrl: config.breachedPasswordsUrl ?? '',
    bootstrapEmail: config.bootstrap.email ?? '',
    bootstrapPassword: config.bootstrap.password ? '**** (set)' : '',
    bootstrapOrgName: config.bootstrap.orgName,
    bootstrapMfaRequired: String(config.bootstrap.mfaRequired),
    passwordHashConcurrency:
      config.passwordHashConcurrency === undefined ? '' : String(config.passwordHashConcurrency),
    metricsToken: config.metricsToken ? '**** (set)' : '',
    metricsPort: config.metricsPort === undefined ? '' : String(config.metricsPort),
    shutdownTimeoutMs: String(config.shutdownTimeoutMs),
    auditRetentionDays: String(config.audit.retentionDays),
    auditCheckpointEvery: String(config.audit.checkpointEvery),
    auditCheckpointIntervalSeconds: String(config.audit.checkpointIntervalSeconds),
    auditSinkDir: config.auditSinks.dir ?? '',
    auditSinkFileMaxBytes: String(config.auditSinks.fileMaxBytes),
    auditSinkPollMs: String(config.auditSinks.pollMs),
    auditSinkBackoffMaxSeconds: String(config.auditSinks.backoffMaxSeconds),
    maintenanceIntervalSeconds: String(config.maintenance.intervalSeconds),
    commandOutputRetentionDays: String(config.maintenance.commandOutputRetentionDays),
    rateLimitReadPerMinute: String(config.rateLimits.read),
    rateLimitWritePerMinute: String(config.rateLimits.write),
    rateLimitAuthPerMinute: String(config.rateLimits.auth),
    rateLimitExportPerMinute: String(config.rateLimits.export),
  };
  return (Object.keys(settings) as SettingKey[]).map((key) => {
    const value = shown[key] === '' ? '(not set)' : shown[key];
    return `${settings[key].env}=${value}  [${config.sources[key]}]`;
  });
}

// Re-exported for the docs test: the settings table is the single source of the reference.
export const settingList = (Object.keys(settings) as SettingKey[]).map((key) => ({
  key,
  env: settings[key].env,
  doc: settings[key].doc,
  defaultText: (settings[key] as SettingSpec<unknown>).defaultText,
  secret: (settings[key] as SettingSpec<unknown>).secret === true,
}));
