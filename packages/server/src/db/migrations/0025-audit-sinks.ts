import type { Kysely } from 'kysely';

/**
 * Audit sinks (AUD-6): where an organization's audit chain is streamed (an HTTPS webhook, syslog over
 * TLS, an NDJSON file, OTLP/HTTP logs). The configuration, credentials included, is one value sealed
 * by the organization's data key and bound to the sink (`config_sealed`).
 *
 * There is no outbox table: the chain itself is the outbox. Its events commit in the same transaction
 * as the change they record (AUD-7), and each sink keeps a cursor into it (`delivered_seq`), moved only
 * after the receiver has taken a batch. `priority_seq` is how far critical events were sent ahead of
 * the in-order stream; `checkpoint_seq` the newest signed checkpoint delivered (the witness lines).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('audit_sinks')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
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
  await db.schema
    .createIndex('audit_sinks_org_name')
    .on('audit_sinks')
    .columns(['org_id', 'name'])
    .unique()
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('audit_sinks').execute();
}
