import type { Kysely } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import type { DB, TeamsTable } from '../db/schema.js';

export type TeamRow = TeamsTable;

/** Teams and their members (ACC-6); every query names its organization. */
export function createTeamsStore(db: Kysely<DB>) {
  const teamsOfMembers = compiledOnce(db, (args: { orgId: string }) =>
    db
      .selectFrom('team_members')
      .innerJoin('teams', 'teams.id', 'team_members.team_id')
      .select(['team_members.user_id', 'teams.id', 'teams.name'])
      .where('team_members.org_id', '=', args.orgId)
      .orderBy('teams.name'),
  );

  return {
    list: (orgId: string) =>
      db.selectFrom('teams').selectAll().where('org_id', '=', orgId).orderBy('name').execute(),
    /** Which teams each member of the organization is in, teams in name order, for the members list. */
    teamsOfMembers: (orgId: string) => teamsOfMembers.all({ orgId }),
    /** Every team member of the organization, for list views. */
    members: (orgId: string) =>
      db
        .selectFrom('team_members')
        .innerJoin('users', 'users.id', 'team_members.user_id')
        .select(['team_members.team_id', 'users.id', 'users.email'])
        .where('team_members.org_id', '=', orgId)
        .orderBy('users.email')
        .execute(),
    find: (orgId: string, teamId: string) =>
      db
        .selectFrom('teams')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', teamId)
        .executeTakeFirst(),
    findByName: (orgId: string, name: string) =>
      db
        .selectFrom('teams')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('name', '=', name)
        .executeTakeFirst(),
    async insert(row: TeamRow): Promise<void> {
      await db.insertInto('teams').values(row).execute();
    },
    async update(orgId: string, teamId: string, changes: Partial<Pick<TeamRow, 'name' | 'description'>>) {
      await db
        .updateTable('teams')
        .set(changes)
        .where('org_id', '=', orgId)
        .where('id', '=', teamId)
        .execute();
    },
    async delete(orgId: string, teamId: string): Promise<void> {
      await db
        .deleteFrom('role_bindings')
        .where('org_id', '=', orgId)
        .where('subject_type', '=', 'team')
        .where('subject_id', '=', teamId)
        .execute();
      await db.deleteFrom('teams').where('org_id', '=', orgId).where('id', '=', teamId).execute();
    },
    /** Adds a member; false when they were already in the team. */
    async addMember(orgId: string, teamId: string, userId: string, now: number): Promise<boolean> {
      const existing = await db
        .selectFrom('team_members')
        .select('user_id')
        .where('team_id', '=', teamId)
        .where('user_id', '=', userId)
        .executeTakeFirst();
      if (existing) return false;
      await db
        .insertInto('team_members')
        .values({ org_id: orgId, team_id: teamId, user_id: userId, created_at: now })
        .execute();
      return true;
    },
    async removeMember(orgId: string, teamId: string, userId: string): Promise<boolean> {
      const result = await db
        .deleteFrom('team_members')
        .where('org_id', '=', orgId)
        .where('team_id', '=', teamId)
        .where('user_id', '=', userId)
        .executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },
  };
}

export type TeamsStore = ReturnType<typeof createTeamsStore>;
