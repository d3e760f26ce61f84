import type { Kysely } from 'kysely';

/**
 * The server's seal of each agent's public keys (agents/agent-keys.ts). Agents registered before it
 * have none and are refused at connection: register the host again. Sealing them as the database now
 * holds them would vouch for keys anyone with write access could have put there, at this or any later
 * start.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('agents')
    .addColumn('key_seal', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('agents').dropColumn('key_seal').execute();
}
