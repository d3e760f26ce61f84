import { newId } from '@bulwark/protocol';
import type { Kysely, Transaction } from 'kysely';
import { createAccessStore } from '../access/access.store.js';
import type { Acting } from '../access/caller.js';
import { callerEvent } from '../access/caller.js';
import { isBuiltInRole } from '../access/permissions.js';
import { revokeKeysOfMember } from '../apikeys/api-keys.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import type { Transact } from '../audit/audited-transaction.js';
import type { DB } from '../db/schema.js';
import type { SessionsService } from '../identity/sessions.service.js';
import { createUsersStore, type UserRow } from '../identity/users.store.js';
import { createOrgsStore } from '../orgs/orgs.store.js';
import { createTeamsStore } from '../orgs/teams.store.js';
import { createScimStore, type ScimPersonRow, type ScimStore, type ScimUserRow } from './scim.store.js';
import { type GroupInput, groupInput, patched, type UserInput, userInput } from './scim-input.js';
import {
  assertVersion,
  groupResource,
  ScimError,
  type ScimGroup,
  type ScimUser,
  scimNotFound,
  userResource,
} from './scim-resources.js';
import { parseGroupRoles } from './scim-settings.service.js';

/** A SCIM request: the organization its token opens, and where SCIM's own addresses begin. */
export interface ScimCaller {
  orgId: string;
  /** The organization's SCIM base URL, for `meta.location`. */
  base: string;
  context: AuditRequestContext;
}

const SCIM_ACTOR = { type: 'scim' as const, id: 'scim', display: 'SCIM provisioning' };

const acting = (caller: ScimCaller): Acting => ({
  actor: SCIM_ACTOR,
  context: caller.context,
  org: { id: caller.orgId },
});

const userTarget = (user: { id: string; email: string }) => ({
  type: 'user',
  id: user.id,
  display: user.email,
});
const teamTarget = (team: { id: string; name: string }) => ({
  type: 'team',
  id: team.id,
  display: team.name,
});

type Tx = Transaction<DB>;

/**
 * SCIM 2.0 provisioning (SSO-5) of an organization by its identity provider: its members as Users,
 * the teams SCIM created as Groups.
 *
 * SCIM acts in its organization only. It changes an account itself (email, name, disabled) only when
 * it created it and the account belongs to no other organization; for anyone else it changes their
 * membership here, never the account: an identity provider of one organization cannot take over or
 * lock out a person of another. It never finds an existing account by email. Deprovisioning
 * (active=false or DELETE) removes the membership, ends the person's sessions and revokes their API
 * keys here in the same transaction. The break-glass owner and the last owner are out of its reach.
 */
