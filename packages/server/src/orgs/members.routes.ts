import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { Done, done, iso, OrgSlug, RoleRef, Timestamp, UserId } from '../http/schemas.js';
import type { MembersService } from './members.service.js';

const MemberParams = z.strictObject({ org: OrgSlug, user: UserId });

const MemberView = z.object({
  id: z.string(),
  email: z.string(),
  displayName: z.string(),
  status: z.enum(['active', 'disabled']),
  role: z.string(),
  joinedAt: Timestamp,
  teams: z.array(z.object({ id: z.string(), name: z.string() })),
});

export function membersRoutes(members: MembersService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/members',
      operationId: 'listMembers',
      summary: 'Members of the organization with their roles and teams',
      tags: ['members'],
      access: { permission: 'members:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ members: z.array(MemberView) }) },
      reuseAnswers: true,
      handler: async ({ principal }) => ({
        members: (await members.list(principal!.org!.id)).map((m) => ({
          id: m.id,
          email: m.email,
          displayName: m.display_name,
          status: m.status,
          role: m.role,
          joinedAt: iso(m.created_at),
          teams: m.teams,
        })),
      }),
    }),

    defineRoute({
      method: 'PATCH',
      url: '/api/orgs/:org/members/:user',
      operationId: 'changeMemberRole',
      summary:
        "Change a member's role: never your own, never beyond your own permissions, never the last owner's",
      tags: ['members'],
      access: { permission: 'members:manage', privileged: true },
      rateLimit: 'write',
      params: MemberParams,
      body: z.strictObject({ role: RoleRef }),
      response: { 200: z.object({ id: z.string(), role: z.string() }) },
      handler: ({ principal, request, params, body }) =>
        members.changeRole(callerOf(principal, request), params.user, body.role),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/members/:user',
      operationId: 'removeMember',
      summary: 'Remove a member (or leave, with your own id); the last owner cannot be removed',
      tags: ['members'],
      access: { permission: 'members:manage', privileged: true },
      rateLimit: 'write',
      params: MemberParams,
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await members.remove(callerOf(principal, request), params.user);
        return done;
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/members/:user/end-sessions',
      operationId: 'endMemberSessions',
      summary: 'End every session of a member at once; they must sign in again',
      tags: ['members'],
      access: { permission: 'members:end_sessions', privileged: true },
      rateLimit: 'write',
      params: MemberParams,
      response: { 200: z.object({ sessionsEnded: z.number().int() }) },
      handler: async ({ principal, request, params }) => ({
        sessionsEnded: await members.endSessions(callerOf(principal, request), params.user),
      }),
    }),
  ];
}
