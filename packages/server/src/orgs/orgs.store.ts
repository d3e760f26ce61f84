import type { Insertable, Kysely } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import type { DB, MembershipsTable, OrgsTable } from '../db/schema.js';

/** Organizations and memberships; every member query names its organization. */
export function createOrgsStore(db: Kysely<DB>) {
  // The members list is the console's most frequent organization read.
  const members = compiledOnce(db, (args: { orgId: string }) =>
    db
      .selectFrom('memberships')
      .innerJoin('users', 'users.id', 'memberships.user_id')
      .select([
        'users.id',
        'users.email',
        'users.display_name',
        'users.status',
        'memberships.role',
        'memberships.created_at',
      ])
      .where('memberships.org_id', '=', args.orgId)
      .orderBy('users.email'),
  );

  return {
    async insertOrg(row: Insertable<OrgsTable>): Promise<void> {
      await db.insertInto('orgs').values(row).execute();
    },
    findOrgById: (id: string) => db.selectFrom('orgs').selectAll().where('id', '=', id).executeTakeFirst(),
    findOrgBySlug: (slug: string) =>
      db.selectFrom('orgs').selectAll().where('slug', '=', slug).executeTakeFirst(),
    async insertMembership(row: MembershipsTable): Promise<void> {
      await db.insertInto('memberships').values(row).execute();
    },
    /** The organizations a user belongs to, with their role in each. */
    membershipsOf: (userId: string) =>
      db
        .selectFrom('memberships')
        .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
        .select([
          'orgs.id as orgId',
          'orgs.slug',
          'orgs.name',
          'memberships.role',
          'orgs.mfa_required as mfaRequired',
        ])
        .where('memberships.user_id', '=', userId)
        .orderBy('orgs.slug')
        .execute(),
    listMembers: (orgId: string) => members.all({ orgId }),
    async setSsoEnforcement(
      orgId: string,
      required: boolean,
      breakGlassUserId: string | null,
    ): Promise<void> {
      await db
        .updateTable('orgs')
        .set({ sso_required: required ? 1 : 0, break_glass_user_id: breakGlassUserId })
        .where('id', '=', orgId)
        .execute();
    },
    /** The organizations requiring SSO whose break-glass owner this user is. */
    breakGlassOrgsOf: (userId: string) =>
      db
        .selectFrom('orgs')
        .select(['id', 'slug'])
        .where('break_glass_user_id', '=', userId)
        .where('sso_required', '=', 1)
        .execute(),
    async setMfaRequired(orgId: string, required: boolean): Promise<void> {
      await db
        .updateTable('orgs')
        .set({ mfa_required: required ? 1 : 0 })
        .where('id', '=', orgId)
        .execute();
    },
    findMember: (orgId: string, userId: string) =>
      db
        .selectFrom('memberships')
        .innerJoin('users', 'users.id', 'memberships.user_id')
        .select(['users.id', 'users.email', 'users.display_name', 'users.status', 'memberships.role'])
        .where('memberships.org_id', '=', orgId)
        .where('memberships.user_id', '=', userId)
        .executeTakeFirst(),
    async setRole(orgId: string, userId: string, role: string): Promise<void> {
      await db
        .updateTable('memberships')
        .set({ role })
        .where('org_id', '=', orgId)
        .where('user_id', '=', userId)
        .execute();
    },
    async countOwners(orgId: string): Promise<number> {
      const row = await db
        .selectFrom('memberships')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('org_id', '=', orgId)
        .where('role', '=', 'owner')
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },
    /** Removes a member and everything that gave them access here: team places and direct bindings. */
    async removeMember(orgId: string, userId: string): Promise<void> {
      await db.deleteFrom('team_members').where('org_id', '=', orgId).where('user_id', '=', userId).execute();
      await db
        .deleteFrom('role_bindings')
        .where('org_id', '=', orgId)
        .where('subject_type', '=', 'user')
        .where('subject_id', '=', userId)
        .execute();
      await db.deleteFrom('memberships').where('org_id', '=', orgId).where('user_id', '=', userId).execute();
    },
  };
}

export type OrgsStore = ReturnType<typeof createOrgsStore>;
