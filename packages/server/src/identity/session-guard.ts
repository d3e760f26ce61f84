import type { FastifyRequest } from 'fastify';
import type { AuditService } from '../audit/audit.service.js';
import { AppError, ForbiddenError, UnauthenticatedError } from '../errors.js';
import type { RouteGuard } from '../http/app.js';
import { auditContextOf } from '../http/request-context.js';
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

export function sessionCookieOf(request: FastifyRequest): string | undefined {
  return request.cookies?.[SESSION_COOKIE];
}

/**
 * Turns a request's session cookie into a principal: the session must be live, a state-changing
 * request must carry the CSRF token and come from this origin (AUTH-4), and a password that must be
 * changed blocks everything but the self-service routes.
 */
export function createSessionGuard(deps: {
  sessions: SessionsService;
  csrf: Csrf;
  audit: AuditService;
}): RouteGuard {
  const { sessions, csrf, audit } = deps;
  return async (request, permission) => {
    const token = sessionCookieOf(request);
    if (!token) throw new UnauthenticatedError();
    const session = await sessions.resolve(token);
    if (!session) throw new UnauthenticatedError('Your session has ended; sign in again.');

    if (!SAFE_METHODS.has(request.method)) {
      const problem = csrf.problem(request, session.id);
      if (problem) {
        await audit.record({
          actor: { type: 'user', id: session.userId, display: session.email },
          action: 'auth.csrf_rejected',
          target: { type: 'route', id: `${request.method} ${request.routeOptions.url ?? ''}` },
          outcome: 'denied',
          context: auditContextOf(request),
          details: { reason: problem },
        });
        throw new CsrfError();
      }
    }
    if (session.passwordChangeRequired && permission !== SELF_PERMISSION) {
      throw new AppError(403, 'password_change_required', 'Change your password before doing anything else.');
    }
    // Organization permissions are decided by access control, which arrives with roles; until then
    // nothing beyond self-service is granted (default deny).
    if (permission !== SELF_PERMISSION) throw new ForbiddenError();
    return { type: 'user', id: session.userId, display: session.email, session };
  };
}
