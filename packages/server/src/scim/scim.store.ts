import type { Kysely } from 'kysely';
import { readAcrossOrgs } from '../db/org-scope.js';
import type { DB, ScimConfigsTable, ScimGroupsTable, ScimUsersTable } from '../db/schema.js';

export type ScimConfigRow = ScimConfigsTable;
export type ScimUserRow = ScimUsersTable;
export type ScimGroupRow = ScimGroupsTable;

/** A person as SCIM sees them: the account, their membership if they are a member, and SCIM's record. */
export interface ScimPersonRow {
  id: string;
  email: string;
  display_name: string;
  status: string;
  user_created_at: number;
  user_updated_at: number;
  role: string | null;
  user_name: string | null;
  external_id: string | null;
  owned: number | null;
  role_when_active: string | null;
}

/** SCIM provisioning state; every query names its organization. */
export function createScimStore(db: Kysely<DB>) {
  /** The organization's members and the people SCIM deactivated there. */
  const people = (orgId: string) =>
    db
      .selectFrom('users')
      .leftJoin('memberships', (join) =>
        join.onRef('memberships.user_id', '=', 'users.id').on('memberships.org_id', '=', orgId),
      )
      .leftJoin('scim_users', (join) =>
        join.onRef('scim_users.user_id', '=', 'users.id').on('scim_users.org_id', '=', orgId),
      )
      .select([
        'users.id',
        'users.email',
        'users.display_name',
        'users.status',
        'users.created_at as user_created_at',
        'users.updated_at as user_updated_at',
        'memberships.role',
        'scim_users.user_name',
        'scim_users.external_id',
        'scim_users.owned',
        'scim_users.role_when_active',
      ])
      .where((eb) =>
        eb.or([eb('memberships.org_id', 'is not', null), eb('scim_users.org_id', 'is not', null)]),
      );

  return {
    config: (orgId: string) =>
      db.selectFrom('scim_configs').selectAll().where('org_id', '=', orgId).executeTakeFirst(),
    configByTokenHash: (hash: string) =>
      db
        .selectFrom('scim_configs')
        .innerJoin('orgs', 'orgs.id', 'scim_configs.org_id')
        .selectAll('scim_configs')
        .select('orgs.slug as org_slug')
        .where('token_hash', '=', hash)
        .executeTakeFirst(),
    async putConfig(row: ScimConfigRow): Promise<void> {
      await db
        .insertInto('scim_configs')
        .values(row)
        .onConflict((oc) => oc.column('org_id').doUpdateSet(row))
        .execute();
    },
    async deleteConfig(orgId: string): Promise<boolean> {
      const result = await db.deleteFrom('scim_configs').where('org_id', '=', orgId).executeTakeFirst();
      return result.numDeletedRows > 0n;
    },
    async touchConfig(orgId: string, at: number): Promise<void> {
      await db.updateTable('scim_configs').set({ last_used_at: at }).where('org_id', '=', orgId).execute();
    },

    people: (orgId: string) => people(orgId).orderBy('users.created_at').orderBy('users.id').execute(),
    person: (orgId: string, userId: string) =>
      people(orgId).where('users.id', '=', userId).executeTakeFirst(),
    userRecord: (orgId: string, userId: string) =>
      db
        .selectFrom('scim_users')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('user_id', '=', userId)
        .executeTakeFirst(),
    async putUserRecord(row: ScimUserRow): Promise<void> {
      await db
        .insertInto('scim_users')
        .values(row)
        .onConflict((oc) => oc.columns(['org_id', 'user_id']).doUpdateSet(row))
        .execute();
    },
    async deleteUserRecord(orgId: string, userId: string): Promise<void> {
      await db.deleteFrom('scim_users').where('org_id', '=', orgId).where('user_id', '=', userId).execute();
    },
    /** The people whose accounts this organization's SCIM created. */
    createdHere: (orgId: string) =>
      db
        .selectFrom('scim_users')
        .select('user_id')
        .where('org_id', '=', orgId)
        .where('owned', '=', 1)
        .execute(),
    /**
     * How many organizations the person belongs to, every one of them (not only the SCIM token's,
     * whose scope the request runs in): SCIM changes or disables an account only when it is theirs alone.
     */
    async membershipCount(userId: string): Promise<number> {
      const row = await readAcrossOrgs(db, (across) =>
        across
          .selectFrom('memberships')
          .select((eb) => eb.fn.countAll<number | string | bigint>().as('n'))
          .where('user_id', '=', userId)
          .executeTakeFirstOrThrow(),
      );
      return Number(row.n);
    },

    /** The teams SCIM manages, with their members. */
    groups: (orgId: string) =>
      db
        .selectFrom('scim_groups')
        .innerJoin('teams', 'teams.id', 'scim_groups.team_id')
        .select([
          'teams.id',
          'teams.name',
          'scim_groups.external_id',
          'scim_groups.created_at',
          'scim_groups.updated_at',
        ])
        .where('scim_groups.org_id', '=', orgId)
        .orderBy('scim_groups.created_at')
        .orderBy('teams.id')
        .execute(),
    groupMembers: (orgId: string) =>
      db
        .selectFrom('team_members')
        .innerJoin('scim_groups', 'scim_groups.team_id', 'team_members.team_id')
        .innerJoin('users', 'users.id', 'team_members.user_id')
        .select(['team_members.team_id', 'users.id', 'users.email'])
        .where('team_members.org_id', '=', orgId)
        .orderBy('users.email')
        .execute(),
    async insertGroup(row: ScimGroupRow): Promise<void> {
      await db.insertInto('scim_groups').values(row).execute();
    },
    async touchGroup(
      orgId: string,
      teamId: string,
      changes: Pick<ScimGroupRow, 'external_id' | 'updated_at'>,
    ) {
      await db
        .updateTable('scim_groups')
        .set(changes)
        .where('org_id', '=', orgId)
        .where('team_id', '=', teamId)
        .execute();
    },
  };
}

export type ScimStore = ReturnType<typeof createScimStore>;