export function createScimService(deps: {
  db: Kysely<DB>;
  sessions: SessionsService;
  transact: Transact;
  clock: () => number;
}) {
  const { sessions, transact, clock } = deps;
  const store = createScimStore(deps.db);

  async function groupsOfPeople(tx: ScimStore, orgId: string) {
    const byUser = new Map<string, Array<{ value: string; display: string }>>();
    const teams = new Map((await tx.groups(orgId)).map((team) => [team.id, team.name]));
    for (const row of await tx.groupMembers(orgId)) {
      const list = byUser.get(row.id) ?? [];
      list.push({ value: row.team_id, display: teams.get(row.team_id) ?? '' });
      byUser.set(row.id, list);
    }
    return byUser;
  }

  async function userOf(tx: ScimStore, caller: ScimCaller, userId: string): Promise<ScimUser> {
    const person = await tx.person(caller.orgId, userId);
    if (!person) throw scimNotFound('User');
    return userResource(person, (await groupsOfPeople(tx, caller.orgId)).get(userId) ?? [], caller.base);
  }

  async function groupOf(tx: ScimStore, caller: ScimCaller, teamId: string): Promise<ScimGroup> {
    const team = (await tx.groups(caller.orgId)).find((group) => group.id === teamId);
    if (!team) throw scimNotFound('Group');
    const members = (await tx.groupMembers(caller.orgId))
      .filter((row) => row.team_id === teamId)
      .map((row) => ({ value: row.id, display: row.email }));
    return groupResource(team, members, caller.base);
  }

  /** Why SCIM may not take this member's role or membership, or undefined. */
  async function protectedMember(trx: Tx, orgId: string, member: { id: string; role: string }) {
    const org = await createOrgsStore(trx).findOrgById(orgId);
    if (org?.break_glass_user_id === member.id)
      return 'This is the break-glass owner, who is managed in Bulwark, not by the identity provider.';
    if (member.role === 'owner' && (await createOrgsStore(trx).countOwners(orgId)) <= 1)
      return 'This is the last owner of the organization; make someone else owner first.';
    return undefined;
  }

  /**
   * The role SCIM gives a person: the first mapped group they are in, else `fallback` (the role they
   * had before SCIM deactivated them), else the default. Reads the organization's settings, groups
   * and custom roles once, for however many people a change touches; undefined without SCIM settings.
   */
  async function roleMapper(trx: Tx, orgId: string) {
    const tx = createScimStore(trx);
    const config = await tx.config(orgId);
    if (!config) return undefined;
    const mappings = parseGroupRoles(config.group_roles);
    const [groups, members, customRoles] = await Promise.all([
      tx.groups(orgId),
      tx.groupMembers(orgId),
      createAccessStore(trx).customRoles(orgId),
    ]);
    const groupName = new Map(groups.map((team) => [team.id, team.name]));
    return {
      mapsGroups: mappings.length > 0,
      roleOf(userId: string, fallback?: string): string {
        const names = new Set(
          members.filter((row) => row.id === userId).map((row) => groupName.get(row.team_id)),
        );
        // The role SCIM's own deactivation took away comes back (a member removed in the console has
        // no SCIM record left to bring back: members.service.ts).
        const role =
          mappings.find((mapping) => names.has(mapping.group))?.role ?? fallback ?? config.default_role;
        if (!isBuiltInRole(role) && !customRoles.has(role))
          throw new ScimError(
            409,
            undefined,
            `The role "${role}" SCIM gives no longer exists; an administrator must change the SCIM settings.`,
          );
        return role;
      },
    };
  }

  /** Group-to-role mappings, applied again when someone's groups change. */
  async function reapplyRoles(trx: Tx, events: AuditInput[], caller: ScimCaller, userIds: Iterable<string>) {
    const mapper = await roleMapper(trx, caller.orgId);
    if (!mapper?.mapsGroups) return;
    const orgs = createOrgsStore(trx);
    for (const userId of userIds) {
      const member = await orgs.findMember(caller.orgId, userId);
      const role = member && mapper.roleOf(userId);
      if (!member || !role || role === member.role) continue;
      if (await protectedMember(trx, caller.orgId, member)) continue;
      await orgs.setRole(caller.orgId, userId, role);
      events.push(
        callerEvent(acting(caller), 'member.role_changed', userTarget(member), {
          from: member.role,
          to: role,
          via: 'scim',
        }),
      );
    }
  }

  async function deactivate(trx: Tx, events: AuditInput[], caller: ScimCaller, person: ScimPersonRow) {
    const orgs = createOrgsStore(trx);
    const member = await orgs.findMember(caller.orgId, person.id);
    if (member) {
      const refusal = await protectedMember(trx, caller.orgId, member);
      if (refusal) throw new ScimError(400, 'mutability', refusal);
      const record = await createScimStore(trx).userRecord(caller.orgId, person.id);
      await createScimStore(trx).putUserRecord({
        ...(record ?? newRecord(caller.orgId, person, 0)),
        role_when_active: member.role,
        updated_at: clock(),
      });
      await orgs.removeMember(caller.orgId, person.id);
      events.push(
        callerEvent(acting(caller), 'member.removed', userTarget(member), { role: member.role, via: 'scim' }),
      );
    }
    const now = clock();
    // At once, not at their next request: a deprovisioned person's open sessions and keys stop here.
    await revokeKeysOfMember(trx, events, acting(caller), person.id, now);
    const ended = await sessions.inTransaction(trx).endAllOf(person.id, 'deprovisioned by SCIM');
    events.push(
      callerEvent(acting(caller), 'member.sessions_ended', userTarget(person), { sessionsEnded: ended }),
    );
    if (person.owned === 1 && (await createScimStore(trx).membershipCount(person.id)) === 0) {
      await createUsersStore(trx).setStatus(person.id, 'disabled', now);
      events.push(callerEvent(acting(caller), 'user.disabled', userTarget(person), { via: 'scim' }));
    }
  }

  async function activate(trx: Tx, events: AuditInput[], caller: ScimCaller, person: ScimPersonRow) {
    const orgs = createOrgsStore(trx);
    if (await orgs.findMember(caller.orgId, person.id)) return;
    const record = await createScimStore(trx).userRecord(caller.orgId, person.id);
    const role =
      (await roleMapper(trx, caller.orgId))?.roleOf(person.id, record?.role_when_active) ?? 'viewer';
    const now = clock();
    if (person.owned === 1 && person.status !== 'active') {
      await createUsersStore(trx).setStatus(person.id, 'active', now);
      events.push(callerEvent(acting(caller), 'user.enabled', userTarget(person), { via: 'scim' }));
    }
    await orgs.insertMembership({ org_id: caller.orgId, user_id: person.id, role, created_at: now });
    events.push(callerEvent(acting(caller), 'member.joined', userTarget(person), { role, via: 'scim' }));
  }

  function newRecord(orgId: string, person: ScimPersonRow, owned: number): ScimUserRow {
    const now = clock();
    return {
      org_id: orgId,
      user_id: person.id,
      user_name: person.user_name ?? person.email,
      external_id: person.external_id,
      owned,
      role_when_active: person.role ?? 'viewer',
      created_at: now,
      updated_at: now,
    };
  }

  /** Someone else here already answers to this userName (theirs, or their email when SCIM gave none). */
  async function assertUserNameFree(trx: Tx, orgId: string, userName: string, self?: string) {
    const taken = (await createScimStore(trx).people(orgId)).some(
      (other) => other.id !== self && (other.user_name ?? other.email) === userName,
    );
    if (taken)
      throw new ScimError(409, 'uniqueness', `A user with userName "${userName}" exists here already.`);
  }

  /** PUT semantics, also what a PATCH comes to once its operations are applied. */
  async function replaceUser(caller: ScimCaller, person: ScimPersonRow, input: UserInput) {
    return transact(async (trx, events) => {
      await createAccessStore(trx).lockOrg(caller.orgId);
      const current = await createScimStore(trx).person(caller.orgId, person.id);
      if (!current) throw scimNotFound('User');
      await assertUserNameFree(trx, caller.orgId, input.userName, current.id);
      const record =
        (await createScimStore(trx).userRecord(caller.orgId, current.id)) ??
        newRecord(caller.orgId, current, 0);
      const now = clock();
      await createScimStore(trx).putUserRecord({
        ...record,
        user_name: input.userName,
        external_id: input.externalId,
        updated_at: now,
      });
      // The account itself only when SCIM made it and it is nobody else's member.
      const memberships = await createScimStore(trx).membershipCount(current.id);
      // Its own account: made by this SCIM, and a member of this organization alone (or of none).
      const ownAccount =
        record.owned === 1 && (memberships === 0 || (memberships === 1 && current.role !== null));
      if (ownAccount && (input.email !== current.email || input.displayName !== current.display_name)) {
        if (input.email !== current.email && (await createUsersStore(trx).findByEmail(input.email)))
          throw new ScimError(409, 'uniqueness', `An account with the email ${input.email} exists already.`);
        await createUsersStore(trx).setProfile(
          current.id,
          { email: input.email, display_name: input.displayName },
          now,
        );
        events.push(
          callerEvent(acting(caller), 'user.updated', userTarget({ id: current.id, email: input.email }), {
            via: 'scim',
            // Whether it changed, never the old address: details are not sealed (the new one is the
            // target's display, sealed under the user's PII key).
            ...(input.email !== current.email ? { emailChanged: true } : {}),
          }),
        );
      }
      const active = current.role !== null && current.status === 'active';
      const updated = { ...current, owned: record.owned };
      if (active && !input.active) await deactivate(trx, events, caller, updated);
      if (!active && input.active) await activate(trx, events, caller, updated);
      return userOf(createScimStore(trx), caller, current.id);
    });
  }

  async function existingPerson(caller: ScimCaller, id: string, ifMatch: string | undefined) {
    const person = await store.person(caller.orgId, id);
    if (!person) throw scimNotFound('User');
    const resource = userResource(
      person,
      (await groupsOfPeople(store, caller.orgId)).get(id) ?? [],
      caller.base,
    );
    assertVersion(resource, ifMatch);
    return { person, resource };
  }

  /** The team's membership made what `input` says, and its name. */
  async function replaceGroup(caller: ScimCaller, teamId: string, input: GroupInput) {
    return transact(async (trx, events) => {
      await createAccessStore(trx).lockOrg(caller.orgId);
      const teams = createTeamsStore(trx);
      const team = await teams.find(caller.orgId, teamId);
      const current = team && (await groupOf(createScimStore(trx), caller, teamId));
      if (!team || !current) throw scimNotFound('Group');
      if (input.displayName !== team.name) {
        const other = await teams.findByName(caller.orgId, input.displayName);
        if (other && other.id !== teamId)
          throw new ScimError(409, 'uniqueness', `A team named "${input.displayName}" exists already.`);
        await teams.update(caller.orgId, teamId, { name: input.displayName });
        events.push(
          callerEvent(acting(caller), 'team.updated', teamTarget({ id: teamId, name: input.displayName }), {
            from: team.name,
            via: 'scim',
          }),
        );
      }
      const before = new Set((current.members ?? []).map((member) => member.value));
      const after = new Set(input.memberIds);
      await assertMembers(
        trx,
        caller.orgId,
        [...after].filter((id) => !before.has(id)),
      );
      const now = clock();
      const renamed = { id: teamId, name: input.displayName };
      for (const userId of after)
        if (!before.has(userId) && (await teams.addMember(caller.orgId, teamId, userId, now)))
          events.push(
            callerEvent(acting(caller), 'team.member_added', teamTarget(renamed), { userId, via: 'scim' }),
          );
      for (const userId of before)
        if (!after.has(userId) && (await teams.removeMember(caller.orgId, teamId, userId)))
          events.push(
            callerEvent(acting(caller), 'team.member_removed', teamTarget(renamed), { userId, via: 'scim' }),
          );
      await createScimStore(trx).touchGroup(caller.orgId, teamId, {
        external_id: input.externalId,
        updated_at: now,
      });
      await reapplyRoles(trx, events, caller, new Set([...before, ...after]));
      return groupOf(createScimStore(trx), caller, teamId);
    });
  }

  /** Only members of this organization can be put in its teams. */
  async function assertMembers(trx: Tx, orgId: string, userIds: string[]) {
    const orgs = createOrgsStore(trx);
    for (const userId of userIds)
      if (!(await orgs.findMember(orgId, userId)))
        throw new ScimError(
          400,
          'invalidValue',
          `The member ${userId.slice(0, 64)} is not an active user of this organization.`,
        );
  }

  async function existingGroup(caller: ScimCaller, id: string, ifMatch: string | undefined) {
    const resource = await groupOf(store, caller, id);
    assertVersion(resource, ifMatch);
    return resource;
  }

  return {
    async listUsers(caller: ScimCaller): Promise<ScimUser[]> {
      const groups = await groupsOfPeople(store, caller.orgId);
      return (await store.people(caller.orgId)).map((person) =>
        userResource(person, groups.get(person.id) ?? [], caller.base),
      );
    },

    getUser: (caller: ScimCaller, id: string) => userOf(store, caller, id),

    async createUser(caller: ScimCaller, body: unknown): Promise<ScimUser> {
      const input = userInput(body);
      return transact(async (trx, events) => {
        await createAccessStore(trx).lockOrg(caller.orgId);
        await assertUserNameFree(trx, caller.orgId, input.userName);
        const users = createUsersStore(trx);
        // Never an existing account by its email: that would hand it to whoever runs this provider.
        if (await users.findByEmail(input.email))
          throw new ScimError(
            409,
            'uniqueness',
            `An account with the email ${input.email} exists already and is not a member here: invite it from Bulwark; SCIM does not take over existing accounts.`,
          );
        const now = clock();
        const user: UserRow = {
          id: newId('usr', now),
          email: input.email,
          display_name: input.displayName,
          // Signs in through the organization's identity provider: no password here.
          password_hash: null,
          status: input.active ? 'active' : 'disabled',
          password_change_required_at: null,
          password_changed_at: null,
          created_at: now,
          updated_at: now,
        };
        await users.insert(user);
        events.push(callerEvent(acting(caller), 'user.created', userTarget(user), { via: 'scim' }));
        const role = (await roleMapper(trx, caller.orgId))?.roleOf(user.id) ?? 'viewer';
        await createScimStore(trx).putUserRecord({
          org_id: caller.orgId,
          user_id: user.id,
          user_name: input.userName,
          external_id: input.externalId,
          owned: 1,
          role_when_active: role,
          created_at: now,
          updated_at: now,
        });
        if (input.active) {
          await createOrgsStore(trx).insertMembership({
            org_id: caller.orgId,
            user_id: user.id,
            role,
            created_at: now,
          });
          events.push(callerEvent(acting(caller), 'member.joined', userTarget(user), { role, via: 'scim' }));
        }
        return userOf(createScimStore(trx), caller, user.id);
      });
    },

    async replaceUser(caller: ScimCaller, id: string, body: unknown, ifMatch?: string) {
      const input = userInput(body);
      const { person } = await existingPerson(caller, id, ifMatch);
      return replaceUser(caller, person, input);
    },

    async patchUser(caller: ScimCaller, id: string, body: unknown, ifMatch?: string) {
      const { person, resource } = await existingPerson(caller, id, ifMatch);
      return replaceUser(caller, person, userInput(patched(resource, body)));
    },

    async deleteUser(caller: ScimCaller, id: string, ifMatch?: string): Promise<void> {
      await existingPerson(caller, id, ifMatch);
      await transact(async (trx, events) => {
        await createAccessStore(trx).lockOrg(caller.orgId);
        const person = await createScimStore(trx).person(caller.orgId, id);
        if (!person) throw scimNotFound('User');
        await deactivate(trx, events, caller, person);
        await createScimStore(trx).deleteUserRecord(caller.orgId, id);
      });
    },

    async listGroups(caller: ScimCaller): Promise<ScimGroup[]> {
      const members = await store.groupMembers(caller.orgId);
      return (await store.groups(caller.orgId)).map((team) =>
        groupResource(
          team,
          members
            .filter((row) => row.team_id === team.id)
            .map((row) => ({ value: row.id, display: row.email })),
          caller.base,
        ),
      );
    },

    getGroup: (caller: ScimCaller, id: string) => groupOf(store, caller, id),

    async createGroup(caller: ScimCaller, body: unknown): Promise<ScimGroup> {
      const input = groupInput(body);
      return transact(async (trx, events) => {
        await createAccessStore(trx).lockOrg(caller.orgId);
        const teams = createTeamsStore(trx);
        if (await teams.findByName(caller.orgId, input.displayName))
          throw new ScimError(409, 'uniqueness', `A team named "${input.displayName}" exists already.`);
        await assertMembers(trx, caller.orgId, input.memberIds);
        const now = clock();
        const team = {
          id: newId('tea', now),
          org_id: caller.orgId,
          name: input.displayName,
          description: '',
          created_at: now,
        };
        await teams.insert(team);
        await createScimStore(trx).insertGroup({
          team_id: team.id,
          org_id: caller.orgId,
          external_id: input.externalId,
          created_at: now,
          updated_at: now,
        });
        events.push(callerEvent(acting(caller), 'team.created', teamTarget(team), { via: 'scim' }));
        for (const userId of input.memberIds) {
          await teams.addMember(caller.orgId, team.id, userId, now);
          events.push(
            callerEvent(acting(caller), 'team.member_added', teamTarget(team), { userId, via: 'scim' }),
          );
        }
        await reapplyRoles(trx, events, caller, input.memberIds);
        return groupOf(createScimStore(trx), caller, team.id);
      });
    },

    async replaceGroup(caller: ScimCaller, id: string, body: unknown, ifMatch?: string) {
      const input = groupInput(body);
      await existingGroup(caller, id, ifMatch);
      return replaceGroup(caller, id, input);
    },

    async patchGroup(caller: ScimCaller, id: string, body: unknown, ifMatch?: string) {
      const resource = await existingGroup(caller, id, ifMatch);
      return replaceGroup(caller, id, groupInput(patched(resource, body)));
    },

    async deleteGroup(caller: ScimCaller, id: string, ifMatch?: string): Promise<void> {
      const resource = await existingGroup(caller, id, ifMatch);
      await transact(async (trx, events) => {
        await createAccessStore(trx).lockOrg(caller.orgId);
        const team = await createTeamsStore(trx).find(caller.orgId, id);
        if (!team) throw scimNotFound('Group');
        await createTeamsStore(trx).delete(caller.orgId, id);
        events.push(callerEvent(acting(caller), 'team.deleted', teamTarget(team), { via: 'scim' }));
        await reapplyRoles(
          trx,
          events,
          caller,
          (resource.members ?? []).map((member) => member.value),
        );
      });
    },
  };
}

export type ScimService = ReturnType<typeof createScimService>;
