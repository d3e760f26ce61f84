import type { Kysely } from 'kysely';

/**
 * CMD-7: what the server sealed when it accepted a command, and when each decision on it was given.
 * Commands and decisions made before this migration have no seal and are refused at dispatch, as a
 * tampered row would be: none is trusted on the database's word alone.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('commands')
    .addColumn('seal', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
  await db.schema
    .alterTable('command_approvals')
    .addColumn('seal', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('command_approvals').dropColumn('seal').execute();
  await db.schema.alterTable('commands').dropColumn('seal').execute();
}
