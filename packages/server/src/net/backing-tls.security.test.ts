import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.js';
import { openPostgres } from '../db/database.js';
import { createLogger } from '../logging.js';
import { dumpPostgres, libpqConnection } from '../ops/backup-snapshot.js';
import {
  type PostgresCluster,
  privateClusterUnavailable,
  startPostgresCluster,
} from '../test-support/postgres-cluster.js';
import { type RedisProcess, startTlsRedis } from '../test-support/redis-server.js';
import { LogCapture, startTestServer, type TestServer } from '../test-support/server.js';
import { tempDir } from '../test-support/temp.js';
import { makeTestCa, type TestCa } from '../test-support/test-ca.js';
import { plaintextBackingServices, warnAboutPlaintextBackingServices } from './backing-tls.js';

/**
 * TLS to backing services (NET-4), against a real `redis-server` that speaks only TLS with a
 * certificate from a test CA. The attack: a man in the middle on the path between Bulwark and Redis
 * (where the sign-in limiter counts failures, AUTH-6) presents a certificate from another CA, to read
 * or reset the counters and guess passwords unlimited. Bulwark, trusting only the configured CA,
 * refuses that connection and fails closed: sign-in answers 503 and `/readyz` reports Redis down
 * (it does not refuse to start — an unreachable Redis at start is handled like a Redis outage, so
 * the instance is up and a load balancer reads its readiness). Turning verification off takes one
 * explicit setting, and every start says so at warn.
 */

const OWNER = { email: 'owner@acme.test', password: 'Tr4vel-Quietly-Over-Mountains' };

