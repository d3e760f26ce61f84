import { type Kysely, sql } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import type { BindingSubject, DB, RoleBindingsTable, RolesTable } from '../db/schema.js';
import type { CustomRole, Grant } from './authorize.js';

export type RoleRow = RolesTable;
export type RoleBindingRow = RoleBindingsTable;

function customRoleOf(row: RoleRow): CustomRole {
  return {
    id: row.id,
    name: row.name,
    permissions: JSON.parse(row.permissions) as string[],
    includes: JSON.parse(row.includes) as string[],
  };
}

/** Roles, role bindings, and the grants of one member; every query names its organization. */
export function createAccessStore(db: Kysely<DB>) {
  async function customRoles(orgId: string): Promise<Map<string, CustomRole>> {
    const rows = await db.selectFrom('roles').selectAll().where('org_id', '=', orgId).execute();
    return new Map(rows.map((row) => [row.id, customRoleOf(row)]));
  }

  // The two reads of every request in an organization (the guard loads the caller's access each time).
  const orgWithMembership = compiledOnce(db, (args: { slug: string; userId: string }) =>
    db
      .selectFrom('orgs')
      .leftJoin('memberships', (join) =>
        join.onRef('memberships.org_id', '=', 'orgs.id').on('memberships.user_id', '=', args.userId),
      )
      .select([
        'orgs.id',
        'orgs.slug',
        'orgs.name',
        'orgs.mfa_required',
        'orgs.sso_required',
        'orgs.break_glass_user_id',
        'memberships.role',
      ])
      .where('orgs.slug', '=', args.slug),
  );
  const bindingGrants = compiledOnce(db, (args: { orgId: string; userId: string }) =>
    db
      .selectFrom('role_bindings')
      .leftJoin('teams', 'teams.id', 'role_bindings.subject_id')
      .select([
        'role_bindings.id',
        'role_bindings.role',
        'role_bindings.selector',
        'role_bindings.subject_type',
        'teams.name as team_name',
      ])
      .where('role_bindings.org_id', '=', args.orgId)
      .where((eb) =>
        eb.or([
          eb.and([
            eb('role_bindings.subject_type', '=', 'user'),
            eb('role_bindings.subject_id', '=', args.userId),
          ]),
          eb.and([
            eb('role_bindings.subject_type', '=', 'team'),
            eb(
              'role_bindings.subject_id',
              'in',
              eb
                .selectFrom('team_members')
                .select('team_id')
                .where('team_members.org_id', '=', args.orgId)
                .where('team_members.user_id', '=', args.userId),
            ),
          ]),
        ]),
      ),
  );

  return {
    /** The organization a slug names, with the caller's membership role in it (undefined: not a member). */
    orgWithMembership: (slug: string, userId: string) => orgWithMembership.first({ slug, userId }),

    /** The role bindings that reach a user, directly or through their teams. */
    async bindingGrantsOf(orgId: string, userId: string): Promise<Grant[]> {
      const rows = await bindingGrants.all({ orgId, userId });
      return rows.map((row) => ({
        role: row.role,
        selector: row.selector,
        via:
          row.subject_type === 'team'
            ? `binding ${row.id} through team ${row.team_name}`
            : `binding ${row.id}`,
      }));
    },

    customRoles,

    listRoles: (orgId: string) =>
      db.selectFrom('roles').selectAll().where('org_id', '=', orgId).orderBy('name').execute(),
    findRole: (orgId: string, roleId: string) =>
      db
        .selectFrom('roles')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', roleId)
        .executeTakeFirst(),
    async insertRole(row: RoleRow): Promise<void> {
      await db.insertInto('roles').values(row).execute();
    },
    async updateRole(
      orgId: string,
      roleId: string,
      changes: Partial<Pick<RoleRow, 'name' | 'description' | 'permissions' | 'includes'>>,
      now: number,
    ): Promise<void> {
      await db
        .updateTable('roles')
        .set({ ...changes, updated_at: now })
        .where('org_id', '=', orgId)
        .where('id', '=', roleId)
        .execute();
    },
    async deleteRole(orgId: string, roleId: string): Promise<void> {
      await db.deleteFrom('role_bindings').where('org_id', '=', orgId).where('role', '=', roleId).execute();
      await db.deleteFrom('roles').where('org_id', '=', orgId).where('id', '=', roleId).execute();
    },
    /** Where a role is used: memberships and pending invitations that hold it, roles that include it. */
    async roleUse(orgId: string, roleId: string) {
      const count = async (table: 'memberships' | 'invitations') => {
        let query = db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll().as('n'))
          .where('org_id', '=', orgId)
          .where('role', '=', roleId);
        if (table === 'invitations')
          query = query.where('accepted_at', 'is', null).where('revoked_at', 'is', null);
        return Number((await query.executeTakeFirstOrThrow()).n);
      };
      const roles = [...(await customRoles(orgId)).values()];
      return {
        members: await count('memberships'),
        invitations: await count('invitations'),
        includedBy: roles.filter((role) => role.includes.includes(roleId)).map((role) => role.name),
      };
    },

    async subjectExists(orgId: string, type: BindingSubject, id: string): Promise<boolean> {
      const row =
        type === 'user'
          ? await db
              .selectFrom('memberships')
              .select('user_id as id')
              .where('org_id', '=', orgId)
              .where('user_id', '=', id)
              .executeTakeFirst()
          : await db
              .selectFrom('teams')
              .select('id')
              .where('org_id', '=', orgId)
              .where('id', '=', id)
              .executeTakeFirst();
      return row !== undefined;
    },

    listBindings: (orgId: string) =>
      db
        .selectFrom('role_bindings')
        .selectAll()
        .where('org_id', '=', orgId)
        .orderBy('created_at')
        .orderBy('id')
        .execute(),
    findBinding: (orgId: string, bindingId: string) =>
      db
        .selectFrom('role_bindings')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', bindingId)
        .executeTakeFirst(),
    async insertBinding(row: RoleBindingRow): Promise<void> {
      await db.insertInto('role_bindings').values(row).execute();
    },
    async deleteBinding(orgId: string, bindingId: string): Promise<void> {
      await db.deleteFrom('role_bindings').where('org_id', '=', orgId).where('id', '=', bindingId).execute();
    },
    /** Roles bound to a team, for the rule that adding someone to a team must not grant more than the adder holds. */
    teamRoles: async (orgId: string, teamId: string) =>
      (
        await db
          .selectFrom('role_bindings')
          .select('role')
          .where('org_id', '=', orgId)
          .where('subject_type', '=', 'team')
          .where('subject_id', '=', teamId)
          .execute()
      ).map((row) => row.role),
    /**
     * Takes PostgreSQL's row lock on the organization for the rest of the transaction, so two
     * concurrent demotions cannot each see "another owner remains" (SQLite's BEGIN IMMEDIATE already
     * serializes writers; there this is a no-op update).
     */
    async lockOrg(orgId: string): Promise<void> {
      await sql`update orgs set id = id where id = ${orgId}`.execute(db);
    },
  };
}

export type AccessStore = ReturnType<typeof createAccessStore>;
