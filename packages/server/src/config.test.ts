import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, describeConfig, loadConfig, settingList } from './config.js';
import { tempDir } from './test-support/temp.js';

const KEY = 'q7XkPz0c4mJ9vN2bR5tY8wA1sD3fG6hL0oI4uE7rT9w=';

function problemsOf(env: Record<string, string>, cwd?: string) {
  try {
    loadConfig({ env, ...(cwd ? { cwd } : {}) });
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected the configuration to be refused');
}

describe('configuration', () => {
  let dir: { path: string; remove(): Promise<void> };
  beforeEach(async () => {
    dir = await tempDir('config');
  });
  afterEach(() => dir.remove());

  it('defaults to the quick start: 127.0.0.1:8080, SQLite and the key file under ./data', () => {
    const config = loadConfig({ env: {}, cwd: dir.path });
    expect(config.host).toBe('127.0.0.1');
    expect(config.port).toBe(8080);
    expect(config.database).toEqual({ kind: 'sqlite', file: path.join(dir.path, 'data', 'bulwark.db') });
    expect(config.masterKeyFile).toBe(path.join(dir.path, 'data', 'master.key'));
    expect(config.tls).toBeUndefined();
    expect(config.audit.retentionDays).toBe(365);
  });

  it('takes the file over the defaults and the environment over the file', () => {
    const file = path.join(dir.path, 'bulwark.yaml');
    writeFileSync(file, 'port: 9000\nlogLevel: debug\ntrustedProxies: [10.0.0.0/8, 192.0.2.1]\n');
    const config = loadConfig({ env: { BULWARK_CONFIG_FILE: file, BULWARK_PORT: '9100' }, cwd: dir.path });
    expect(config.port).toBe(9100);
    expect(config.sources.port).toBe('env');
    expect(config.logLevel).toBe('debug');
    expect(config.sources.logLevel).toBe('file');
    expect(config.trustedProxies).toEqual(['10.0.0.0/8', '192.0.2.1']);
  });

  it('names the setting and the reason for every wrong value at once', () => {
    const problems = problemsOf({
      BULWARK_PORT: 'eighty',
      BULWARK_LOG_LEVEL: 'loud',
      BULWARK_DATABASE_URL: 'mysql://db',
      BULWARK_TRUSTED_PROXIES: '10.0.0.0/8,not-an-ip',
      BULWARK_AUDIT_RETENTION_DAYS: '0',
    });
    expect(problems).toEqual([
      { setting: 'BULWARK_DATABASE_URL', reason: 'must start with sqlite: or postgres://' },
      { setting: 'BULWARK_PORT', reason: 'must be an integer from 0 to 65535 (got "eighty")' },
      {
        setting: 'BULWARK_TRUSTED_PROXIES',
        reason: '"not-an-ip" is not an IP address or CIDR range (got "10.0.0.0/8,not-an-ip")',
      },
      {
        setting: 'BULWARK_LOG_LEVEL',
        reason: 'must be one of fatal, error, warn, info, debug, trace, silent (got "loud")',
      },
      { setting: 'BULWARK_AUDIT_RETENTION_DAYS', reason: 'must be an integer from 1 to 36500 (got "0")' },
    ]);
  });

  it('takes a schema owner for PostgreSQL only, and a Redis key prefix of plain parts', () => {
    expect(problemsOf({ BULWARK_REDIS_KEY_PREFIX: 'bulwark:prod east' })).toEqual([
      {
        setting: 'BULWARK_REDIS_KEY_PREFIX',
        reason:
          'must be letters, digits, _ . - in up to four parts joined by ":", e.g. bulwark:prod (got "bulwark:prod east")',
      },
    ]);
    // The default database is SQLite, which has no roles.
    expect(problemsOf({ BULWARK_DATABASE_OWNER_URL: 'postgres://owner@db/bulwark' })).toEqual([
      {
        setting: 'BULWARK_DATABASE_OWNER_URL',
        reason:
          'a schema owner role is for PostgreSQL: both BULWARK_DATABASE_URL and it must be postgres:// URLs',
      },
    ]);
    const config = loadConfig({
      env: {
        BULWARK_DATABASE_URL: 'postgres://bulwark@db/bulwark',
        BULWARK_DATABASE_OWNER_URL: 'postgres://owner:secret@db/bulwark',
        BULWARK_REDIS_KEY_PREFIX: 'bulwark:prod',
      },
      cwd: '/srv',
    });
    expect(config.database).toEqual({
      kind: 'postgres',
      url: 'postgres://bulwark@db/bulwark',
      ownerUrl: 'postgres://owner:secret@db/bulwark',
    });
    expect(config.redisKeyPrefix).toBe('bulwark:prod');
  });

  it('refuses a trusted-proxy range that trusts everyone', () => {
    // Attack: with 0.0.0.0/0 trusted, any client sets X-Forwarded-For to forge its audited address.
    expect(problemsOf({ BULWARK_TRUSTED_PROXIES: '10.0.0.1,0.0.0.0/0' })[0]!.reason).toContain(
      '"0.0.0.0/0" would trust every client',
    );
    expect(problemsOf({ BULWARK_TRUSTED_PROXIES: '::/0' })[0]!.reason).toContain('would trust every client');
  });

  it('refuses a config file holding secrets that others can read', () => {
    const file = path.join(dir.path, 'bulwark.yaml');
    writeFileSync(file, `metricsToken: x9Kq2mVb7Lp4Zr8Tw1Ny6Hc3Jd5Fg0Sa\n`, { mode: 0o644 });
    chmodSync(file, 0o644);
    expect(problemsOf({ BULWARK_CONFIG_FILE: file })).toEqual([
      {
        setting: 'BULWARK_CONFIG_FILE',
        reason: `${file} holds secrets (metricsToken) but is readable or writable by group or others (mode 0644); run: chmod 600 ${file}`,
      },
    ]);
    chmodSync(file, 0o600);
    expect(loadConfig({ env: { BULWARK_CONFIG_FILE: file } }).metricsToken).toBe(
      'x9Kq2mVb7Lp4Zr8Tw1Ny6Hc3Jd5Fg0Sa',
    );
    // Without secrets, a world-readable file is fine.
    writeFileSync(file, 'port: 9000\n');
    chmodSync(file, 0o644);
    expect(loadConfig({ env: { BULWARK_CONFIG_FILE: file } }).port).toBe(9000);
  });

  it('names unknown keys in the config file', () => {
    const file = path.join(dir.path, 'bulwark.json');
    writeFileSync(file, JSON.stringify({ prot: 8080 }));
    expect(problemsOf({ BULWARK_CONFIG_FILE: file })).toEqual([
      { setting: `${file}: prot`, reason: 'is not a known setting' },
    ]);
  });

  it('takes a public URL that can name a passkey relying party, and refuses one that cannot', () => {
    const load = (url: string) => loadConfig({ env: { BULWARK_PUBLIC_URL: url }, cwd: dir.path }).publicUrl;
    expect(load('https://Bulwark.Example.com/')).toBe('https://bulwark.example.com');
    expect(load('http://localhost:8080')).toBe('http://localhost:8080');
    const reasons = (url: string) => problemsOf({ BULWARK_PUBLIC_URL: url }).map((p) => p.reason);
    expect(reasons('http://bulwark.example.com')[0]).toMatch(/^must start with https:\/\//);
    expect(reasons('https://10.0.0.5')[0]).toMatch(/^must use a host name, not an IP address/);
    expect(reasons('https://[::1]:8443')[0]).toMatch(/^must use a host name, not an IP address/);
    expect(reasons('https://bulwark.example.com/console')[0]).toMatch(/^must be an origin only/);
    expect(reasons('bulwark.example.com')[0]).toMatch(/^is not a valid URL/);
  });

  it('refuses a non-loopback bind without TLS or a trusted proxy', () => {
    const [problem] = problemsOf({ BULWARK_HOST: '0.0.0.0' });
    expect(problem?.setting).toBe('BULWARK_HOST');
    expect(problem?.reason).toContain('plain HTTP');
    expect(() =>
      loadConfig({ env: { BULWARK_HOST: '0.0.0.0', BULWARK_TRUSTED_PROXIES: '10.0.0.1' } }),
    ).not.toThrow();
    expect(() =>
      loadConfig({
        env: { BULWARK_HOST: '0.0.0.0', BULWARK_TLS_CERT_FILE: 'c.pem', BULWARK_TLS_KEY_FILE: 'k.pem' },
      }),
    ).not.toThrow();
    expect(problemsOf({ BULWARK_TLS_CERT_FILE: 'c.pem' })).toEqual([
      {
        setting: 'BULWARK_TLS_KEY_FILE',
        reason: 'TLS needs both BULWARK_TLS_CERT_FILE and BULWARK_TLS_KEY_FILE',
      },
    ]);
  });

  it('refuses short, patterned or malformed secrets without echoing them', () => {
    const problems = problemsOf({
      BULWARK_MASTER_KEY: Buffer.alloc(32, 7).toString('base64'),
      BULWARK_METRICS_TOKEN: 'changeme-changeme-changeme-changeme',
    });
    expect(problems.map((p) => p.setting)).toEqual(['BULWARK_MASTER_KEY', 'BULWARK_METRICS_TOKEN']);
    expect(problems[0]!.reason).toContain('not random enough');
    expect(problems[1]!.reason).toContain('at least 32 random characters');
    expect(JSON.stringify(problems)).not.toContain('changeme');
    expect(problemsOf({ BULWARK_MASTER_KEY: 'c2hvcnQ=' })[0]!.reason).toContain('exactly 32 bytes (got 5)');
  });

  it('config check prints every setting with secrets masked', () => {
    const token = 'x9Kq2mVb7Lp4Zr8Tw1Ny6Hc3Jd5Fg0Sa';
    const config = loadConfig({
      env: {
        BULWARK_MASTER_KEY: KEY,
        BULWARK_METRICS_TOKEN: token,
        BULWARK_DATABASE_URL: 'postgres://bulwark:db-pass-123@db.internal:5432/bulwark',
        BULWARK_REDIS_URL: 'redis://:redis-pass-456@cache.internal:6379',
      },
    });
    const output = describeConfig(config).join('\n');
    for (const secret of [KEY, token, 'db-pass-123', 'redis-pass-456']) expect(output).not.toContain(secret);
    expect(output).toContain('BULWARK_DATABASE_URL=postgres://bulwark:****@db.internal:5432/bulwark  [env]');
    expect(output).toContain('BULWARK_MASTER_KEY=**** (set)  [env]');
    expect(output).toContain('BULWARK_PORT=8080  [default]');
    expect(describeConfig(config)).toHaveLength(settingList.length);
  });

  it('docs/configuration.md lists every setting with its default', () => {
    const docs = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
    const rows = docs
      .split('\n')
      .filter((line) => line.startsWith('| `BULWARK_'))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    for (const setting of settingList) {
      const row = rows.find((cells) => cells[1] === `\`${setting.env}\``);
      expect(row, `${setting.env} is missing from docs/configuration.md`).toBeDefined();
      const expectedDefault = setting.defaultText === undefined ? '(not set)' : `\`${setting.defaultText}\``;
      expect(row?.[3], `${setting.env} default`).toBe(expectedDefault);
    }
    expect(rows).toHaveLength(settingList.length);
  });
});
