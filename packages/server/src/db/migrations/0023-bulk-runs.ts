import type { Kysely } from 'kysely';

/**
 * Bulk runs (CMD-8): one action on every agent a label selector matches, released a few at a time
 * and stopped once too many fail (SSM's max concurrency and max errors). Each target is a command of
 * its own (`commands.bulk_run_id`), so signing, sealing, delivery and auditing are the commands' own;
 * the run holds what was asked once, the limits, and why it stopped.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('bulk_runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('selector', 'text', (c) => c.notNull())
    .addColumn('service', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('params', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('risk', 'text', (c) => c.notNull())
    .addColumn('requested_by', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    /** As asked ("10" or "25%"), and as resolved against the number of targets. */
    .addColumn('max_concurrency_spec', 'text', (c) => c.notNull())
    .addColumn('max_concurrency', 'integer', (c) => c.notNull())
    .addColumn('max_errors_spec', 'text', (c) => c.notNull())
    .addColumn('max_errors', 'integer', (c) => c.notNull())
    .addColumn('target_count', 'integer', (c) => c.notNull())
    .addColumn('stop_reason', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addColumn('finished_at', 'bigint')
    .execute();
  await db.schema.createIndex('bulk_runs_org').on('bulk_runs').columns(['org_id', 'id']).execute();
  await db.schema.createIndex('bulk_runs_status').on('bulk_runs').column('status').execute();
  await db.schema.alterTable('commands').addColumn('bulk_run_id', 'text').execute();
  await db.schema
    .createIndex('commands_bulk_run')
    .on('commands')
    .columns(['bulk_run_id', 'status'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('commands_bulk_run').execute();
  await db.schema.alterTable('commands').dropColumn('bulk_run_id').execute();
  await db.schema.dropTable('bulk_runs').execute();
}
