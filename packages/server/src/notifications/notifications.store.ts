import type { Kysely } from 'kysely';
import type { DB, NotificationsTable } from '../db/schema.js';

export type NotificationRow = NotificationsTable;

/** Where a page of the inbox starts: within the unread ones or the read ones, before this id. */
export interface InboxCursor {
  read: boolean;
  before: string;
}

/**
 * A person's notifications. Every query names the user: there is no way to reach another person's
 * notification through this store, which is what makes another user's id answer 404.
 */
export function createNotificationsStore(db: Kysely<DB>) {
  return {
    ...notificationsStoreOn(db),
    inTransaction: (trx: Kysely<DB>) => notificationsStoreOn(trx),
    /** Runs `work` in a transaction of its own, for a notice that is not part of a change (a sweep). */
    transaction: <T>(work: (tx: ReturnType<typeof notificationsStoreOn>) => Promise<T>): Promise<T> =>
      db.transaction().execute((trx) => work(notificationsStoreOn(trx))),
  };
}

function notificationsStoreOn(db: Kysely<DB>) {
  const ofUser = (userId: string) => db.selectFrom('notifications').selectAll().where('user_id', '=', userId);

  return {
    /** The database or transaction this store works on, for the emails written beside a notice. */
    on: db,

    /** Where to email a person, and the name to address them by. */
    contact: (userId: string) =>
      db.selectFrom('users').select(['email', 'display_name']).where('id', '=', userId).executeTakeFirst(),

    /** The owners of an organization other than `userId`, with their email addresses. */
    otherOwners: (orgId: string, userId: string) =>
      db
        .selectFrom('memberships')
        .innerJoin('users', 'users.id', 'memberships.user_id')
        .select(['users.id', 'users.email', 'users.display_name'])
        .where('memberships.org_id', '=', orgId)
        .where('memberships.role', '=', 'owner')
        .where('memberships.user_id', '!=', userId)
        .where('users.status', '=', 'active')
        .execute(),

    /** Adds a notification; one with a `dedup_key` the user already has is not added again. */
    async insert(row: NotificationRow): Promise<boolean> {
      const result = await db
        .insertInto('notifications')
        .values(row)
        .onConflict((oc) => oc.columns(['user_id', 'dedup_key']).doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
    },

    /**
     * One page of the inbox, unread first, newest first within each; `limit + 1` rows are read so the
     * caller knows whether there is more.
     */
    async page(userId: string, cursor: InboxCursor | undefined, limit: number): Promise<NotificationRow[]> {
      const rows: NotificationRow[] = [];
      if (!cursor?.read) {
        let unread = ofUser(userId).where('read_at', 'is', null);
        if (cursor) unread = unread.where('id', '<', cursor.before);
        rows.push(
          ...(await unread
            .orderBy('id', 'desc')
            .limit(limit + 1)
            .execute()),
        );
      }
      if (rows.length <= limit) {
        let read = ofUser(userId).where('read_at', 'is not', null);
        if (cursor?.read) read = read.where('id', '<', cursor.before);
        rows.push(
          ...(await read
            .orderBy('id', 'desc')
            .limit(limit + 1 - rows.length)
            .execute()),
        );
      }
      return rows;
    },

    async unreadCount(userId: string): Promise<number> {
      const row = await db
        .selectFrom('notifications')
        .select((eb) => eb.fn.countAll<number | string>().as('n'))
        .where('user_id', '=', userId)
        .where('read_at', 'is', null)
        .executeTakeFirst();
      // PostgreSQL counts in bigint, which its driver hands over as a string.
      return Number(row?.n ?? 0);
    },

    /** Marks one of the user's notifications read; false when the user has no such notification. */
    async markRead(userId: string, id: string, now: number): Promise<boolean> {
      const exists = await db
        .selectFrom('notifications')
        .select('id')
        .where('user_id', '=', userId)
        .where('id', '=', id)
        .executeTakeFirst();
      if (!exists) return false;
      await db
        .updateTable('notifications')
        .set({ read_at: now })
        .where('user_id', '=', userId)
        .where('id', '=', id)
        .where('read_at', 'is', null)
        .execute();
      return true;
    },

    async markAllRead(userId: string, now: number): Promise<number> {
      const result = await db
        .updateTable('notifications')
        .set({ read_at: now })
        .where('user_id', '=', userId)
        .where('read_at', 'is', null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows);
    },

    /** Records a device for the user; true when it was not known before. */
    async rememberDevice(userId: string, deviceKey: string, now: number): Promise<boolean> {
      const result = await db
        .insertInto('user_devices')
        .values({ user_id: userId, device_key: deviceKey, first_seen_at: now })
        .onConflict((oc) => oc.columns(['user_id', 'device_key']).doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
    },

    async knowsAnyDevice(userId: string): Promise<boolean> {
      const row = await db
        .selectFrom('user_devices')
        .select('device_key')
        .where('user_id', '=', userId)
        .limit(1)
        .executeTakeFirst();
      return row !== undefined;
    },

    orgName: async (orgId: string) =>
      (await db.selectFrom('orgs').select('name').where('id', '=', orgId).executeTakeFirst())?.name,

    /**
     * Live API keys ending between `now` and `until`, across organizations (a sweep), with their
     * organization's name for the notice.
     */
    expiringApiKeys: (now: number, until: number) =>
      db
        .selectFrom('api_keys')
        .innerJoin('orgs', 'orgs.id', 'api_keys.org_id')
        .select([
          'api_keys.id',
          'api_keys.user_id',
          'api_keys.name',
          'api_keys.expires_at',
          'orgs.name as org_name',
        ])
        .where('api_keys.revoked_at', 'is', null)
        .where('api_keys.expires_at', '>', now)
        .where('api_keys.expires_at', '<=', until)
        .execute(),
  };
}

export type NotificationsStore = ReturnType<typeof createNotificationsStore>;
export type NotificationsStoreIn = ReturnType<typeof notificationsStoreOn>;
