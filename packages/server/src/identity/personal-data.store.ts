import type { Kysely } from 'kysely';
import type { AuditEventRow } from '../audit/audit.chain.js';
import type { DB } from '../db/schema.js';

/**
 * What the database holds about one person (DATA-2): read for an export, deleted for an erasure.
 * `orgId` limits a read to what one organization holds (an owner's export of a member).
 */
export function createPersonalDataStore(db: Kysely<DB>) {
  return {
    user: (userId: string) => db.selectFrom('users').selectAll().where('id', '=', userId).executeTakeFirst(),

    memberships: (userId: string, orgId?: string) => {
      let q = db
        .selectFrom('memberships')
        .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
        .select(['orgs.id as org_id', 'orgs.slug', 'orgs.name', 'memberships.role', 'memberships.created_at'])
        .where('memberships.user_id', '=', userId);
      if (orgId) q = q.where('memberships.org_id', '=', orgId);
      return q.orderBy('memberships.created_at').execute();
    },

    teams: (userId: string, orgId?: string) => {
      let q = db
        .selectFrom('team_members')
        .innerJoin('teams', 'teams.id', 'team_members.team_id')
        .select(['teams.id', 'teams.org_id', 'teams.name', 'team_members.created_at'])
        .where('team_members.user_id', '=', userId);
      if (orgId) q = q.where('team_members.org_id', '=', orgId);
      return q.orderBy('team_members.created_at').execute();
    },

    /** Factor metadata only: the seed, public key and credential id never leave. */
    factors: (userId: string) =>
      db
        .selectFrom('mfa_factors')
        .select(['id', 'type', 'name', 'created_at', 'confirmed_at', 'last_used_at'])
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .execute(),

    recoveryCodes: (userId: string) =>
      db
        .selectFrom('recovery_codes')
        .select(['created_at', 'used_at'])
        .where('user_id', '=', userId)
        .execute(),

    sessions: (userId: string) =>
      db
        .selectFrom('sessions')
        .select([
          'id',
          'created_at',
          'last_seen_at',
          'expires_at',
          'revoked_at',
          'revoked_reason',
          'ip',
          'user_agent',
        ])
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .execute(),

    devices: (userId: string) =>
      db
        .selectFrom('user_devices')
        .select(['device_key', 'first_seen_at'])
        .where('user_id', '=', userId)
        .orderBy('first_seen_at')
        .execute(),

    /** Key metadata only: the token hash and hint never leave. */
    apiKeys: (userId: string, orgId?: string) => {
      let q = db
        .selectFrom('api_keys')
        .select([
          'id',
          'org_id',
          'name',
          'permissions',
          'created_at',
          'expires_at',
          'last_used_at',
          'last_used_ip',
          'revoked_at',
        ])
        .where('user_id', '=', userId);
      if (orgId) q = q.where('org_id', '=', orgId);
      return q.orderBy('created_at').execute();
    },

    ssoIdentities: (userId: string) =>
      db
        .selectFrom('sso_identities')
        .select(['issuer', 'subject', 'created_at', 'last_sign_in_at'])
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .execute(),

    notifications: (userId: string) =>
      db
        .selectFrom('notifications')
        .select(['kind', 'title', 'body', 'created_at', 'read_at'])
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .execute(),

    /**
     * Audit events about the person (as the user who acted, or the user acted on), newest first, at
     * most `limit`; in one organization's chain when `orgId` is given. Matched on ids, never on the
     * sealed display columns.
     */
    auditEvents: (userId: string, limit: number, orgId?: string): Promise<AuditEventRow[]> => {
      let q = db
        .selectFrom('audit_events')
        .selectAll()
        .where((eb) =>
          eb.or([
            eb.and([eb('actor_type', '=', 'user'), eb('actor_id', '=', userId)]),
            eb.and([eb('target_type', '=', 'user'), eb('target_id', '=', userId)]),
          ]),
        );
      if (orgId) q = q.where('chain_id', '=', orgId);
      return q.orderBy('ts', 'desc').orderBy('id', 'desc').limit(limit).execute();
    },

    /** The person's keys not yet revoked (what erasure records as revoked when it deletes them). */
    openApiKeys: (userId: string) =>
      db
        .selectFrom('api_keys')
        .select(['id', 'org_id'])
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .execute(),

    /** The organizations the person belongs to, with whether they are its only owner. */
    async orgsOf(
      userId: string,
    ): Promise<Array<{ orgId: string; slug: string; role: string; soleOwner: boolean }>> {
      const rows = await db
        .selectFrom('memberships as m')
        .innerJoin('orgs', 'orgs.id', 'm.org_id')
        .select((eb) => [
          'm.org_id',
          'orgs.slug',
          'm.role',
          eb
            .selectFrom('memberships as o')
            .select((c) => c.fn.countAll<number>().as('n'))
            .whereRef('o.org_id', '=', 'm.org_id')
            .where('o.role', '=', 'owner')
            .as('owners'),
        ])
        .where('m.user_id', '=', userId)
        .execute();
      return rows.map((row) => ({
        orgId: row.org_id,
        slug: row.slug,
        role: row.role,
        soleOwner: row.role === 'owner' && Number(row.owners) <= 1,
      }));
    },

    /**
     * Deletes everything held about the person but the audit log (whose personal fields the caller
     * shreds) and the ids other records keep (who created a secret, requested a command), which name
     * nobody once the account is gone. Explicit deletes rather than cascades: every row is accounted
     * for here, whatever a later migration's foreign keys say.
     */
    async erase(userId: string, email: string): Promise<{ sessionsEnded: number; memberships: number }> {
      const sessions = await db.selectFrom('sessions').select('id').where('user_id', '=', userId).execute();
      const sessionIds = sessions.map((row) => row.id);
      const live = await db
        .selectFrom('sessions')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .executeTakeFirstOrThrow();
      if (sessionIds.length > 0) {
        await db.deleteFrom('webauthn_challenges').where('session_id', 'in', sessionIds).execute();
        await db.deleteFrom('live_tickets').where('session_id', 'in', sessionIds).execute();
        await db
          .updateTable('sso_sign_ins')
          .set({ step_up_session_id: null })
          .where('step_up_session_id', 'in', sessionIds)
          .execute();
      }
      await db.deleteFrom('live_tickets').where('user_id', '=', userId).execute();
      await db.deleteFrom('sessions').where('user_id', '=', userId).execute();
      await db.deleteFrom('notifications').where('user_id', '=', userId).execute();
      // Mail waiting for them names their address (and sealed, its text).
      await db
        .deleteFrom('email_outbox')
        .where((eb) => eb.or([eb('user_id', '=', userId), eb('recipient', '=', email.toLowerCase())]))
        .execute();
      await db.deleteFrom('user_devices').where('user_id', '=', userId).execute();
      await db.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
      await db.deleteFrom('mfa_factors').where('user_id', '=', userId).execute();
      await db.deleteFrom('sso_identities').where('user_id', '=', userId).execute();
      await db.deleteFrom('scim_users').where('user_id', '=', userId).execute();
      await db.deleteFrom('team_members').where('user_id', '=', userId).execute();
      await db
        .deleteFrom('role_bindings')
        .where('subject_type', '=', 'user')
        .where('subject_id', '=', userId)
        .execute();
      // Keys acting for the person die with them (they hold the last address each was used from).
      await db.deleteFrom('api_keys').where('user_id', '=', userId).execute();
      // Invitations to their address (pending or accepted) hold the address itself.
      await db.deleteFrom('invitations').where('email', '=', email.toLowerCase()).execute();
      await db
        .updateTable('invitations')
        .set({ accepted_by: null })
        .where('accepted_by', '=', userId)
        .execute();
      await db
        .updateTable('orgs')
        .set({ break_glass_user_id: null })
        .where('break_glass_user_id', '=', userId)
        .execute();
      const memberships = await db.deleteFrom('memberships').where('user_id', '=', userId).executeTakeFirst();
      await db.deleteFrom('users').where('id', '=', userId).execute();
      return { sessionsEnded: Number(live.n), memberships: Number(memberships.numDeletedRows) };
    },
  };
}

export type PersonalDataStore = ReturnType<typeof createPersonalDataStore>;
