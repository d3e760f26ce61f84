import type { Kysely } from 'kysely';

/** An organization's stricter command policy (CMD-3: organizations may tighten, never loosen). */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('command_policies')
    .addColumn('org_id', 'text', (c) => c.primaryKey().references('orgs.id').onDelete('cascade'))
    .addColumn('policy', 'text', (c) => c.notNull())
    .addColumn('updated_by', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('command_policies').execute();
}
