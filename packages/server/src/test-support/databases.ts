import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, beforeEach, inject } from 'vitest';
import { type Database, openPostgres, openSqlite } from '../db/database.js';
import { tempDir } from './temp.js';

/**
 * The databases a store suite runs against: a real SQLite file, and a fresh database on the real
 * PostgreSQL (created per suite, dropped after) when one answers. `describe.each(testDatabases())`
 * runs the same tests on both.
 */
export interface TestDatabase {
  dialect: 'sqlite' | 'postgres';
  /** A `BULWARK_DATABASE_URL` for a fresh, empty database. */
  create(): Promise<{ url: string; open(): Database; drop(): Promise<void> }>;
}

export const postgresUrl = (): string | null => inject('postgresUrl');
export const redisUrl = (): string | null => inject('redisUrl');

const sqlite: TestDatabase = {
  dialect: 'sqlite',
  async create() {
    const dir = await tempDir('db');
    const file = path.join(dir.path, 'bulwark.db');
    return {
      url: `sqlite:${file}`,
      open: () => openSqlite({ file, busyTimeoutMs: 5000 }),
      drop: () => dir.remove(),
    };
  },
};

/**
 * The role test databases belong to and the server connects as: neither a superuser nor BYPASSRLS,
 * so the row-level-security policies (migration 0030) hold in every PostgreSQL test, as in a
 * deployment that follows docs/deployment.md.
 */
export const TEST_OWNER_ROLE = 'bulwark_test_owner';

/** Creates `role` (LOGIN, no superuser, no BYPASSRLS) unless it exists; test files run in parallel. */
export async function ensureTestRole(admin: pg.Client, role: string): Promise<void> {
  try {
    await admin.query(`create role ${role} login nosuperuser nobypassrls`);
  } catch (error) {
    // 42710: it exists; 23505: another test file created it at the same moment.
    const code = (error as { code?: string }).code;
    if (code !== '42710' && code !== '23505') throw error;
  }
}

/**
 * A fresh database owned by {@link TEST_OWNER_ROLE}, and its URL as that role; `superuser` gives the
 * admin URL's own role instead (for a test about that role).
 */
export async function createPostgresDatabase(
  adminUrl: string,
  options: { superuser?: boolean } = {},
): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `bulwark_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    if (options.superuser) {
      await admin.query(`create database ${name}`);
    } else {
      await ensureTestRole(admin, TEST_OWNER_ROLE);
      await admin.query(`create database ${name} owner ${TEST_OWNER_ROLE}`);
    }
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  if (!options.superuser) {
    url.username = TEST_OWNER_ROLE;
    url.password = '';
  }
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

const postgres = (adminUrl: string): TestDatabase => ({
  dialect: 'postgres',
  async create() {
    const created = await createPostgresDatabase(adminUrl);
    return { ...created, open: () => openPostgres({ url: created.url, poolMax: 5 }) };
  },
});

/** SQLite always; PostgreSQL when the machine's server answers (CI requires it, see global-setup). */
export function testDatabases(): TestDatabase[] {
  const url = postgresUrl();
  return url ? [sqlite, postgres(url)] : [sqlite];
}

/**
 * Gives each test of the calling suite a fresh, empty database of `target`'s kind, opened, and drops
 * it after the test. Returns a getter, valid inside tests.
 */
export function freshDatabasePerTest(target: TestDatabase): () => Database {
  let database: Database | undefined;
  let drop: (() => Promise<void>) | undefined;
  beforeEach(async () => {
    const created = await target.create();
    database = created.open();
    drop = created.drop;
  });
  afterEach(async () => {
    await database?.close().catch(() => {});
    await drop?.();
  });
  return () => {
    if (!database) throw new Error('freshDatabasePerTest: use the database inside a test');
    return database;
  };
}

/**
 * Every row of every table of `database`, each as JSON, sorted per table (PostgreSQL has no stable
 * row order to read them in): what a copy of the database shows whoever holds it, and a snapshot two
 * moments can be compared by.
 */
export async function tableRows(database: Database): Promise<Array<{ table: string; rows: string[] }>> {
  const names =
    database.dialect === 'sqlite'
      ? sql<{ name: string }>`select name from sqlite_master where type = 'table'`
      : sql<{ name: string }>`select table_name as name from information_schema.tables
          where table_schema = current_schema() and table_type = 'BASE TABLE'`;
  const tables = (await names.execute(database.db)).rows
    .map(({ name }) => name)
    .filter((name) => !name.startsWith('sqlite_'))
    .sort();
  const dump: Array<{ table: string; rows: string[] }> = [];
  for (const table of tables) {
    const { rows } = await sql`select * from ${sql.table(table)}`.execute(database.db);
    dump.push({ table, rows: rows.map((row) => JSON.stringify(row)).sort() });
  }
  return dump;
}

/**
 * A second connection to a running server's database, to read (or, in an attack, write) beside it:
 * its own SQLite handle on the same file, or one PostgreSQL connection.
 */
export function openBeside(
  database: { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string },
): Database {
  return database.kind === 'sqlite'
    ? openSqlite({ file: database.file, busyTimeoutMs: 10_000 })
    : openPostgres({ url: database.url, poolMax: 1 });
}
