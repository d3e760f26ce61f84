import type { FastifyRequest } from 'fastify';
import { type AccessService, recordDenial } from '../access/access.service.js';
import { decide } from '../access/authorize.js';
import type { AuditService } from '../audit/audit.service.js';
import { AppError, ForbiddenError, NotFoundError, UnauthenticatedError } from '../errors.js';
import type { RouteGuard } from '../http/app.js';
import { auditContextOf } from '../http/request-context.js';
import type { Principal } from '../http/route.js';
import type { Csrf } from './csrf.js';
import type { SessionsService } from './sessions.service.js';

/** `__Host-`: the browser sends it only to this exact origin over HTTPS (or localhost), path `/`, never set by a subdomain. */
export const SESSION_COOKIE = '__Host-bulwark_session';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Every signed-in user may manage their own session, profile and password. */
export const SELF_PERMISSION = 'self:manage';

export class CsrfError extends AppError {
  constructor() {
    super(
      403,
      'csrf_failed',
      'This request did not come from the Bulwark console; reload the page and try again.',
    );
  }
}

export class StepUpRequiredError extends AppError {
  constructor() {
    super(403, 'step_up_required', 'Confirm it is you: re-enter your password to continue.');
  }
}

export function sessionCookieOf(request: FastifyRequest): string | undefined {
  return request.cookies?.[SESSION_COOKIE];
}

/**
 * The guard of every permission route. It turns the session cookie into a principal (the session must
 * be live); a state-changing request must carry the CSRF token and come from this origin (AUTH-4); a
 * password that must be changed blocks everything but self-service. On `/api/orgs/:org/…` it loads the
 * caller's access in that organization — not a member answers 404, exactly like an organization that
 * does not exist (ACC-1) — and asks the one decision point whether the caller holds the route's
 * permission anywhere there (a route about one agent asks again about that agent). Privileged routes
 * need a sign-in or re-authentication within the step-up window (MFA-5).
 */
export function createSessionGuard(deps: {
  sessions: SessionsService;
  csrf: Csrf;
  audit: AuditService;
  access: AccessService;
  stepUpMs: number;
  clock: () => number;
}): RouteGuard {
  const { sessions, csrf, audit, access, stepUpMs, clock } = deps;
  return async (request, route) => {
    const token = sessionCookieOf(request);
    if (!token) throw new UnauthenticatedError();
    const session = await sessions.resolve(token);
    if (!session) throw new UnauthenticatedError('Your session has ended; sign in again.');
    const actor = { type: 'user' as const, id: session.userId, display: session.email };
    const routeName = `${route.method} ${route.url}`;

    if (!SAFE_METHODS.has(request.method)) {
      const problem = csrf.problem(request, session.id);
      if (problem) {
        await audit.record({
          actor,
          action: 'auth.csrf_rejected',
          target: { type: 'route', id: routeName },
          outcome: 'denied',
          context: auditContextOf(request),
          details: { reason: problem },
        });
        throw new CsrfError();
      }
    }
    const { permission, privileged } = route.access;
    if (session.passwordChangeRequired && permission !== SELF_PERMISSION) {
      throw new AppError(403, 'password_change_required', 'Change your password before doing anything else.');
    }
    const principal: Principal = { ...actor, session };

    if (permission !== SELF_PERMISSION) {
      const slug = (request.params as Record<string, unknown> | undefined)?.org;
      const org = typeof slug === 'string' ? await access.load(slug, session.userId) : undefined;
      if (!org) {
        await recordDenial(audit, {
          orgId: null,
          actor,
          context: auditContextOf(request),
          permission,
          route: routeName,
          reason:
            typeof slug === 'string'
              ? `not a member of organization "${slug.slice(0, 64)}"`
              : 'no instance-wide permissions are granted to users',
        });
        if (typeof slug === 'string') throw new NotFoundError('No such organization.');
        throw new ForbiddenError();
      }
      const decision = decide(org.access, permission, { kind: 'any' });
      if (!decision.allowed) {
        await recordDenial(audit, {
          orgId: org.id,
          actor,
          context: auditContextOf(request),
          permission,
          route: routeName,
          reason: decision.reason,
        });
        throw new ForbiddenError();
      }
      principal.org = org;
    }
    if (privileged && clock() - session.authenticatedAt > stepUpMs) throw new StepUpRequiredError();
    return principal;
  };
}
