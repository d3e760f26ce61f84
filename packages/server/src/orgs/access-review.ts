import { z } from 'zod';
import type { AccessService } from '../access/access.service.js';
import { orgWidePermissions, roleName } from '../access/authorize.js';
import { callerOf } from '../access/caller.js';
import type { RolesService } from '../access/roles.service.js';
import { csvCell } from '../audit/audit.export.js';
import type { AuditService } from '../audit/audit.service.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import { iso, OrgSlug } from '../http/schemas.js';
import type { InvitationsService } from './invitations.service.js';
import type { MembersService } from './members.service.js';

/**
 * The access review (ACC-7): who can do what in an organization, as one document an auditor can file —
 * members with their roles, teams, bindings and effective permissions; roles; teams; pending
 * invitations; API keys; SSO/SCIM state. JSON for tools, CSV (one row per member) for spreadsheets.
 */
export function accessReviewRoutes(deps: {
  access: AccessService;
  roles: RolesService;
  members: MembersService;
  invitations: InvitationsService;
  audit: AuditService;
  clock: () => number;
}): RouteDefinition[] {
  const { access, roles, members, invitations, audit, clock } = deps;

  async function build(orgId: string, slug: string) {
    const [memberRows, roleViews, bindings, open] = await Promise.all([
      members.list(orgId),
      roles.listRoles(orgId),
      roles.listBindings(orgId),
      invitations.list(orgId),
    ]);
    const reviewed = [];
    for (const member of memberRows) {
      const context = await access.load(slug, member.id);
      reviewed.push({
        id: member.id,
        email: member.email,
        displayName: member.display_name,
        status: member.status,
        role: context ? roleName(member.role, context.access.customRoles) : member.role,
        teams: member.teams.map((team) => team.name),
        bindings: bindings
          .filter(
            (b) =>
              (b.subject_type === 'user' && b.subject_id === member.id) ||
              (b.subject_type === 'team' && member.teams.some((team) => team.id === b.subject_id)),
          )
          .map((b) => ({ id: b.id, role: b.role, selector: b.selector, subjectType: b.subject_type })),
        permissions: context ? [...orgWidePermissions(context.access)].sort() : [],
      });
    }
    return {
      generatedAt: iso(clock()),
      members: reviewed,
      roles: roleViews,
      invitations: open
        .filter((row) => row.status === 'pending')
        .map((row) => ({
          id: row.id,
          email: row.email,
          role: row.role,
          invitedBy: row.invited_by,
          expiresAt: iso(row.expires_at),
        })),
      // API keys, SSO and SCIM do not exist in this version; the review states it rather than omitting them.
      apiKeys: [] as Array<{ id: string }>,
      sso: { configured: false },
      scim: { configured: false },
    };
  }

  function toCsv(review: Awaited<ReturnType<typeof build>>): string {
    const header = ['email', 'display_name', 'status', 'role', 'teams', 'bindings', 'permissions'];
    const rows = review.members.map((m) =>
      [
        m.email,
        m.displayName,
        m.status,
        m.role,
        m.teams.join(' '),
        m.bindings.map((b) => (b.selector ? `${b.role}@${b.selector}` : b.role)).join(' '),
        m.permissions.join(' '),
      ]
        .map(csvCell)
        .join(','),
    );
    return `${[header.join(','), ...rows].join('\r\n')}\r\n`;
  }

  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/access-review',
      operationId: 'exportAccessReview',
      summary:
        'Who can do what: members, roles, teams, bindings, pending invitations, API keys, SSO/SCIM state',
      tags: ['access'],
      access: { permission: 'audit:export' },
      rateLimit: 'export',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({ format: z.enum(['json', 'csv']).default('json') }),
      response: {
        200: rawResponse('application/json', 'The review as JSON, or CSV with one row per member'),
      },
      handler: async ({ principal, request, reply, query }) => {
        const caller = callerOf(principal, request);
        const review = await build(caller.org.id, caller.org.slug);
        await audit.record({
          orgId: caller.org.id,
          actor: caller.actor,
          action: 'access.review_exported',
          target: { type: 'org', id: caller.org.id, display: caller.org.slug },
          outcome: 'success',
          context: caller.context,
          details: { format: query.format, members: review.members.length },
        });
        reply.header(
          'content-disposition',
          `attachment; filename="access-review-${caller.org.slug}.${query.format}"`,
        );
        if (query.format === 'csv') {
          reply.type('text/csv; charset=utf-8');
          return toCsv(review);
        }
        reply.type('application/json; charset=utf-8');
        return JSON.stringify({
          org: { id: caller.org.id, slug: caller.org.slug, name: caller.org.name },
          ...review,
        });
      },
    }),
  ];
}