describe('TLS to Redis', () => {
  let dir: { path: string; remove(): Promise<void> };
  let right: TestCa;
  let mitm: TestCa;
  let redis: RedisProcess;
  let server: TestServer | undefined;

  beforeAll(async () => {
    dir = await tempDir('backing-tls');
    right = makeTestCa(dir.path, 'right');
    mitm = makeTestCa(dir.path, 'mitm');
    redis = await startTlsRedis({ ...right.issue('redis'), caFile: right.caFile });
  }, 30_000);

  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  afterAll(async () => {
    await redis?.stop();
    await dir?.remove();
  });

  const start = async (env: Record<string, string>) => {
    server = await startTestServer({
      BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
      BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
      BULWARK_REDIS_URL: `rediss://127.0.0.1:${redis.port}`,
      ...env,
    });
    return server;
  };
  const signIn = (s: TestServer) =>
    fetch(`${s.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: s.url },
      body: JSON.stringify({ email: OWNER.email, password: OWNER.password }),
    });
  const ready = async (s: TestServer) => (await fetch(`${s.url}/readyz`)).status;
  const warnings = (s: TestServer) =>
    s.logs
      .entries()
      .filter((entry) => entry.level === 40 && entry.setting === 'BULWARK_TLS_INSECURE_SKIP_VERIFY');

  it('works with the CA that signed the Redis certificate', async () => {
    const s = await start({ BULWARK_BACKING_TLS_CA_FILE: right.caFile });
    expect(await ready(s)).toBe(200);
    expect((await signIn(s)).status).toBe(200);
    expect(warnings(s)).toEqual([]);
  });

  it('fails closed when Redis presents a certificate from another CA', async () => {
    // Seen from Bulwark, the real server signed by `right` is what an impostor is when `mitm` is the
    // CA configured: a certificate chain that does not lead to the trusted CA.
    const s = await start({ BULWARK_BACKING_TLS_CA_FILE: mitm.caFile });
    const response = await signIn(s);
    expect(response.status).toBe(503);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('auth_unavailable');
    expect(await ready(s)).toBe(503);
    expect(s.logs.text).toMatch(/certificate|self[- ]signed|issuer/i);
  });

  it('with verification turned off explicitly, connects and warns at start, naming the service', async () => {
    const s = await start({
      BULWARK_BACKING_TLS_CA_FILE: mitm.caFile,
      BULWARK_TLS_INSECURE_SKIP_VERIFY: 'redis',
    });
    expect((await signIn(s)).status).toBe(200);
    expect(warnings(s)).toMatchObject([{ service: 'redis' }]);
  });

  it('refuses a database URL that asks for TLS without verification', () => {
    // libpq's `sslmode=no-verify`/`allow` would quietly skip the check the setting above makes loud.
    const load = (url: string) =>
      loadConfig({ env: { BULWARK_DATABASE_URL: url, BULWARK_DATA_DIR: dir.path }, cwd: dir.path });
    expect(() => load('postgres://bulwark@db.internal/bulwark?sslmode=no-verify')).toThrow(ConfigError);
    expect(() => load('postgres://bulwark@db.internal/bulwark?sslmode=verify-full')).not.toThrow();
    expect(() =>
      loadConfig({ env: { BULWARK_TLS_INSECURE_SKIP_VERIFY: 'postgres,mysql' }, cwd: dir.path }),
    ).toThrow(/"mysql" is not one of postgres, redis, ldap, smtp/);
  });
});

/**
 * The same attack on the database path: a man in the middle between Bulwark and PostgreSQL with a
 * certificate from another CA would see every password hash, sealed key and audit event go by, and
 * could answer queries itself. Every `sslmode` that asks for TLS — `require` included, which libpq
 * would not verify — is verified against the configured CA; a server that fails it is not talked to.
 */
// Outside CI a machine without PostgreSQL's server binaries skips this; in CI it must run (and fails
// loudly if it cannot), as the outage test does.
const clusterMissing =
  privateClusterUnavailable() !== null && process.env.BULWARK_TEST_REQUIRE_SERVICES !== '1';
describe.skipIf(clusterMissing)('TLS to PostgreSQL', () => {
  let dir: { path: string; remove(): Promise<void> };
  let right: TestCa;
  let mitm: TestCa;
  let cluster: PostgresCluster;

  beforeAll(async () => {
    dir = await tempDir('backing-tls-pg');
    right = makeTestCa(dir.path, 'right');
    mitm = makeTestCa(dir.path, 'mitm');
    cluster = await startPostgresCluster({ ssl: right.issue('postgres') });
  }, 60_000);

  afterAll(async () => {
    await cluster?.close();
    await dir?.remove();
  });

  const connect = async (mode: string, caFile: string, insecure: 'postgres'[] = []) => {
    const database = openPostgres({
      url: `${cluster.url}?sslmode=${mode}`,
      poolMax: 1,
      backingTls: { caFile, insecureSkipVerify: insecure },
    });
    try {
      await database.ping();
      const { rows } = await sql<{
        ssl: boolean;
      }>`select ssl from pg_stat_ssl where pid = pg_backend_pid()`.execute(database.db);
      return rows[0]?.ssl;
    } finally {
      await database.close();
    }
  };

  it('connects over verified TLS with the right CA', async () => {
    expect(await connect('verify-full', right.caFile)).toBe(true);
  });

  it('refuses a server whose certificate is from another CA, even with sslmode=require', async () => {
    for (const mode of ['verify-full', 'require'])
      await expect(connect(mode, mitm.caFile)).rejects.toMatchObject({
        cause: { message: expect.stringMatching(/certificate|self[- ]signed|issuer/i) },
      });
  });

  it("takes the database's own CA from the URL's sslrootcert, still verifying", async () => {
    expect(await connect(`verify-full&sslrootcert=${encodeURIComponent(right.caFile)}`, mitm.caFile)).toBe(
      true,
    );
    await expect(
      connect(`require&sslrootcert=${encodeURIComponent(mitm.caFile)}`, right.caFile),
    ).rejects.toMatchObject({
      cause: { message: expect.stringMatching(/certificate|self[- ]signed|issuer/i) },
    });
  });

  it('connects without verification only when postgres is named in the insecure setting', async () => {
    expect(await connect('verify-full', mitm.caFile, ['postgres'])).toBe(true);
  });

  it('backs up under the same policy: pg_dump verifies the server with sslmode=require, and refuses another CA', async () => {
    // The same man in the middle, on the path of a backup, would see the whole database go by. libpq's
    // own `require` encrypts without checking who answers (and `prefer` may not even encrypt): the
    // backup's connection and its pg_dump must verify against the configured CA, as the server does.
    const url = `${cluster.url}?sslmode=require`;
    const settings = (caFile: string) => ({ caFile, insecureSkipVerify: [] });
    const database = openPostgres({ url, poolMax: 1, backingTls: settings(right.caFile) });
    try {
      await sql`create table if not exists bulwark_migrations (name text primary key)`.execute(database.db);
    } finally {
      await database.close();
    }
    const backup = async (caFile: string) => {
      const dump = await dumpPostgres(url, dir.path, settings(caFile));
      const chunks: Buffer[] = [];
      for await (const chunk of dump.dump) chunks.push(chunk as Buffer);
      await dump.finished;
      return Buffer.concat(chunks);
    };
    expect((await backup(right.caFile)).subarray(0, 5).toString()).toBe('PGDMP');
    await expect(backup(mitm.caFile)).rejects.toThrow(/certificate|self[- ]signed|issuer/i);
    // pg_dump itself, as the backup runs it: with the CA that did not sign the server's certificate,
    // it does not talk to the server.
    const pgDump = (caFile: string) => {
      const connection = libpqConnection(url, dir.path, settings(caFile));
      try {
        return spawnSync('pg_dump', ['--schema-only', `--dbname=${connection.dbname}`], {
          env: connection.env,
          encoding: 'utf8',
        });
      } finally {
        connection.done();
      }
    };
    const verified = pgDump(right.caFile);
    expect(verified.status, verified.stderr).toBe(0);
    const refused = pgDump(mitm.caFile);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/certificate verify failed/);
    expect(readdirSync(dir.path).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });
});

describe('plain text to backing services', () => {
  it('warns at start when PostgreSQL or Redis is reached without TLS over the network, not on loopback', () => {
    // Without `sslmode` or with `redis://`, password hashes, sealed keys, audit events and the
    // sign-in counters cross the network readable and changeable by anyone on the path, and nothing
    // said so. Decided from the URLs alone: nothing here connects to these hosts.
    const plaintext = {
      databaseUrl: 'postgres://bulwark@db.internal/bulwark',
      redisUrl: 'redis://cache.internal:6379',
    };
    expect(plaintextBackingServices(plaintext)).toEqual([
      { service: 'postgres', host: 'db.internal' },
      { service: 'redis', host: 'cache.internal' },
    ]);
    for (const quiet of [
      { databaseUrl: 'postgres://bulwark@db.internal/bulwark?sslmode=verify-full' },
      { databaseUrl: 'postgres://bulwark@db.internal/bulwark?sslmode=require' },
      { databaseUrl: 'postgres://bulwark@127.0.0.1:5432/bulwark' },
      { databaseUrl: 'postgres://bulwark@[::1]/bulwark' },
      { databaseUrl: 'postgres://bulwark@localhost/bulwark' },
      { databaseUrl: 'postgres:///bulwark?host=/var/run/postgresql' },
      { redisUrl: 'rediss://cache.internal:6379' },
      { redisUrl: 'redis://127.0.0.1:6379' },
    ])
      expect(plaintextBackingServices(quiet), JSON.stringify(quiet)).toEqual([]);
    expect(
      plaintextBackingServices({ databaseUrl: 'postgres://bulwark@db.internal/bulwark?sslmode=disable' }),
    ).toEqual([{ service: 'postgres', host: 'db.internal' }]);

    const logs = new LogCapture();
    warnAboutPlaintextBackingServices(createLogger({ level: 'info', destination: logs }), plaintext);
    expect(logs.entries()).toMatchObject([
      {
        level: 40,
        service: 'postgres',
        host: 'db.internal',
        msg: expect.stringMatching(/NOT encrypted.*sslmode=verify-full/),
      },
      {
        level: 40,
        service: 'redis',
        host: 'cache.internal',
        msg: expect.stringMatching(/NOT encrypted.*rediss:/),
      },
    ]);
  });
});
