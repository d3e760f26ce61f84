import { z } from 'zod';
import { callerEvent, callerOf } from '../access/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import { AppError } from '../errors.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { OrgSlug } from '../http/schemas.js';
import type { MfaService } from '../mfa/mfa.service.js';
import type { OrgsStore } from './orgs.store.js';

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

export function securityPolicyRoutes(deps: {
  orgs: OrgsStore;
  audit: AuditService;
  mfa: Pick<MfaService, 'isEnrolled'>;
}): RouteDefinition[] {
  const { orgs, audit, mfa } = deps;
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
      handler: async ({ principal, request, body }) => {
        const caller = callerOf(principal, request);
        const before = caller.org.mfaRequired;
        if (body.mfaRequired && !before && !(await mfa.isEnrolled(principal!.userId)))
          throw new AppError(
            409,
            'own_factor_required',
            'Add an authenticator app or a passkey to your own account first: the policy would lock you out too.',
          );
        await orgs.setMfaRequired(caller.org.id, body.mfaRequired);
        if (before !== body.mfaRequired)
          await audit.record(
            callerEvent(
              caller,
              'org.security_policy_changed',
              { type: 'org', id: caller.org.id, display: caller.org.slug },
              { mfaRequired: { from: before, to: body.mfaRequired }, relaxed: !body.mfaRequired },
            ),
          );
        return policyView(body.mfaRequired);
      },
    }),
  ];
}
