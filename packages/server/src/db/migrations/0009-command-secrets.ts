import type { Kysely } from 'kysely';

/** Which secret versions a command was granted (names, ids, versions as JSON; never values). */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('commands')
    .addColumn('secrets', 'text', (c) => c.notNull().defaultTo('[]'))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('commands').dropColumn('secrets').execute();
}
