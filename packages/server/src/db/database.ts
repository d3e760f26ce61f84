import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Config } from '../config.js';
import { type GenerationReader, noGenerations, sqliteGenerations } from './read-cache.js';
import type { DB } from './schema.js';
import { BulwarkSqliteDialect } from './sqlite-driver.js';

export type Dialect = 'sqlite' | 'postgres';

export interface Database {
  db: Kysely<DB>;
  dialect: Dialect;
  /** The database's generation now (SQLite), for reads reused while it holds; see read-cache.ts. */
  generation: GenerationReader;
  /** Throws when the database does not answer a trivial query. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface SqliteOptions {
  file: string;
  busyTimeoutMs: number;
}

export function openSqlite({ file, busyTimeoutMs }: SqliteOptions): Database {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // The file holds password hashes and sealed keys: create it private before SQLite creates it with
  // the umask's mode. SQLite gives its -wal and -shm files the mode of the database file.
  closeSync(openSync(file, 'a', 0o600));
  const connection = new BetterSqlite3(file);
  // The busy timeout first: switching a new file to WAL takes a lock, and a second process starting at
  // the same moment must wait for it rather than fail with "database is locked".
  connection.pragma(`busy_timeout = ${Math.trunc(busyTimeoutMs)}`);
  connection.pragma('journal_mode = WAL');
  connection.pragma('foreign_keys = ON');
  // FULL: an acknowledged audit event survives power loss, not only a process crash. Measured on the
  // reference machine, NORMAL was no faster (bench/audit-append, BENCHMARKS.md).
  connection.pragma('synchronous = FULL');
  const db = new Kysely<DB>({ dialect: new BulwarkSqliteDialect(connection) });
  return {
    db,
    dialect: 'sqlite',
    generation: sqliteGenerations(connection),
    async ping() {
      await sql`select 1`.execute(db);
    },
    async close() {
      await db.destroy();
      // Kysely closes its driver only if a query ever ran through it.
      if (connection.open) connection.close();
    },
  };
}

const PG_INT8 = 20;

export interface PostgresOptions {
  url: string;
  poolMax: number;
}

export function openPostgres({ url, poolMax }: PostgresOptions): Database {
  const pool = new pg.Pool({
    connectionString: url,
    max: poolMax,
    application_name: 'bulwark',
    // A transaction stuck on a row lock (say, an audit chain head held by a hung instance) must fail
    // and release, not stall every writer behind it.
    lock_timeout: 10_000,
    idle_in_transaction_session_timeout: 60_000,
    // BIGINT columns hold epoch milliseconds and sequence numbers, all far below 2^53.
    types: {
      getTypeParser: (oid: number, format?: 'text' | 'binary') =>
        oid === PG_INT8 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format),
    } as pg.CustomTypesConfig,
  });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on('error', () => {});
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    dialect: 'postgres',
    // Other instances write too, and PostgreSQL offers no cheap proof that nothing changed.
    generation: noGenerations,
    async ping() {
      await sql`select 1`.execute(db);
    },
    async close() {
      await db.destroy();
    },
  };
}

export function openDatabase(
  config: Pick<Config, 'database' | 'databasePoolMax' | 'sqliteBusyTimeoutMs'>,
): Database {
  return config.database.kind === 'sqlite'
    ? openSqlite({ file: config.database.file, busyTimeoutMs: config.sqliteBusyTimeoutMs })
    : openPostgres({ url: config.database.url, poolMax: config.databasePoolMax });
}
