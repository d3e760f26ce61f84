import type { Kysely } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import type { DB, SessionsTable } from '../db/schema.js';
import { mfaEnrolledOf } from '../mfa/mfa.store.js';

export type SessionRow = SessionsTable;

export function createSessionsStore(db: Kysely<DB>) {
  return {
    ...sessionsStoreOn(db),
    /** This store, writing inside `trx`: for changes that commit with their audit events (AUD-7). */
    inTransaction: (trx: Kysely<DB>) => sessionsStoreOn(trx),
  };
}

export type SessionsStoreIn = ReturnType<typeof sessionsStoreOn>;

function sessionsStoreOn(db: Kysely<DB>) {
  // Every authenticated request runs this one.
  const liveSession = compiledOnce(db, (args: { tokenHash: string }) =>
    db
      .selectFrom('sessions')
      .innerJoin('users', 'users.id', 'sessions.user_id')
      .leftJoin('sso_connections', 'sso_connections.id', 'sessions.sso_connection_id')
      .selectAll('sessions')
      .select(['users.email', 'users.display_name', 'users.status', 'users.password_change_required_at'])
      .select('sso_connections.org_id as sso_org_id')
      .select(mfaEnrolledOf('sessions.user_id'))
      .where('sessions.token_hash', '=', args.tokenHash)
      .where('sessions.revoked_at', 'is', null),
  );

  return {
    async insert(row: SessionRow): Promise<void> {
      await db.insertInto('sessions').values(row).execute();
    },
    /** The live session with this token hash, joined with its user. */
    findLive: (tokenHash: string) => liveSession.first({ tokenHash }),
    /** A user's sessions that have not been ended (the service filters out the idle and expired). */
    listOpen: (userId: string) =>
      db
        .selectFrom('sessions')
        .select(['id', 'created_at', 'last_seen_at', 'expires_at', 'authenticated_at', 'ip', 'user_agent'])
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .orderBy('last_seen_at', 'desc')
        .execute(),
    /**
     * A user's live sessions of one kind (waiting for a second factor or not) but `exceptId`, newest
     * first: what the per-user limit counts.
     */
    liveOthersOf: (
      userId: string,
      exceptId: string,
      live: { secondFactorPending: boolean; now: number; idleMs: number },
    ) =>
      db
        .selectFrom('sessions')
        .select('id')
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .where('id', '!=', exceptId)
        .where('second_factor_pending', '=', live.secondFactorPending ? 1 : 0)
        .where('expires_at', '>', live.now)
        .where('last_seen_at', '>', live.now - live.idleMs)
        .orderBy('created_at', 'desc')
        .orderBy('id', 'desc')
        .execute(),
    findOpenOf: (userId: string, id: string) =>
      db
        .selectFrom('sessions')
        .selectAll()
        .where('user_id', '=', userId)
        .where('id', '=', id)
        .where('revoked_at', 'is', null)
        .executeTakeFirst(),
    async touch(id: string, now: number): Promise<void> {
      await db.updateTable('sessions').set({ last_seen_at: now }).where('id', '=', id).execute();
    },
    /** Ends a live session; returns whether this call did (a concurrent end wins otherwise). */
    async revoke(id: string, now: number, reason: string): Promise<boolean> {
      const result = await db
        .updateTable('sessions')
        .set({ revoked_at: now, revoked_reason: reason })
        .where('id', '=', id)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },
    /** Ends every live session of every user (an instance administrator's emergency stop). */
    async revokeEveryone(now: number, reason: string): Promise<number> {
      const result = await db
        .updateTable('sessions')
        .set({ revoked_at: now, revoked_reason: reason })
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows);
    },
    /** Ends every live session of a user, except one when given; returns how many ended. */
    async revokeAllOf(userId: string, now: number, reason: string, exceptId?: string): Promise<number> {
      let query = db
        .updateTable('sessions')
        .set({ revoked_at: now, revoked_reason: reason })
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null);
      if (exceptId) query = query.where('id', '!=', exceptId);
      const result = await query.executeTakeFirst();
      return Number(result.numUpdatedRows);
    },
  };
}

export type SessionsStore = ReturnType<typeof createSessionsStore>;
