import { z } from 'zod';
import type { AccessService } from '../access/access.service.js';
import { orgWidePermissions, roleName } from '../access/authorize.js';
import { callerOf } from '../access/caller.js';
import type { RolesService } from '../access/roles.service.js';
import { apiKeyView } from '../apikeys/api-keys.routes.js';
import type { ApiKeysService } from '../apikeys/api-keys.service.js';
import { csvCell } from '../audit/audit.export.js';
import type { AuditService } from '../audit/audit.service.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import { iso, OrgSlug } from '../http/schemas.js';
import type { MfaService } from '../mfa/mfa.service.js';
import type { ScimSettingsService } from '../scim/scim-settings.service.js';
import type { SsoConnectionsService } from '../sso/sso-connections.service.js';
import type { SsoDomainsService } from '../sso/sso-domains.service.js';
import type { InvitationsService } from './invitations.service.js';
import type { MembersService } from './members.service.js';

/**
 * The access review (ACC-7): who can do what in an organization, as one document an auditor can file —
 * members with their roles, teams, bindings, effective permissions and second factor; roles; teams;
 * pending invitations; API keys (never tokens); the MFA policy; SSO/SCIM state. JSON for tools, CSV
 * (one row per member, with the keys they created) for spreadsheets.
 */
export function accessReviewRoutes(deps: {
  access: AccessService;
  roles: RolesService;
  members: MembersService;
  invitations: InvitationsService;
  apiKeys: ApiKeysService;
  mfa: Pick<MfaService, 'enrolledAmong'>;
  sso: Pick<SsoConnectionsService, 'list' | 'linkedIssuers'>;
  domains: Pick<SsoDomainsService, 'list'>;
  scim: Pick<ScimSettingsService, 'current' | 'provisionedAmong'>;
  audit: AuditService;
  clock: () => number;
}): RouteDefinition[] {
  const { access, roles, members, invitations, apiKeys, mfa, audit, clock } = deps;

  /** How the organization's people sign in and are provisioned, secrets left out. */
  async function federation(org: { id: string; ssoRequired: boolean; breakGlassUserId: string | null }) {
    const [connections, domains, scim] = await Promise.all([
      deps.sso.list(org.id),
      deps.domains.list(org.id),
      deps.scim.current(org.id),
    ]);
    return {
      sso: {
        configured: connections.length > 0,
        required: org.ssoRequired,
        breakGlassUserId: org.breakGlassUserId,
        connections: connections.map((connection) => ({
          id: connection.id,
          name: connection.name,
          kind: connection.kind,
          enabled: connection.enabled,
          config: connection.config,
        })),
        domains: domains.map((domain) => ({ domain: domain.domain, verified: domain.verified })),
      },
      scim: {
        configured: scim.enabled,
        tokenHint: scim.tokenHint,
        defaultRole: scim.defaultRole,
        groupRoles: scim.groupRoles,
        rotatedAt: scim.rotatedAt === null ? null : iso(scim.rotatedAt),
        lastUsedAt: scim.lastUsedAt === null ? null : iso(scim.lastUsedAt),
      },
    };
  }

  async function build(org: {
    id: string;
    slug: string;
    mfaRequired: boolean;
    ssoRequired: boolean;
    breakGlassUserId: string | null;
  }) {
    const now = clock();
    const [memberRows, roleViews, bindings, open, keyRows] = await Promise.all([
      members.list(org.id),
      roles.listRoles(org.id),
      roles.listBindings(org.id),
      invitations.list(org.id),
      apiKeys.list(org.id),
    ]);
    const keys = keyRows.map((row) => apiKeyView(row, now));
    const ids = memberRows.map((member) => member.id);
    const [enrolled, issuers, provisioned] = await Promise.all([
      mfa.enrolledAmong(ids),
      deps.sso.linkedIssuers(org.id, ids),
      deps.scim.provisionedAmong(org.id),
    ]);
    const reviewed = [];
    for (const member of memberRows) {
      const context = await access.load(org.slug, member.id);
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
        mfaEnrolled: enrolled.has(member.id),
        signsInThrough: issuers.get(member.id) ?? [],
        provisionedBy: provisioned.has(member.id) ? 'scim' : null,
        apiKeys: keys
          .filter((key) => key.createdBy.id === member.id && key.status === 'active')
          .map((key) => key.name),
      });
    }
    return {
      generatedAt: iso(now),
      securityPolicy: { mfaRequired: org.mfaRequired },
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
      apiKeys: keys,
      ...(await federation(org)),
    };
  }

  function toCsv(review: Awaited<ReturnType<typeof build>>): string {
    const header = [
      'email',
      'display_name',
      'status',
      'role',
      'teams',
      'bindings',
      'permissions',
      'mfa_enrolled',
      'sso_issuers',
      'provisioned_by',
      'active_api_keys',
    ];
    const rows = review.members.map((m) =>
      [
        m.email,
        m.displayName,
        m.status,
        m.role,
        m.teams.join(' '),
        m.bindings.map((b) => (b.selector ? `${b.role}@${b.selector}` : b.role)).join(' '),
        m.permissions.join(' '),
        m.mfaEnrolled ? 'yes' : 'no',
        m.signsInThrough.join(' '),
        m.provisionedBy ?? '',
        m.apiKeys.join(' | '),
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
        const review = await build(caller.org);
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
