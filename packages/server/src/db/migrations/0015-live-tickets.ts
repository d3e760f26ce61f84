import type { Kysely } from 'kysely';

/**
 * Live tickets (NET-5): the console's pass to open one live stream, asked for with the session and its
 * CSRF token a moment before. Kept in the database, not in a server's memory, so that the instance
 * that opens the stream need not be the one that issued the ticket (HA-1). Only the SHA-256 of a
 * ticket is stored; a ticket is deleted when used, and dies with its session.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('live_tickets')
    .addColumn('ticket_hash', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('session_id', 'text', (c) => c.notNull().references('sessions.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  // Expired tickets an organization left unused are swept when it next asks for one.
  await db.schema
    .createIndex('live_tickets_org_expiry')
    .on('live_tickets')
    .columns(['org_id', 'expires_at'])
    .execute();
  // Deleting a session deletes its tickets: the foreign key needs its column indexed to do so quickly.
  await db.schema.createIndex('live_tickets_session').on('live_tickets').column('session_id').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('live_tickets').execute();
}
