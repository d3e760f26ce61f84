import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { OrgSlug } from '../http/schemas.js';
import type { SecurityPolicyService } from './security-policy.service.js';

/**
 * An organization's security policy. For now, "MFA required" (MFA-4): on by default; an owner may
 * relax it, after a recent re-authentication, and the answer and the audit event say so plainly.
 * Turning it on needs a factor of one's own first, or the owner would lock themselves out with it.
 */

const RELAXED_WARNING =
  'Members can now work with a password alone. A stolen password is then enough to act in this organization.';

const Policy = z.object({
  mfaRequired: z.boolean(),
  warning: z.string().nullable().describe('Set when the policy is weaker than the default'),
});

const policyView = (mfaRequired: boolean) => ({ mfaRequired, warning: mfaRequired ? null : RELAXED_WARNING });

export function securityPolicyRoutes(policy: SecurityPolicyService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/security-policy',
      operationId: 'getSecurityPolicy',
      summary: "The organization's security policy: whether members need a second factor",
      tags: ['security'],
      access: { permission: 'org:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: Policy },
      handler: ({ principal }) => policyView(principal!.org!.mfaRequired),
    }),

    defineRoute({
      method: 'PUT',
      url: '/api/orgs/:org/security-policy',
      operationId: 'setSecurityPolicy',
      summary: 'Require a second factor of every member (the default), or relax it',
      tags: ['security'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({ mfaRequired: z.boolean() }),
      response: { 200: Policy },
      handler: async ({ principal, request, body }) =>
        policyView(await policy.setMfaRequired(callerOf(principal, request), body.mfaRequired)),
    }),
  ];
}
