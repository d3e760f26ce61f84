import { assertCanGrant } from '../access/access.service.js';
import { createAccessStore } from '../access/access.store.js';
import { type Caller, callerEvent } from '../access/caller.js';
import { revokeKeysOfMember } from '../apikeys/api-keys.service.js';
import { DeniedError, type Transact } from '../audit/audited-transaction.js';
import { AppError, NotFoundError } from '../errors.js';
import type { SessionsService } from '../identity/sessions.service.js';
import { createScimStore } from '../scim/scim.store.js';
import type { MemberListQuery, MembersStore } from './members.store.js';
import { createOrgsStore, type OrgsStore } from './orgs.store.js';
import type { TeamsStore } from './teams.store.js';

/**
 * Members of an organization: list, role change, removal, ending their sessions (ACC-5, AUTH-7).
 * Nobody changes their own role; a role is changed only by someone who holds every permission of
 * both the old and the new role; the last owner is never demoted or removed.
 */

export class LastOwnerError extends AppError {
  constructor() {
    super(409, 'last_owner', 'An organization keeps at least one owner; make someone else owner first.');
  }
}

const userTarget = (x: { id: string; email: string }) => ({ type: 'user', id: x.id, display: x.email });

export function createMembersService(deps: {
  orgs: OrgsStore;
  members: MembersStore;
  teams: TeamsStore;
  sessions: SessionsService;
  transact: Transact;
  clock: () => number;
}) {
  const { orgs, teams, sessions, transact, clock } = deps;

  async function withTeams<Row extends { id: string }>(orgId: string, members: Row[]) {
    if (members.length === 0) return [];
    const memberTeams = await teams.teamsOfMembers(orgId);
    const teamsOf = new Map<string, Array<{ id: string; name: string }>>();
    for (const row of memberTeams) {
      const list = teamsOf.get(row.user_id) ?? [];
      list.push({ id: row.id, name: row.name });
      teamsOf.set(row.user_id, list);
    }
    return members.map((member) => ({ ...member, teams: teamsOf.get(member.id) ?? [] }));
  }

  return {
    async list(orgId: string) {
      const [members, memberTeams] = await Promise.all([
        orgs.listMembers(orgId),
        teams.teamsOfMembers(orgId),
      ]);
      const teamsOf = new Map<string, Array<{ id: string; name: string }>>();
      for (const row of memberTeams) {
        const list = teamsOf.get(row.user_id) ?? [];
        list.push({ id: row.id, name: row.name });
        teamsOf.set(row.user_id, list);
      }
      return members.map((member) => ({ ...member, teams: teamsOf.get(member.id) ?? [] }));
    },

    /** A page of the members list, searched, filtered and sorted, with each member's teams. */
    async page(orgId: string, query: MemberListQuery) {
      return withTeams(orgId, await deps.members.page(orgId, query));
    },

    changeRole(caller: Caller, userId: string, role: string) {
      return transact(async (trx, events) => {
        if (userId === caller.userId) {
          throw new DeniedError(
            403,
            'cannot_change_own_role',
            'Nobody can change their own role.',
            callerEvent(
              caller,
              'access.denied',
              userTarget({ id: userId, email: caller.actor.display ?? '' }),
              { reason: 'cannot_change_own_role', requestedRole: role },
              'denied',
            ),
          );
        }
        const store = createOrgsStore(trx);
        await createAccessStore(trx).lockOrg(caller.org.id);
        const member = await store.findMember(caller.org.id, userId);
        if (!member) throw new NotFoundError('No such member.');
        const roles = await createAccessStore(trx).customRoles(caller.org.id);
        assertCanGrant(caller, 'change role', member.role, roles);
        assertCanGrant(caller, 'change role', role, roles);
        if (member.role === 'owner' && role !== 'owner' && (await store.countOwners(caller.org.id)) <= 1)
          throw new LastOwnerError();
        await store.setRole(caller.org.id, userId, role);
        events.push(
          callerEvent(caller, 'member.role_changed', userTarget(member), { from: member.role, to: role }),
        );
        return { ...member, role };
      });
    },

    remove(caller: Caller, userId: string) {
      return transact(async (trx, events) => {
        const store = createOrgsStore(trx);
        await createAccessStore(trx).lockOrg(caller.org.id);
        const member = await store.findMember(caller.org.id, userId);
        if (!member) throw new NotFoundError('No such member.');
        // Leaving is always allowed; removing someone else needs reach over their role.
        if (userId !== caller.userId)
          assertCanGrant(
            caller,
            'remove member',
            member.role,
            await createAccessStore(trx).customRoles(caller.org.id),
          );
        if (member.role === 'owner' && (await store.countOwners(caller.org.id)) <= 1)
          throw new LastOwnerError();
        await store.removeMember(caller.org.id, userId);
        // Removed here, not deactivated by SCIM: its provisioning forgets them and cannot bring them back.
        await createScimStore(trx).deleteUserRecord(caller.org.id, userId);
        events.push(callerEvent(caller, 'member.removed', userTarget(member), { role: member.role }));
        await revokeKeysOfMember(trx, events, caller, userId, clock());
      });
    },

    /** Ends every session of a member at once (AUTH-7); they must sign in again. */
    async endSessions(caller: Caller, userId: string): Promise<number> {
      const member = await orgs.findMember(caller.org.id, userId);
      if (!member) throw new NotFoundError('No such member.');
      return transact(async (trx, events) => {
        // By id, never by address: the row outlives an erasure of the person who ended them.
        const reason = `ended by ${caller.userId}`;
        const ended = await sessions.inTransaction(trx).endAllOf(userId, reason);
        events.push(
          callerEvent(caller, 'member.sessions_ended', userTarget(member), { sessionsEnded: ended }),
        );
        return ended;
      });
    },
  };
}

export type MembersService = ReturnType<typeof createMembersService>;
