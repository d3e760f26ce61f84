import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import {
  Description,
  DisplayText,
  Done,
  done,
  iso,
  OrgSlug,
  TeamId,
  Timestamp,
  UserId,
} from '../http/schemas.js';
import type { TeamsService } from './teams.service.js';

const TeamParams = z.strictObject({ org: OrgSlug, team: TeamId });
const TeamMemberParams = z.strictObject({ org: OrgSlug, team: TeamId, user: UserId });

const TeamView = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string(),
  createdAt: Timestamp,
  members: z.array(z.object({ id: z.string(), email: z.string() })),
});

const teamView = (
  team: { id: string; name: string; description: string; created_at: number },
  members: Array<{ id: string; email: string }> = [],
) => ({
  id: team.id,
  name: team.name,
  description: team.description,
  createdAt: iso(team.created_at),
  members,
});

export function teamsRoutes(teams: TeamsService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/teams',
      operationId: 'listTeams',
      summary: 'Teams and their members',
      tags: ['teams'],
      access: { permission: 'teams:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ teams: z.array(TeamView) }) },
      handler: async ({ principal }) => ({
        teams: (await teams.list(principal!.org!.id)).map((team) => teamView(team, team.members)),
      }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/teams',
      operationId: 'createTeam',
      summary: 'Create a team',
      tags: ['teams'],
      access: { permission: 'teams:manage' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({ name: DisplayText(64), description: Description.default('') }),
      response: { 201: TeamView },
      handler: async ({ principal, request, body }) =>
        teamView(await teams.create(callerOf(principal, request), body)),
    }),

    defineRoute({
      method: 'PATCH',
      url: '/api/orgs/:org/teams/:team',
      operationId: 'updateTeam',
      summary: 'Rename or describe a team',
      tags: ['teams'],
      access: { permission: 'teams:manage' },
      rateLimit: 'write',
      params: TeamParams,
      // An update that names nothing to change is refused: the store cannot write an empty change.
      body: z
        .strictObject({ name: DisplayText(64).optional(), description: Description.optional() })
        .refine((body) => body.name !== undefined || body.description !== undefined, {
          message: 'name something to change: name or description',
        }),
      response: { 200: TeamView },
      handler: async ({ principal, request, params, body }) =>
        teamView(await teams.update(callerOf(principal, request), params.team, body)),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/teams/:team',
      operationId: 'deleteTeam',
      summary: 'Delete a team and the role bindings made to it',
      tags: ['teams'],
      access: { permission: 'teams:manage', privileged: true },
      rateLimit: 'write',
      params: TeamParams,
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await teams.delete(callerOf(principal, request), params.team);
        return done;
      },
    }),

    defineRoute({
      method: 'PUT',
      url: '/api/orgs/:org/teams/:team/members/:user',
      operationId: 'addTeamMember',
      summary: "Add a member to a team; you must hold every permission the team's roles grant",
      tags: ['teams'],
      access: { permission: 'teams:manage', privileged: true },
      rateLimit: 'write',
      params: TeamMemberParams,
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await teams.addMember(callerOf(principal, request), params.team, params.user);
        return done;
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/teams/:team/members/:user',
      operationId: 'removeTeamMember',
      summary: 'Remove a member from a team',
      tags: ['teams'],
      access: { permission: 'teams:manage', privileged: true },
      rateLimit: 'write',
      params: TeamMemberParams,
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await teams.removeMember(callerOf(principal, request), params.team, params.user);
        return done;
      },
    }),
  ];
}
