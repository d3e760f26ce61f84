import { type Kysely, PostgresAdapter, sql } from 'kysely';

/**
 * Audit sinks for the instance chain (AUD-6): events that belong to no organization (sign-ins before
 * an org is known, key rotations, integrity failures) reach a SIEM too. A sink whose `org_id` is NULL
 * follows the instance chain; it is configured on the host with `bulwark audit sinks`, never through
 * an organization's API (whose queries all name their org, so they cannot reach it).
 *
 * PostgreSQL drops the NOT NULL in place (under its table lock: a server still running the old
 * version cannot write in between, and the constraint names stay). SQLite cannot: the table is rebuilt
 * (create, copy, drop, rename) inside the migration's `BEGIN IMMEDIATE`, which holds every other
 * writer off. Names stay unique per organization, and among the instance's sinks by a partial index
 * (NULLs are distinct in a unique index).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    await sql`ALTER TABLE audit_sinks ALTER COLUMN org_id DROP NOT NULL`.execute(db);
  } else {
    await rebuildWithNullableOrg(db);
  }
  await db.schema
    .createIndex('audit_sinks_instance_name')
    .on('audit_sinks')
    .column('name')
    .unique()
    .where(sql.ref('org_id'), 'is', null)
    .execute();
}

async function rebuildWithNullableOrg(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('audit_sinks_next')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', (c) => c.references('orgs.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('config_sealed', 'text', (c) => c.notNull())
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('delivered_seq', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('checkpoint_seq', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('priority_seq', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('last_error', 'text')
    .addColumn('last_delivered_at', 'bigint')
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
  await sql`INSERT INTO audit_sinks_next SELECT id, org_id, name, kind, config_sealed, enabled,
    delivered_seq, checkpoint_seq, priority_seq, failures, next_attempt_at, last_error,
    last_delivered_at, created_by, created_at, updated_at FROM audit_sinks`.execute(db);
  await db.schema.dropTable('audit_sinks').execute();
  await db.schema.alterTable('audit_sinks_next').renameTo('audit_sinks').execute();
  await db.schema
    .createIndex('audit_sinks_org_name')
    .on('audit_sinks')
    .columns(['org_id', 'name'])
    .unique()
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('audit_sinks_instance_name').execute();
  await db
    .deleteFrom('audit_sinks' as never)
    .where(sql.ref('org_id'), 'is', null)
    .execute();
}
