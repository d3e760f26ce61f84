import type { Kysely } from 'kysely';

/**
 * Notifications (NOTIFY-1): what a person is told about their own account — a sign-in from a device
 * not seen before, a changed password or factor, a changed role, an API key about to expire. They
 * belong to a user, not an organization, like sessions. `dedup_key` makes a notice that sweeps find
 * (an expiring key) arrive once however many times, and on however many instances, the sweep runs.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('notifications')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('title', 'text', (c) => c.notNull())
    .addColumn('body', 'text', (c) => c.notNull())
    .addColumn('dedup_key', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('read_at', 'bigint')
    .execute();
  // The inbox: one person's notifications, unread first, newest first.
  await db.schema
    .createIndex('notifications_user_read')
    .on('notifications')
    .columns(['user_id', 'read_at', 'id'])
    .execute();
  await db.schema
    .createIndex('notifications_user_dedup')
    .on('notifications')
    .columns(['user_id', 'dedup_key'])
    .unique()
    .execute();

  // The devices a person has signed in from (browser, OS and kind, no versions): a sign-in from one
  // not listed here is worth telling them about.
  await db.schema
    .createTable('user_devices')
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('device_key', 'text', (c) => c.notNull())
    .addColumn('first_seen_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('user_devices_pk', ['user_id', 'device_key'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('user_devices').execute();
  await db.schema.dropTable('notifications').execute();
}
