import { type Kysely, type MigrationResult, Migrator, sql } from 'kysely';
import { migrations } from './migrations/index.js';

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

function createMigrator(db: Kysely<unknown>): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: 'bulwark_migrations',
    migrationLockTableName: 'bulwark_migrations_lock',
  });
}

/**
 * Applies every pending migration in one transaction under the migration lock (a PostgreSQL advisory
 * lock; on SQLite the immediate transaction's write lock), so instances starting together apply each
 * migration exactly once and a failure leaves the schema as it was.
 */
export async function migrateToLatest<T>(db: Kysely<T>): Promise<string[]> {
  const { error, results } = await createMigrator(db as Kysely<unknown>).migrateToLatest();
  if (error) {
    const failed = results?.find((r: MigrationResult) => r.status === 'Error');
    throw new MigrationFailedError(failed?.migrationName, error);
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
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
