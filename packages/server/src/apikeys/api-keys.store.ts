import type { Kysely } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import type { ApiKeysTable, DB } from '../db/schema.js';
import { mfaEnrolledOf } from '../mfa/mfa.store.js';

export type ApiKeyRow = ApiKeysTable;

/** A key found by its token, with what the guard needs about its member. */
export type ApiKeyWithOwner = ApiKeyRow & {
  email: string;
  user_status: string;
  password_change_required_at: number | null;
  mfa_enrolled: number | boolean;
};

export function createApiKeysStore(db: Kysely<DB>) {
  // Every request with a key runs this one.
  const byTokenHash = compiledOnce(db, (args: { hash: string }) =>
    db
      .selectFrom('api_keys')
      .innerJoin('users', 'users.id', 'api_keys.user_id')
      .selectAll('api_keys')
      .select(['users.email', 'users.status as user_status', 'users.password_change_required_at'])
      .select(mfaEnrolledOf('api_keys.user_id'))
      .where('api_keys.token_hash', '=', args.hash),
  );

  return {
    insert: async (row: ApiKeyRow) => {
      await db.insertInto('api_keys').values(row).execute();
    },

    list: (orgId: string) =>
      db
        .selectFrom('api_keys')
        .innerJoin('users', 'users.id', 'api_keys.user_id')
        .selectAll('api_keys')
        .select('users.email')
        .where('api_keys.org_id', '=', orgId)
        .orderBy('api_keys.created_at', 'desc')
        .execute(),

    find: (orgId: string, id: string) =>
      db
        .selectFrom('api_keys')
        .innerJoin('users', 'users.id', 'api_keys.user_id')
        .selectAll('api_keys')
        .select('users.email')
        .where('api_keys.org_id', '=', orgId)
        .where('api_keys.id', '=', id)
        .executeTakeFirst(),

    findByTokenHash: (hash: string): Promise<ApiKeyWithOwner | undefined> => byTokenHash.first({ hash }),

    /** Keys not yet revoked that a member holds in an organization. */
    openOfMember: (orgId: string, userId: string) =>
      db
        .selectFrom('api_keys')
        .select(['id', 'name'])
        .where('org_id', '=', orgId)
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .execute(),

    /** Keys not yet revoked that another key created. */
    openChildrenOf: (keyId: string) =>
      db
        .selectFrom('api_keys')
        .select(['id', 'name'])
        .where('parent_key_id', '=', keyId)
        .where('revoked_at', 'is', null)
        .execute(),

    /** Revokes a key still open; returns whether this call did (a concurrent revoke wins otherwise). */
    async revoke(id: string, at: number, reason: string): Promise<boolean> {
      const result = await db
        .updateTable('api_keys')
        .set({ revoked_at: at, revoked_reason: reason })
        .where('id', '=', id)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },

    async touch(id: string, at: number, ip: string | null): Promise<void> {
      await db
        .updateTable('api_keys')
        .set({ last_used_at: at, last_used_ip: ip })
        .where('id', '=', id)
        .execute();
    },
  };
}

export type ApiKeysStore = ReturnType<typeof createApiKeysStore>;
