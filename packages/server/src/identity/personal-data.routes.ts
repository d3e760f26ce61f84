import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { OrgSlug, Timestamp, UserId } from '../http/schemas.js';
import type { PersonalDataService } from './personal-data.service.js';
import { SELF_PERMISSION, sessionOf } from './session-guard.js';

/** DATA-2: a person's data as JSON (their own, or what an organization holds about a member), and erasure. */

const MemberParams = z.strictObject({ org: OrgSlug, user: UserId });
const Json: z.ZodType<unknown> = z.unknown();

const Membership = z.object({
  orgId: z.string(),
  org: z.string(),
  orgName: z.string(),
  role: z.string(),
  joinedAt: Timestamp,
});
const Team = z.object({ id: z.string(), orgId: z.string(), name: z.string(), joinedAt: Timestamp });
const ApiKeyMeta = z.object({
  id: z.string(),
  orgId: z.string(),
  name: z.string(),
  permissions: Json,
  createdAt: Timestamp,
  expiresAt: Timestamp,
  lastUsedAt: Timestamp.nullable(),
  lastUsedIp: z.string().nullable(),
  revokedAt: Timestamp.nullable(),
});
const AuditEventView = z.object({
  id: z.string(),
  chain: z.string(),
  time: Timestamp,
  action: z.string(),
  outcome: z.string(),
  actor: z.object({ type: z.string(), id: z.string().nullable(), display: z.string().nullable() }),
  ip: z.string().nullable(),
  userAgent: z.string().nullable(),
  target: z
    .object({ type: z.string(), id: z.string().nullable(), display: z.string().nullable() })
    .nullable(),
  details: Json,
});

const OwnExport = z.object({
  exportedAt: Timestamp,
  scope: z.literal('instance'),
  profile: z.object({
    id: z.string(),
    email: z.string(),
    displayName: z.string(),
    status: z.string(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
    passwordChangedAt: Timestamp.nullable(),
  }),
  memberships: z.array(Membership),
  teams: z.array(Team),
  factors: z.array(
    z.object({
      id: z.string(),
      type: z.string(),
      name: z.string(),
      createdAt: Timestamp,
      confirmedAt: Timestamp.nullable(),
      lastUsedAt: Timestamp.nullable(),
    }),
  ),
  recoveryCodes: z.object({ total: z.number().int(), used: z.number().int() }),
  sessions: z.array(
    z.object({
      id: z.string(),
      ip: z.string().nullable(),
      userAgent: z.string().nullable(),
      device: z.object({ browser: z.string().nullable(), os: z.string().nullable(), type: z.string() }),
      createdAt: Timestamp,
      lastSeenAt: Timestamp,
      expiresAt: Timestamp,
      endedAt: Timestamp.nullable(),
    }),
  ),
  devices: z.array(z.object({ device: z.string(), firstSeenAt: Timestamp })),
  apiKeys: z.array(ApiKeyMeta),
  ssoIdentities: z.array(
    z.object({
      issuer: z.string(),
      subject: z.string(),
      linkedAt: Timestamp,
      lastSignInAt: Timestamp.nullable(),
    }),
  ),
  notifications: z.array(
    z.object({
      kind: z.string(),
      title: z.string(),
      body: z.string(),
      createdAt: Timestamp,
      readAt: Timestamp.nullable(),
    }),
  ),
  auditEvents: z.array(AuditEventView),
  auditEventsTruncated: z.boolean(),
});

const MemberExport = z.object({
  exportedAt: Timestamp,
  scope: z.literal('organization'),
  profile: z.object({ id: z.string(), email: z.string(), displayName: z.string(), status: z.string() }),
  memberships: z.array(Membership),
  teams: z.array(Team),
  apiKeys: z.array(ApiKeyMeta),
  auditEvents: z.array(AuditEventView),
  auditEventsTruncated: z.boolean(),
});

export function personalDataRoutes(personalData: PersonalDataService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/auth/personal-data',
      operationId: 'exportMyPersonalData',
      summary:
        'Everything this instance holds about you, as JSON (re-authentication first: it lists every address and browser you used)',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'export',
      response: { 200: OwnExport },
      handler: ({ principal, request }) => {
        const session = sessionOf(principal);
        return personalData.exportOwn(
          session.userId,
          { type: 'user', id: session.userId, display: session.email },
          auditContextOf(request),
        );
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/members/:user/personal-data',
      operationId: 'exportMemberPersonalData',
      summary:
        "What this organization holds about a member, as JSON: profile, membership, teams, API keys and the org's audit events about them",
      tags: ['members'],
      access: { permission: 'members:export_data', privileged: true },
      rateLimit: 'export',
      params: MemberParams,
      response: { 200: MemberExport },
      handler: ({ principal, request, params }) =>
        personalData.exportMember(callerOf(principal, request), params.user),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/members/:user/personal-data',
      operationId: 'eraseMember',
      summary:
        'Erase a member this organization alone holds: delete their account and shred their personal data in the audit log; a person another organization holds is refused',
      tags: ['members'],
      access: { permission: 'members:erase', privileged: true },
      rateLimit: 'write',
      params: MemberParams,
      response: {
        200: z.object({
          status: z.literal('erased'),
          memberships: z.number().int(),
          sessionsEnded: z.number().int(),
        }),
      },
      handler: async ({ principal, request, params }) => {
        const erased = await personalData.eraseMember(callerOf(principal, request), params.user);
        return {
          status: 'erased' as const,
          memberships: erased.memberships,
          sessionsEnded: erased.sessionsEnded,
        };
      },
    }),
  ];
}
