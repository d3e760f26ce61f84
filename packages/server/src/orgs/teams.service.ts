import { newId } from '@bulwark/protocol';
import { assertCanGrant } from '../access/access.service.js';
import { createAccessStore } from '../access/access.store.js';
import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import { AppError, NotFoundError } from '../errors.js';
import { createOrgsStore } from './orgs.store.js';
import { createTeamsStore, type TeamRow, type TeamsStore } from './teams.store.js';

/**
 * Teams (ACC-6): members grouped so roles can be bound to the group. Putting someone in a team gives
 * them the team's roles, so it is bounded like any grant: the caller must hold every permission the
 * team's roles carry.
 */
const teamTarget = (x: { id: string; name: string }) => ({ type: 'team', id: x.id, display: x.name });

export function createTeamsService(deps: { teams: TeamsStore; transact: Transact; clock: () => number }) {
  const { teams, transact, clock } = deps;

  async function assertReachOverTeam(
    caller: Caller,
    trx: Parameters<Parameters<Transact>[0]>[0],
    teamId: string,
    operation: string,
  ) {
    const access = createAccessStore(trx);
    const roles = await access.customRoles(caller.org.id);
    for (const role of await access.teamRoles(caller.org.id, teamId))
      assertCanGrant(caller, operation, role, roles);
  }

  const nameTaken = () => new AppError(409, 'team_exists', 'A team with this name exists.');

  return {
    async list(orgId: string) {
      const [rows, members] = await Promise.all([teams.list(orgId), teams.members(orgId)]);
      return rows.map((team) => ({
        ...team,
        members: members.filter((m) => m.team_id === team.id).map((m) => ({ id: m.id, email: m.email })),
      }));
    },

    create(caller: Caller, input: { name: string; description: string }): Promise<TeamRow> {
      return transact(async (trx, events) => {
        const store = createTeamsStore(trx);
        if (await store.findByName(caller.org.id, input.name)) throw nameTaken();
        const now = clock();
        const row: TeamRow = { id: newId('tea', now), org_id: caller.org.id, ...input, created_at: now };
        await store.insert(row);
        events.push(callerEvent(caller, 'team.created', teamTarget(row)));
        return row;
      });
    },

    update(caller: Caller, teamId: string, input: { name?: string; description?: string }): Promise<TeamRow> {
      return transact(async (trx, events) => {
        const store = createTeamsStore(trx);
        const team = await store.find(caller.org.id, teamId);
        if (!team) throw new NotFoundError('No such team.');
        if (input.name !== undefined) {
          const other = await store.findByName(caller.org.id, input.name);
          if (other && other.id !== teamId) throw nameTaken();
        }
        await store.update(caller.org.id, teamId, input);
        const updated = { ...team, ...input };
        events.push(callerEvent(caller, 'team.updated', teamTarget(updated), { from: team.name }));
        return updated;
      });
    },

    delete(caller: Caller, teamId: string): Promise<void> {
      return transact(async (trx, events) => {
        const store = createTeamsStore(trx);
        const team = await store.find(caller.org.id, teamId);
        if (!team) throw new NotFoundError('No such team.');
        await assertReachOverTeam(caller, trx, teamId, 'delete team');
        await store.delete(caller.org.id, teamId);
        events.push(callerEvent(caller, 'team.deleted', teamTarget(team)));
      });
    },

    addMember(caller: Caller, teamId: string, userId: string): Promise<void> {
      return transact(async (trx, events) => {
        const store = createTeamsStore(trx);
        const team = await store.find(caller.org.id, teamId);
        const member = await createOrgsStore(trx).findMember(caller.org.id, userId);
        if (!team) throw new NotFoundError('No such team.');
        if (!member) throw new NotFoundError('No such member.');
        await assertReachOverTeam(caller, trx, teamId, 'add team member');
        if (await store.addMember(caller.org.id, teamId, userId, clock()))
          events.push(
            // The id only: details are never sealed, and an erased person's address must not stay in them.
            callerEvent(caller, 'team.member_added', teamTarget(team), { userId }),
          );
      });
    },

    removeMember(caller: Caller, teamId: string, userId: string): Promise<void> {
      return transact(async (trx, events) => {
        const store = createTeamsStore(trx);
        const team = await store.find(caller.org.id, teamId);
        if (!team) throw new NotFoundError('No such team.');
        await assertReachOverTeam(caller, trx, teamId, 'remove team member');
        if (!(await store.removeMember(caller.org.id, teamId, userId)))
          throw new NotFoundError('No such team member.');
        events.push(callerEvent(caller, 'team.member_removed', teamTarget(team), { userId }));
      });
    },
  };
}

export type TeamsService = ReturnType<typeof createTeamsService>;
