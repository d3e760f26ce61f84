import type { Database as BetterSqliteDatabase, Statement } from 'better-sqlite3';
import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  type QueryResult,
  SelectQueryNode,
  SqliteDialect,
} from 'kysely';
import { StorageFullError } from '../errors.js';

/**
 * Kysely's own SQLite driver, changed in the ways that the audit log's write path needs:
 *
 * - `BEGIN IMMEDIATE`. A deferred BEGIN that reads and then writes fails at once with
 *   SQLITE_BUSY_SNAPSHOT when another process (the CLI, a second server) committed in between; the
 *   busy timeout does not apply to that case. IMMEDIATE takes the write lock up front, waiting up to
 *   the busy timeout, so every transaction is serialized across processes.
 * - A bounded cache of prepared statements. Kysely's driver prepares every query anew, which costs as
 *   much as running a batched insert; bench/audit-append measured it.
 * - A full disk answered as what it is: SQLITE_FULL becomes {@link StorageFullError} (503
 *   `storage_full`), and the transaction SQLite already rolled back is not rolled back again (which
 *   would fail and hide the cause behind a 500).
 */

const STATEMENT_CACHE_SIZE = 256;

class CachingSqliteConnection implements DatabaseConnection {
  readonly #db: BetterSqliteDatabase;
  readonly #statements = new Map<string, Statement>();

  constructor(db: BetterSqliteDatabase) {
    this.#db = db;
  }

  #prepare(sql: string): Statement {
    let statement = this.#statements.get(sql);
    if (statement) {
      // Re-insert to keep the map in least-recently-used order.
      this.#statements.delete(sql);
    } else {
      statement = this.#db.prepare(sql);
      if (this.#statements.size >= STATEMENT_CACHE_SIZE) {
        this.#statements.delete(this.#statements.keys().next().value!);
      }
    }
    this.#statements.set(sql, statement);
    return statement;
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    try {
      const statement = this.#prepare(compiled.sql);
      const parameters = compiled.parameters as unknown[];
      if (statement.reader) return { rows: statement.all(parameters) as R[] };
      const { changes, lastInsertRowid } = statement.run(parameters);
      return { numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] };
    } catch (error) {
      // A full disk refuses every write until space is freed: a typed 503, not a server bug.
      if ((error as { code?: unknown }).code === 'SQLITE_FULL') throw new StorageFullError(error);
      throw error;
    }
  }

  async *streamQuery<R>(compiled: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    if (!SelectQueryNode.is(compiled.query)) throw new Error('the SQLite driver streams select queries only');
    for (const row of this.#prepare(compiled.sql).iterate(compiled.parameters as unknown[])) {
      yield { rows: [row as R] };
    }
  }
}

/** SQLite has one connection; callers take turns on it. */
class ConnectionMutex {
  #tail: Promise<void> = Promise.resolve();
  #release: (() => void) | undefined;

  async lock(): Promise<void> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise((resolve) => {
      release = resolve;
    });
    await previous;
    this.#release = release;
  }

  unlock(): void {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }
}

const quoteIdentifier = (name: string) => `"${name.replaceAll('"', '""')}"`;

class BulwarkSqliteDriver implements Driver {
  readonly #db: BetterSqliteDatabase;
  readonly #connection: CachingSqliteConnection;
  readonly #mutex = new ConnectionMutex();

  constructor(db: BetterSqliteDatabase) {
    this.#db = db;
    this.#connection = new CachingSqliteConnection(db);
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    await this.#mutex.lock();
    return this.#connection;
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    // SQLite rolls a transaction back by itself on some errors (SQLITE_FULL at commit, an I/O error);
    // a ROLLBACK then fails with "no transaction is active", and that error would replace the one
    // that tells what went wrong.
    if (!this.#db.inTransaction) return;
    await connection.executeQuery(CompiledQuery.raw('rollback'));
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`savepoint ${quoteIdentifier(name)}`));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`rollback to ${quoteIdentifier(name)}`));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`release ${quoteIdentifier(name)}`));
  }

  async releaseConnection(): Promise<void> {
    this.#mutex.unlock();
  }

  async destroy(): Promise<void> {
    this.#db.close();
  }
}

/** Kysely's SQLite dialect (adapter, compiler, introspector) with the driver above. */
export class BulwarkSqliteDialect extends SqliteDialect {
  readonly #db: BetterSqliteDatabase;

  constructor(db: BetterSqliteDatabase) {
    super({ database: db });
    this.#db = db;
  }

  override createDriver(): Driver {
    return new BulwarkSqliteDriver(this.#db);
  }
}
