import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type TestDatabase, testDatabases } from '../test-support/databases.js';
import { runCli } from '../test-support/processes.js';
import { tempDir } from '../test-support/temp.js';
import { openSqlite } from './database.js';
import { migrateToLatest, migrationsUpToDate, pendingMigrations } from './migrate.js';
import { migrations } from './migrations/index.js';

describe('SQLite connection', () => {
  let dir: { path: string; remove(): Promise<void> };
  beforeEach(async () => {
    dir = await tempDir('sqlite');
  });
  afterEach(() => dir.remove());

  it('opens a private file in WAL mode with foreign keys, a busy timeout and full sync', async () => {
    const file = path.join(dir.path, 'nested', 'bulwark.db');
    const database = openSqlite({ file, busyTimeoutMs: 4321 });
    const pragma = async (name: string) =>
      Object.values((await sql.raw(`pragma ${name}`).execute(database.db)).rows[0] as object)[0];
    expect(await pragma('journal_mode')).toBe('wal');
    expect(await pragma('foreign_keys')).toBe(1);
    expect(await pragma('busy_timeout')).toBe(4321);
    expect(await pragma('synchronous')).toBe(2);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    await database.close();
  });

  it('serializes read-then-write transactions across processes instead of failing with SQLITE_BUSY', async () => {
    // The server and a CLI command (an audit export records an event) write the same file. A deferred
    // BEGIN that reads, then writes after the other process committed, fails at once; IMMEDIATE waits.
    const file = path.join(dir.path, 'shared.db');
    const setup = openSqlite({ file, busyTimeoutMs: 5000 });
    await sql`create table counter (n integer not null)`.execute(setup.db);
    await sql`insert into counter values (0)`.execute(setup.db);
    await setup.close();
    const worker = `
      import { openSqlite } from ${JSON.stringify(new URL('../../dist/db/database.js', import.meta.url).href)};
      import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
      const database = openSqlite({ file: ${JSON.stringify(file)}, busyTimeoutMs: 10000 });
      for (let i = 0; i < 2000; i++) {
        await database.db.transaction().execute(async (tx) => {
          const { rows } = await sql\`select n from counter\`.execute(tx);
          await new Promise((resolve) => setImmediate(resolve));
          await sql\`update counter set n = \${rows[0].n + 1}\`.execute(tx);
        });
      }
      await database.close();
    `;
    const run = () =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', worker], {
          cwd: fileURLToPath(new URL('.', import.meta.url)),
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (chunk) => {
          stderr += chunk;
        });
        child.on('close', (code) => resolve({ code, stderr }));
      });
    const results = await Promise.all([run(), run()]);
    for (const result of results) expect(result.stderr).toBe('');
    const check = openSqlite({ file, busyTimeoutMs: 5000 });
    const { rows } = await sql<{ n: number }>`select n from counter`.execute(check.db);
    await check.close();
    expect(rows[0]!.n).toBe(4000);
  });

  it('migrate waits for a neighbour holding the write lock longer than the busy timeout, and says so', async () => {
    // Another instance is migrating a large database and holds SQLite's write lock. The CLI's busy
    // timeout is 50 ms: migrate must not fail with "database is locked" but tell the operator it
    // waits, then apply the migrations once the lock is released.
    const file = path.join(dir.path, 'bulwark.db');
    const neighbour = new BetterSqlite3(file);
    neighbour.pragma('journal_mode = WAL');
    neighbour.exec('begin immediate');
    let released = false;
    const result = await runCli(['migrate'], {
      cwd: dir.path,
      env: {
        BULWARK_DATA_DIR: dir.path,
        BULWARK_DATABASE_URL: `sqlite:${file}`,
        BULWARK_SQLITE_BUSY_TIMEOUT_MS: '50',
      },
      onStderr: (soFar) => {
        if (released || !soFar.includes('waiting for another process to finish migrating the database'))
          return;
        released = true;
        neighbour.exec('commit');
      },
    });
    neighbour.close();
    expect(released).toBe(true);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(`applied: ${Object.keys(migrations).join(', ')}`);
    // In the server the same connection serves requests afterwards: it keeps its own busy timeout.
    const database = openSqlite({ file, busyTimeoutMs: 4321 });
    expect(await migrateToLatest(database)).toEqual([]);
    const { rows } = await sql<{ timeout: number }>`pragma busy_timeout`.execute(database.db);
    expect(rows[0]!.timeout).toBe(4321);
    await database.close();
  });
});

describe.each(testDatabases())('migrations on $dialect', (target: TestDatabase) => {
  let created: Awaited<ReturnType<TestDatabase['create']>>;
  beforeEach(async () => {
    created = await target.create();
  });
  afterEach(() => created.drop());

  it('applies every migration once and reports the schema up to date', async () => {
    const database = created.open();
    expect(await pendingMigrations(database.db)).toEqual(Object.keys(migrations));
    expect(await migrateToLatest(database)).toEqual(Object.keys(migrations));
    expect(await migrateToLatest(database)).toEqual([]);
    expect(await migrationsUpToDate(database.db)).toBe(true);
    await database.close();
  });

  it('lets several processes migrate at once: each migration applies exactly once', async () => {
    // Three rounds on fresh databases: a race between processes does not show on every attempt.
    for (let round = 0; round < 3; round++) {
      const fresh = round === 0 ? created : await target.create();
      const dir = await tempDir('migrate');
      try {
        const env = { BULWARK_DATA_DIR: dir.path, BULWARK_DATABASE_URL: fresh.url };
        const results = await Promise.all([1, 2, 3].map(() => runCli(['migrate'], { cwd: dir.path, env })));
        for (const result of results) expect(result.code, result.stderr).toBe(0);
        const outputs = results.map((r) => r.stdout.trim()).sort();
        expect(outputs).toEqual([
          `applied: ${Object.keys(migrations).join(', ')}`,
          'database is up to date',
          'database is up to date',
        ]);
        const database = fresh.open();
        const rows = await sql<{ name: string }>`select name from bulwark_migrations`.execute(database.db);
        expect(rows.rows.map((r) => r.name)).toEqual(Object.keys(migrations));
        await database.close();
      } finally {
        await dir.remove();
        if (fresh !== created) await fresh.drop();
      }
    }
    // Nine CLI processes starting at once: on a loaded machine that takes far longer than the default.
  }, 240_000);
});
