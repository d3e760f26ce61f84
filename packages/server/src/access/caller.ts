import type { FastifyRequest } from 'fastify';
import type { AuditActor, AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import { auditContextOf } from '../http/request-context.js';
import type { OrgContext, Principal } from '../http/route.js';

/** Who is acting, in which organization, from where: what an org-scoped service needs to decide and to audit. */
export interface Caller {
  userId: string;
  actor: AuditActor;
  org: OrgContext;
  context: AuditRequestContext;
}

/** Who acts and where, without a member's access: enough to attribute an event (SCIM acts so). */
export type Acting = Pick<Caller, 'actor' | 'context'> & { org: Pick<OrgContext, 'id'> };

export function actorOf(principal: Pick<Principal, 'type' | 'id' | 'display'>): AuditActor {
  return { type: principal.type, id: principal.id, display: principal.display };
}

export function callerOf(principal: Principal | undefined, request: FastifyRequest): Caller {
  if (!principal?.org) throw new Error('an organization route was reached without an organization context');
  return {
    userId: principal.userId,
    actor: actorOf(principal),
    org: principal.org,
    context: auditContextOf(request),
  };
}

/** An audit event of something the caller did in their organization. */
export function callerEvent(
  caller: Acting,
  action: AuditInput['action'],
  target: AuditInput['target'],
  details: AuditInput['details'] = {},
  outcome: AuditInput['outcome'] = 'success',
): AuditInput {
  return {
    orgId: caller.org.id,
    actor: caller.actor,
    action,
    target,
    outcome,
    context: caller.context,
    details,
  };
}

/**
 * The caller with when they last proved a credential, for the step-up rules of commands. A key cannot
 * re-authenticate: it passes a step-up rule only when it holds apikeys:use_privileged.
 */
export function requesterOf(
  principal: Principal | undefined,
  request: FastifyRequest,
): Caller & { authenticatedAt: number } {
  const authenticatedAt =
    principal?.session?.authenticatedAt ?? (principal?.stepUpExempt ? Number.POSITIVE_INFINITY : 0);
  return { ...callerOf(principal, request), authenticatedAt };
}
