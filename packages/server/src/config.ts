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
    try {
      new URL(value);
    } catch {
      fail('is not a valid postgres:// URL');
    }
    return value;
  }
  return fail('must start with sqlite: or postgres://');
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
    doc: "The DNS servers (comma-separated, host or host:port) asked for an organization's domain verification record; empty: the system's resolvers.",
    parse: (raw: unknown) => {
      const servers = list(raw);
      for (const server of servers)
        if (!/^[A-Za-z0-9.:[\]-]{1,100}$/.test(server)) fail(`"${server}" is not a DNS server address`);
      return servers;
    },
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
  database: { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string };
  databaseUrl: string;
  databasePoolMax: number;
  sqliteBusyTimeoutMs: number;
  redisUrl: string | undefined;
  host: string;
  port: number;
  /** The console's origin, when configured (passkeys' relying party). */
  publicUrl: string | undefined;
  tls: { certFile: string; keyFile: string; minVersion: 'TLSv1.3' | 'TLSv1.2' } | undefined;
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
  maintenance: { intervalSeconds: number; commandOutputRetentionDays: number };
  rateLimits: { read: number; write: number; auth: number; export: number };
  /** Where each setting's value came from, for `config check`. */
  sources: Record<SettingKey, SettingSource>;
  configFile: string | undefined;
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
  host: '127.0.0.1',
  port: 8080,
  tlsMinVersion: 'TLSv1.3',
  trustedProxies: [],
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
  agentConnectsPerMinute: 120,
  bootstrapOrgName: 'Default',
  bootstrapMfaRequired: true,
  shutdownTimeoutMs: 10_000,
  auditRetentionDays: 365,
  auditCheckpointEvery: 1000,
  auditCheckpointIntervalSeconds: 300,
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
    : { kind: 'postgres', url: databaseUrl };

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
    host: values.host,
    port: values.port,
    publicUrl: values.publicUrl,
    tls,
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
    databasePoolMax: String(config.databasePoolMax),
    sqliteBusyTimeoutMs: String(config.sqliteBusyTimeoutMs),
    redisUrl: config.redisUrl ? maskUrlPassword(config.redisUrl) : '',
    host: config.host,
    port: String(config.port),
    publicUrl: config.publicUrl ?? '',
    tlsCertFile: config.tls?.certFile ?? '',
    tlsKeyFile: config.tls?.keyFile ?? '',
    tlsMinVersion: config.tls?.minVersion ?? 'TLSv1.3',
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
