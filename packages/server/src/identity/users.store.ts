import type { Kysely } from 'kysely';
import type { DB, UsersTable } from '../db/schema.js';

export type UserRow = UsersTable;

export function createUsersStore(db: Kysely<DB>) {
  return {
    ...usersStoreOn(db),
    /** This store, writing inside `trx`: for changes that commit with their audit events (AUD-7). */
    inTransaction: (trx: Kysely<DB>) => usersStoreOn(trx),
  };
}

function usersStoreOn(db: Kysely<DB>) {
  return {
    findByEmail: (email: string) =>
      db.selectFrom('users').selectAll().where('email', '=', email.toLowerCase()).executeTakeFirst(),
    findById: (id: string) => db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst(),
    async count(): Promise<number> {
      const row = await db
        .selectFrom('users')
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },
    async insert(row: UserRow): Promise<void> {
      await db.insertInto('users').values(row).execute();
    },
    async setStatus(id: string, status: UserRow['status'], now: number): Promise<void> {
      await db.updateTable('users').set({ status, updated_at: now }).where('id', '=', id).execute();
    },
    async setProfile(
      id: string,
      profile: Pick<UserRow, 'email' | 'display_name'>,
      now: number,
    ): Promise<void> {
      await db
        .updateTable('users')
        .set({ ...profile, email: profile.email.toLowerCase(), updated_at: now })
        .where('id', '=', id)
        .execute();
    },
    async setPassword(id: string, passwordHash: string, now: number, changeRequired: boolean): Promise<void> {
      await db
        .updateTable('users')
        .set({
          password_hash: passwordHash,
          password_changed_at: now,
          password_change_required_at: changeRequired ? now : null,
          updated_at: now,
        })
        .where('id', '=', id)
        .execute();
    },
  };
}

export type UsersStore = ReturnType<typeof createUsersStore>;
