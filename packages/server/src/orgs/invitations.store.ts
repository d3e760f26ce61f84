import type { Kysely } from 'kysely';
import type { DB, InvitationsTable } from '../db/schema.js';

export type InvitationRow = InvitationsTable;

export function createInvitationsStore(db: Kysely<DB>) {
  return {
    async insert(row: InvitationRow): Promise<void> {
      await db.insertInto('invitations').values(row).execute();
    },
    /** Invitations not yet accepted or revoked (expired ones included: the list shows them as expired). */
    listOpen: (orgId: string) =>
      db
        .selectFrom('invitations')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .orderBy('created_at', 'desc')
        .execute(),
    find: (orgId: string, id: string) =>
      db
        .selectFrom('invitations')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst(),
    findPendingFor: (orgId: string, email: string, now: number) =>
      db
        .selectFrom('invitations')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('email', '=', email)
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .executeTakeFirst(),
    /** The invitation a token opens, if it can still be accepted. */
    findUsable: (tokenHash: string, now: number) =>
      db
        .selectFrom('invitations')
        .innerJoin('orgs', 'orgs.id', 'invitations.org_id')
        .selectAll('invitations')
        .select(['orgs.slug as org_slug', 'orgs.name as org_name'])
        .where('invitations.token_hash', '=', tokenHash)
        .where('invitations.accepted_at', 'is', null)
        .where('invitations.revoked_at', 'is', null)
        .where('invitations.expires_at', '>', now)
        .executeTakeFirst(),
    /** Marks an invitation used; false when someone else used or revoked it first (single use). */
    /**
     * Takes the row lock of a usable invitation (an update that changes nothing), so that concurrent
     * acceptances of one invitation on PostgreSQL run one after the other and the later ones find it
     * used; false when it is not usable.
     */
    async lockUsable(id: string, now: number): Promise<boolean> {
      const result = await db
        .updateTable('invitations')
        .set((eb) => ({ expires_at: eb.ref('expires_at') }))
        .where('id', '=', id)
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    async consume(id: string, userId: string, now: number): Promise<boolean> {
      const result = await db
        .updateTable('invitations')
        .set({ accepted_at: now, accepted_by: userId })
        .where('id', '=', id)
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    /** Invitations the organization made since `since`, in any state (revoked ones were mailed too). */
    async countSince(orgId: string, since: number): Promise<number> {
      const row = await db
        .selectFrom('invitations')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('org_id', '=', orgId)
        .where('created_at', '>', since)
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },
    /** Whether the organization invited `email` since `since`, in any state. */
    async invitedSince(orgId: string, email: string, since: number): Promise<boolean> {
      const row = await db
        .selectFrom('invitations')
        .select('id')
        .where('org_id', '=', orgId)
        .where('email', '=', email)
        .where('created_at', '>', since)
        .executeTakeFirst();
      return row !== undefined;
    },
    async revoke(orgId: string, id: string, now: number): Promise<boolean> {
      const result = await db
        .updateTable('invitations')
        .set({ revoked_at: now })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
  };
}

export type InvitationsStore = ReturnType<typeof createInvitationsStore>;
