import { type Kysely, type MigrationResult, Migrator, sql } from 'kysely';
import type { Config } from '../config.js';
import { type Database, openPostgres } from './database.js';
import { type MigrationContext, migrations, migrationsWith } from './migrations/index.js';

export class MigrationFailedError extends Error {
  constructor(
    readonly migration: string | undefined,
    cause: unknown,
  ) {
    super(
      `migration ${migration ?? '(setup)'} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
      {
        cause,
      },
    );
    this.name = 'MigrationFailedError';
  }
}

function createMigrator(db: Kysely<unknown>, context?: MigrationContext): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrationsWith(context) },
    migrationTableName: 'bulwark_migrations',
    migrationLockTableName: 'bulwark_migrations_lock',
  });
}

async function migrateWith(db: Kysely<unknown>, context: MigrationContext | undefined): Promise<string[]> {
  const { error, results } = await createMigrator(db, context).migrateToLatest();
  if (error) {
    const failed = results?.find((r: MigrationResult) => r.status === 'Error');
    throw new MigrationFailedError(failed?.migrationName, error);
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** How long a process waits for another one's migrations on SQLite: a startup, never a request. */
export const SQLITE_MIGRATION_LOCK_WAIT_MS = 10 * 60_000;

export interface MigrateOptions {
  /** Called once when another process holds the lock, before waiting for it (so the wait is visible). */
  onWaitForLock?: () => void;
  /** What migrations that seal existing rows need (the master key); see migrations/index.ts. */
  context?: MigrationContext;
}

/**
 * Applies every pending migration under a lock, in one transaction, so instances starting together
 * apply each migration exactly once and a failure leaves the schema as it was. On PostgreSQL, Kysely
 * takes an advisory lock and a transaction itself. On SQLite it does neither (its lock is a no-op and
 * it runs migrations outside a transaction, assuming one connection), so two processes would race;
 * there the whole run happens inside one BEGIN IMMEDIATE transaction, which holds SQLite's write lock.
 */
export async function migrateToLatest(
  database: Pick<Database, 'db' | 'dialect'>,
  options: MigrateOptions = {},
): Promise<string[]> {
  const db = database.db as unknown as Kysely<unknown>;
  if (database.dialect === 'postgres') return migrateWith(db, options.context);
  return db.connection().execute(async (connection) => {
    await beginWriteWaitingForOthers(connection, options);
    try {
      const applied = await migrateWith(connection, options.context);
      await sql`commit`.execute(connection);
      return applied;
    } catch (error) {
      await sql`rollback`.execute(connection);
      throw error;
    }
  });
}

/**
 * Migrates the database `database` is open on. With a schema owner configured
 * (`BULWARK_DATABASE_OWNER_URL`), the migrations run as that role, which then grants the server's own
 * role (whoever `database` connects as) row access to every table: reading and writing rows, never
 * changing the schema or its row-level-security policies (HA-2). Granted at every start, so tables a
 * new version adds are granted as they appear.
 */
export async function migrateDatabase(
  database: Database,
  config: Pick<Config, 'database'> & Partial<Pick<Config, 'backingTls'>>,
  options: MigrateOptions = {},
): Promise<string[]> {
  if (config.database.kind !== 'postgres' || !config.database.ownerUrl)
    return migrateToLatest(database, options);
  const owner = openPostgres({
    url: config.database.ownerUrl,
    poolMax: 1,
    ...(config.backingTls ? { backingTls: config.backingTls } : {}),
  });
  try {
    const applied = await migrateToLatest(owner, options);
    const { rows } = await sql<{ role: string }>`select current_user as role`.execute(database.db);
    await grantRowAccess(owner, rows[0]!.role);
    return applied;
  } finally {
    await owner.close();
  }
}

/** The advisory lock the grants are made under: the ASCII of `bulwarkg` as one number. */
const GRANTS_LOCK = '7094696047983881063';

async function grantRowAccess(owner: Database, role: string): Promise<void> {
  const grantee = sql.id(role);
  await owner.db.transaction().execute(async (trx) => {
    // Instances starting together all grant, and PostgreSQL refuses concurrent GRANTs on one table
    // ("tuple concurrently updated"): one instance at a time.
    await sql`select pg_advisory_xact_lock(${GRANTS_LOCK}::bigint)`.execute(trx);
    const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(trx);
    const schema = sql.id(rows[0]!.schema);
    await sql`grant usage on schema ${schema} to ${grantee}`.execute(trx);
    await sql`grant select, insert, update, delete on all tables in schema ${schema} to ${grantee}`.execute(
      trx,
    );
    // The schema's version is read, never written, by the serving role.
    await sql`revoke insert, update, delete on bulwark_migrations, bulwark_migrations_lock from ${grantee}`.execute(
      trx,
    );
  });
}

/**
 * Takes SQLite's write lock. The configured busy timeout suits requests, not a startup: a process
 * whose neighbour is migrating a large database (or is slowed by a loaded machine) must wait for it,
 * not fail with "database is locked". So a first try does not wait; when it finds the lock held, the
 * caller is told and the wait is the long one, after which the connection's own timeout is restored.
 */
async function beginWriteWaitingForOthers(
  connection: Kysely<unknown>,
  options: MigrateOptions,
): Promise<void> {
  const { rows } = await sql<{ timeout: number }>`pragma busy_timeout`.execute(connection);
  const configured = Number(rows[0]?.timeout ?? 0);
  try {
    await setBusyTimeout(connection, 0);
    try {
      await sql`begin immediate`.execute(connection);
      return;
    } catch (error) {
      if (!isSqliteBusy(error)) throw error;
    }
    options.onWaitForLock?.();
    await setBusyTimeout(connection, Math.max(configured, SQLITE_MIGRATION_LOCK_WAIT_MS));
    await sql`begin immediate`.execute(connection);
  } finally {
    await setBusyTimeout(connection, configured);
  }
}

async function setBusyTimeout(connection: Kysely<unknown>, milliseconds: number): Promise<void> {
  await sql.raw(`pragma busy_timeout = ${Math.trunc(milliseconds)}`).execute(connection);
}

function isSqliteBusy(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

/** Applies the migrations up to and including `name`: upgrade tests start from an older schema. */
export async function migrateUpTo(database: Pick<Database, 'db'>, name: string): Promise<void> {
  const { error } = await createMigrator(database.db as unknown as Kysely<unknown>).migrateTo(name);
  if (error) throw new MigrationFailedError(name, error);
}

export async function pendingMigrations<T>(db: Kysely<T>): Promise<string[]> {
  const all = await createMigrator(db as Kysely<unknown>).getMigrations();
  return all.filter((m) => m.executedAt === undefined).map((m) => m.name);
}

/** Cheap enough for a readiness probe: every migration this build knows is recorded as applied. */
export async function migrationsUpToDate<T>(db: Kysely<T>): Promise<boolean> {
  const { rows } = await sql<{
    applied: number | string;
  }>`select count(*) as applied from bulwark_migrations`.execute(db);
  return Number(rows[0]?.applied ?? 0) >= Object.keys(migrations).length;
}
