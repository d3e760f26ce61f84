import type { Kysely } from 'kysely';

/**
 * The email outbox (NOTIFY-1, email half): each email is written here in the transaction of the
 * change it tells about, and a worker sends it afterwards, retrying with backoff. An SMTP outage or a
 * restart then loses nothing: a row stays `pending` until the SMTP server acknowledged it. The subject
 * and body are sealed under the instance data key (an invitation carries its link's token) and
 * emptied once sent; what stays is who was told what kind of thing, when, and how delivery went.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('email_outbox')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.references('users.id').onDelete('cascade'))
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('recipient', 'text', (c) => c.notNull())
    .addColumn('sealed', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull())
    .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
    .addColumn('last_error', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('sent_at', 'bigint')
    .execute();
  // The worker's question: which pending messages are due now.
  await db.schema
    .createIndex('email_outbox_due')
    .on('email_outbox')
    .columns(['state', 'next_attempt_at'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('email_outbox').execute();
}
