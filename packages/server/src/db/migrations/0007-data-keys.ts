import { type Kysely, sql } from 'kysely';

/**
 * Data keys (SEC-1): one active per scope (an organization, or the instance itself), wrapped by the
 * master key; retired ones stay to open what they sealed until it is sealed again (SEC-2).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('data_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('wrapped_key', 'text', (c) => c.notNull())
    .addColumn('master_key_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('retired_at', 'bigint')
    .execute();
  // Two instances creating a scope's first key at once: one wins, the other reads the winner's.
  await db.schema
    .createIndex('data_keys_one_active_per_scope')
    .on('data_keys')
    .column('scope')
    .unique()
    .where(sql.ref('status'), '=', 'active')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('data_keys').execute();
}
