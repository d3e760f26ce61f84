import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createPostgresDatabase, postgresUrl } from '../test-support/databases.js';
import { tempDir } from '../test-support/temp.js';
import { type Database, openPostgres, openSqlite } from './database.js';
import { type Generation, ReadCache } from './read-cache.js';

/**
 * The proof behind every reused read (sessions, access, answers): the generation must change with
 * every write that could change what was read — this process's, committed or not, and another
 * process's — and must be unknown where no such proof exists (PostgreSQL).
 */

/** Writes one row from another process, through its own connection, as the CLI would. */
function writeFromAnotherProcess(file: string): Promise<string> {
  const script = `
    const BetterSqlite3 = require('better-sqlite3');
    const connection = new BetterSqlite3(${JSON.stringify(file)});
    connection.pragma('busy_timeout = 5000');
    connection.prepare('insert into things (name) values (?)').run('from another process');
    connection.close();
  `;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', script], {
      cwd: fileURLToPath(new URL('.', import.meta.url)),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('close', () => resolve(stderr));
  });
}

describe('database generations on SQLite', () => {
  let dir: { path: string; remove(): Promise<void> };
  let database: Database;
  let file: string;
  beforeEach(async () => {
    dir = await tempDir('generation');
    file = path.join(dir.path, 'bulwark.db');
    database = openSqlite({ file, busyTimeoutMs: 5000 });
    await sql`create table things (name text not null)`.execute(database.db);
  });
  afterEach(async () => {
    await database.close();
    await dir.remove();
  });

  it('stay put while only reads happen', async () => {
    const before = database.generation();
    expect(before).toBeDefined();
    await sql`select count(*) from things`.execute(database.db);
    expect(database.generation()).toEqual(before);
  });

  it("move with this process's writes, a rolled-back one included", async () => {
    const start = database.generation();
    await sql`insert into things (name) values ('one')`.execute(database.db);
    const afterInsert = database.generation();
    expect(afterInsert).not.toEqual(start);

    await database.db
      .transaction()
      .execute(async (trx) => {
        await sql`update things set name = 'two'`.execute(trx);
        throw new Error('changed my mind');
      })
      .catch(() => {});
    // Nothing changed in the end, but a reader cannot tell: being stale is safe, being wrong is not.
    expect(database.generation()).not.toEqual(afterInsert);
  });

  it("move with another process's commit, which this connection never saw being written", async () => {
    const before = database.generation();
    expect(await writeFromAnotherProcess(file)).toBe('');
    expect(database.generation()).not.toEqual(before);
    const { rows } = await sql<{ n: number }>`select count(*) as n from things`.execute(database.db);
    expect(rows[0]!.n).toBe(1);
  });

  it('are unknown once the database is closed, so nothing is reused', async () => {
    const closed = openSqlite({ file: path.join(dir.path, 'other.db'), busyTimeoutMs: 5000 });
    await closed.close();
    expect(closed.generation()).toBeUndefined();
  });
});

describe.skipIf(!postgresUrl())('database generations on PostgreSQL', () => {
  it('are unknown: every read goes to the database, which other instances write too', async () => {
    const created = await createPostgresDatabase(postgresUrl()!);
    const database = openPostgres({ url: created.url, poolMax: 2 });
    try {
      expect(database.generation()).toBeUndefined();
      const cache = new ReadCache<number>({ maxEntries: 10 });
      let loads = 0;
      const load = async () => ++loads;
      await cache.through('key', database.generation(), load);
      await cache.through('key', database.generation(), load);
      expect(loads).toBe(2);
    } finally {
      await database.close();
      await created.drop();
    }
  });
});

describe('ReadCache', () => {
  const at = (dataVersion: number, ownChanges = 0): Generation => ({ dataVersion, ownChanges });

  it('gives a value back only at the generation it was read at', async () => {
    const cache = new ReadCache<string>({ maxEntries: 10 });
    let loads = 0;
    const load = async () => `value ${++loads}`;
    expect(await cache.through('k', at(1), load)).toBe('value 1');
    expect(await cache.through('k', at(1), load)).toBe('value 1');
    expect(await cache.through('k', at(1, 1), load)).toBe('value 2');
    expect(await cache.through('k', at(2, 1), load)).toBe('value 3');
    expect(cache.lookup('k', at(1))).toBeUndefined();
    expect(cache.lookup('k', undefined)).toBeUndefined();
  });

  it('keeps at most its entries and its weight, dropping the oldest first', () => {
    const cache = new ReadCache<string>({ maxEntries: 3, maxWeight: 10, weigh: (value) => value.length });
    for (const key of ['a', 'b', 'c', 'd']) cache.store(key, at(1), 'xx');
    expect(cache.size).toBe(3);
    expect(cache.lookup('a', at(1))).toBeUndefined();
    cache.store('big', at(1), 'x'.repeat(9));
    // 2 + 2 + 9 > 10: the older entries make room for the new one.
    expect(cache.lookup('big', at(1))).toBe('x'.repeat(9));
    expect(cache.lookup('b', at(1))).toBeUndefined();
    expect(cache.lookup('c', at(1))).toBeUndefined();
    cache.store('huge', at(1), 'x'.repeat(11));
    expect(cache.lookup('huge', at(1))).toBeUndefined();
  });
});
