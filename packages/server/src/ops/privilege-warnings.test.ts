import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { createPostgresDatabase, postgresUrl } from '../test-support/databases.js';
import { restartTestServer, startTestServer, type TestServer } from '../test-support/server.js';

/**
 * The warnings at start about running with more privilege than the server needs (root on the host, a
 * superuser in PostgreSQL), read from a real server's log. CI runs the suites as root and connects to
 * PostgreSQL as its superuser `postgres`, so both warnings are there to be seen; a role made without
 * superuser shows the other side.
 */

const ROOT_WARNING = /^running as root: /;
const SUPERUSER_WARNING = /^the PostgreSQL role is a superuser: /;
const RLS_OFF_WARNING = /^row-level security is off on org-owned tables: /;

let server: TestServer | undefined;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  await server?.close();
  server = undefined;
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The warn-level lines of the server's log. */
const warnings = (s: TestServer) =>
  s.logs
    .entries()
    .filter((entry) => entry.level === 40)
    .map((entry) => ({ msg: String(entry.msg), role: entry.role, uid: entry.uid }));

async function asAdmin(statements: string[]): Promise<void> {
  const admin = new pg.Client({ connectionString: postgresUrl()! });
  await admin.connect();
  try {
    for (const statement of statements) await admin.query(statement);
  } finally {
    await admin.end();
  }
}

describe('privilege warnings at start', () => {
  it('say so when the server runs as root, and only then', async () => {
    server = await startTestServer();
    const runningAsRoot = process.getuid?.() === 0;
    const root = warnings(server).filter((line) => ROOT_WARNING.test(line.msg));
    expect(root).toEqual(runningAsRoot ? [expect.objectContaining({ uid: 0 })] : []);
    // SQLite has no roles to warn about.
    expect(warnings(server).some((line) => SUPERUSER_WARNING.test(line.msg))).toBe(false);
  });

  describe.skipIf(!postgresUrl())('on PostgreSQL', () => {
    it('say so when the role is a superuser', async () => {
      const database = await createPostgresDatabase(postgresUrl()!, { superuser: true });
      cleanups.push(database.drop);
      server = await startTestServer({ BULWARK_DATABASE_URL: database.url });
      const superuser = warnings(server).filter((line) => SUPERUSER_WARNING.test(line.msg));
      expect(superuser).toEqual([expect.objectContaining({ role: new URL(database.url).username })]);
    });

    it('stay quiet for a role that owns only its own database', async () => {
      const name = `bulwark_test_${randomBytes(6).toString('hex')}`;
      const password = randomBytes(16).toString('hex');
      await asAdmin([
        `create role ${name} login nosuperuser password '${password}'`,
        `create database ${name} owner ${name}`,
      ]);
      cleanups.push(() =>
        asAdmin([`drop database if exists ${name} with (force)`, `drop role if exists ${name}`]),
      );
      const url = new URL(postgresUrl()!);
      url.username = name;
      url.password = password;
      url.pathname = `/${name}`;
      server = await startTestServer({ BULWARK_DATABASE_URL: url.toString() });
      expect(warnings(server).some((line) => SUPERUSER_WARNING.test(line.msg))).toBe(false);
      expect(warnings(server).some((line) => RLS_OFF_WARNING.test(line.msg))).toBe(false);
      expect(server.logs.text).toContain('bulwark is listening');

      // The role owns the tables, so it (or anyone holding its password) can turn a policy off: the
      // next start says so, naming the table.
      const first = server;
      await first.stop();
      cleanups.push(() => first.close());
      const owning = new pg.Client({ connectionString: url.toString() });
      await owning.connect();
      await owning.query('alter table commands no force row level security');
      await owning.end();
      server = await restartTestServer(first);
      const off = server.logs
        .entries()
        .filter((entry) => entry.level === 40 && RLS_OFF_WARNING.test(String(entry.msg)));
      expect(off.map((entry) => entry.tables)).toEqual([['commands']]);
    });
  });
});
