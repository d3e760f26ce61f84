import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, type PostgresPool, type PostgresPoolClient, sql } from 'kysely';
import pg from 'pg';
import type { Config } from '../config.js';
import { DatabaseUnavailableError, StorageFullError } from '../errors.js';
import { createBackingTls, postgresTls } from '../net/backing-tls.js';
import { ORG_SETTING, orgSettingNow } from './org-scope.js';
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

/**
 * SQLSTATEs that say the server is unreachable or going away rather than that the statement is wrong:
 * class 08 (connection exception), admin/crash shutdown, "the database system is starting up / shutting
 * down", too many connections.
 */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
/** Socket errors of a connection to the database (an address that refuses, resets or cannot be reached). */
const UNAVAILABLE_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** What pg says when a client's connection ended under it (it gives these errors no code). */
const CONNECTION_LOST =
  /^(Connection terminated|Client has encountered a connection error|Client was closed)/;

function connectionLost(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const { code, syscall } = error as NodeJS.ErrnoException;
  if (typeof code === 'string') {
    if (code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_ERRNOS.has(code)) return true;
    // A Unix socket path with no server behind it.
    if ((code === 'ENOENT' || code === 'EACCES') && syscall === 'connect') return true;
  }
  // Node tries every address of a host name and reports them together.
  if (error instanceof AggregateError) return error.errors.some(connectionLost);
  return CONNECTION_LOST.test(error.message);
}

/** A driver error as the typed error callers and the error handler understand, when it is one of those. */
function typedFailure(error: unknown): unknown {
  if (connectionLost(error)) return new DatabaseUnavailableError(error);
  if ((error as { code?: unknown } | null)?.code === '53100') return new StorageFullError(error);
  return error;
}

/**
 * The pool as Kysely sees it, with a lost or refused connection turned into
 * {@link DatabaseUnavailableError} (503 `database_unavailable`) at the one place every query passes,
 * instead of a driver error answered as a 500. Other errors (constraint violations, lock timeouts)
 * pass through unchanged for the code that handles them.
 */
function typedFailures(pool: pg.Pool): PostgresPool {
  const clients = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  /** The `bulwark.org_id` each pooled connection holds now, so that it is set only when it changes. */
  const orgSettings = new WeakMap<pg.PoolClient, string>();
  return {
    async connect() {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (error) {
        // Anything that keeps the pool from handing out a connection (refused, starting up, shutting
        // down, too many clients, the pool closed) means the database is unavailable to this request.
        throw new DatabaseUnavailableError(error);
      }
      // The organization the row-level-security policies admit (db/org-scope.ts). Set for the session
      // as the connection is handed out, before any statement of this checkout (one query, or a whole
      // transaction) runs on it: the pool is this process's alone, so the setting holds until the next
      // checkout sets it again. A connection whose setting cannot be made is not used.
      const orgSetting = orgSettingNow();
      if (orgSettings.get(client) !== orgSetting) {
        try {
          await client.query('select set_config($1, $2, false)', [ORG_SETTING, orgSetting]);
        } catch (error) {
          orgSettings.delete(client);
          client.release(error instanceof Error ? error : true);
          throw typedFailure(error);
        }
        orgSettings.set(client, orgSetting);
      }
      let wrapped = clients.get(client);
      if (!wrapped) {
        const query = (text: string, values: ReadonlyArray<unknown>) =>
          client.query(text, values as unknown[]).catch((error: unknown) => {
            throw typedFailure(error);
          });
        wrapped = {
          // Only the (sql, parameters) form: Kysely passes a cursor only to a dialect configured with one.
          query: query as unknown as PostgresPoolClient['query'],
          // pg-pool gives the client a new release function each time it hands it out.
          release: () => client.release(),
        };
        clients.set(client, wrapped);
      }
      return wrapped;
    },
    end: () => pool.end(),
  };
}

export interface PostgresOptions {
  url: string;
  poolMax: number;
  /** TLS to the server (NET-4): asked for by the URL's `sslmode`, always verified unless configured not to. */
  backingTls?: Config['backingTls'];
}

export function openPostgres({ url, poolMax, backingTls }: PostgresOptions): Database {
  const { connectionString, ssl } = postgresTls(
    url,
    createBackingTls(backingTls ?? { caFile: undefined, insecureSkipVerify: [] }),
  );
  const pool = new pg.Pool({
    connectionString,
    ssl,
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
  // Nor may one in use: pg-pool listens for a client's errors only while it is idle, and a client
  // emits 'error' when its connection drops (PostgreSQL stopped or restarted mid-transaction); with no
  // listener that is an uncaught exception. The query in flight is rejected with the same error, and
  // the pool discards the client when it is released.
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: typedFailures(pool) }) });
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
  config: Pick<Config, 'database' | 'databasePoolMax' | 'sqliteBusyTimeoutMs'> &
    Partial<Pick<Config, 'backingTls'>>,
): Database {
  return config.database.kind === 'sqlite'
    ? openSqlite({ file: config.database.file, busyTimeoutMs: config.sqliteBusyTimeoutMs })
    : openPostgres({
        url: config.database.url,
        poolMax: config.databasePoolMax,
        ...(config.backingTls ? { backingTls: config.backingTls } : {}),
      });
}
