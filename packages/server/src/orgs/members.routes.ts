import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { sortOrderOf, sortValues, visiblePage } from '../db/keyset.js';
import { CursorText, cursorFrom, cursorText, SearchText } from '../http/list-query.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { Done, done, iso, OrgSlug, RoleRef, Timestamp, UserId } from '../http/schemas.js';
import type { MembersService } from './members.service.js';
import type { MemberSortColumn } from './members.store.js';

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

/** Sort keys of the members list and the column each stands for. */
const MEMBER_SORTS = {
  email: 'users.email',
  name: 'users.display_name',
  role: 'memberships.role',
  joined: 'memberships.created_at',
} as const satisfies Record<string, MemberSortColumn>;
const MemberSort = z.enum(sortValues(['email', 'name', 'role', 'joined'] as const));
// Member pickers elsewhere in the console read the list whole: a page holds an organization's
// people in most cases.
const PAGE_MAX = 500;

export function membersRoutes(members: MembersService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/members',
      operationId: 'listMembers',
      summary:
        'Members of the organization with their roles and teams; searched by email or name, filtered by role or status, sorted, paged with a cursor',
      tags: ['members'],
      access: { permission: 'members:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({
        q: SearchText.optional().describe('Found in the email or the display name'),
        role: RoleRef.optional(),
        status: z.enum(['active', 'disabled']).optional(),
        sort: MemberSort.default('email'),
        after: CursorText.optional(),
        limit: z.coerce.number().int().min(1).max(PAGE_MAX).default(PAGE_MAX),
      }),
      response: { 200: z.object({ members: z.array(MemberView), next: z.string().nullable() }) },
      reuseAnswers: true,
      handler: async ({ principal, query }) => {
        const orgId = principal!.org!.id;
        const order = {
          column: MEMBER_SORTS[query.sort.replace(/^-/, '') as keyof typeof MEMBER_SORTS],
          direction: sortOrderOf(query.sort).direction,
        };
        type Row = Awaited<ReturnType<MembersService['page']>>[number];
        const sortValueOf: Record<MemberSortColumn, (m: Row) => string | number> = {
          'users.email': (m) => m.email,
          'users.display_name': (m) => m.display_name,
          'memberships.role': (m) => m.role,
          'memberships.created_at': (m) => m.created_at,
        };
        // members:read covers every member: nothing is skipped, one query reads the page and one more row.
        const { rows, next } = await visiblePage({
          read: (from, batch) =>
            members.page(orgId, {
              ...(query.q ? { text: query.q } : {}),
              ...(query.role ? { role: query.role } : {}),
              ...(query.status ? { status: query.status } : {}),
              order,
              ...(from ? { from } : {}),
              limit: batch,
            }),
          cursorOf: (m) => ({ value: sortValueOf[order.column](m), id: m.id }),
          keep: () => true,
          limit: query.limit,
          from: cursorFrom(query.sort, query.after, 'usr'),
          batch: query.limit + 1,
        });
        return {
          members: rows.map((m) => ({
            id: m.id,
            email: m.email,
            displayName: m.display_name,
            status: m.status,
            role: m.role,
            joinedAt: iso(m.created_at),
            teams: m.teams,
          })),
          next: next ? cursorText(query.sort, next) : null,
        };
      },
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
