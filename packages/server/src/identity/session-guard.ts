import type { FastifyReply, FastifyRequest } from 'fastify';
import { type AccessService, recordDenial } from '../access/access.service.js';
import { type AccessLimit, decide, isAllowed } from '../access/authorize.js';
import { actorOf } from '../access/caller.js';
import { type ApiKeysService, apiKeyActor } from '../apikeys/api-keys.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { Generation } from '../db/read-cache.js';
import { AppError, ForbiddenError, NotFoundError, UnauthenticatedError } from '../errors.js';
import type { RouteGuard } from '../http/app.js';
import { auditContextOf, bearerTokenHashOf, bearerTokenOf } from '../http/request-context.js';
import type { OrgContext, Principal } from '../http/route.js';
import type { ScimSettingsService } from '../scim/scim-settings.service.js';
import type { ExternalTokensService } from '../sso/external-tokens.service.js';
import type { Csrf } from './csrf.js';
import type { LiveSession, SessionsService } from './sessions.service.js';

/** `__Host-`: the browser sends it only to this exact origin over HTTPS (or localhost), path `/`, never set by a subdomain. */
export const SESSION_COOKIE = '__Host-bulwark_session';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Every signed-in user may manage their own session, profile and password. */
export const SELF_PERMISSION = 'self:manage';

/**
 * The SCIM endpoints (SSO-5): held by an organization's SCIM token and by nothing else. No role can
 * grant it (it is outside the catalogue), and a SCIM token reaches no other route.
 */
export const SCIM_PERMISSION = 'scim:provision';

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
    super(
      403,
      'step_up_required',
      'Confirm it is you: re-enter your password (and a code, if you use an authenticator) to continue.',
    );
  }
}

export function setSessionCookie(reply: FastifyReply, token: string): void {
  reply.setCookie(SESSION_COOKIE, token, { path: '/', httpOnly: true, secure: true, sameSite: 'lax' });
}

/** The browser session of a self-service route's caller (the guard guarantees one). */
export function sessionOf(principal: Principal | undefined) {
  if (!principal?.session) throw new Error('self-service route reached without a browser session');
  return principal.session;
}

export function sessionCookieOf(request: FastifyRequest): string | undefined {
  const header = request.headers.cookie;
  return header ? request.server.parseCookie(header)[SESSION_COOKIE] : undefined;
}

/** Refused because an API key may not do this: self-service routes, or privileged ones without the permission. */
export class ApiKeyNotAllowedError extends AppError {
  constructor(message: string) {
    super(403, 'api_key_not_allowed', message);
  }
}

type GuardedRoute = Parameters<RouteGuard>[1];

/**
 * The guard of every permission route. It turns the credential into a principal: an API key in the
 * Authorization header (KEY-1), an organization's SCIM token on the SCIM routes only (SSO-5), or else
 * the session cookie (the session must be live; a
 * state-changing request must carry the CSRF token and come from this origin, AUTH-4; a password
 * that must be changed blocks everything but self-service). On `/api/orgs/:org/…` it loads the
 * caller's access in that organization — not a member answers 404, exactly like an organization that
 * does not exist (ACC-1) — and asks the one decision point whether the caller holds the route's
 * permission anywhere there (a route about one agent asks again about that agent). Privileged routes
 * need a sign-in or re-authentication within the step-up window (MFA-5); a key, which cannot
 * re-authenticate, passes them only when it holds `apikeys:use_privileged`.
 */
export function createRouteGuard(deps: {
  sessions: SessionsService;
  apiKeys: ApiKeysService;
  scim: Pick<ScimSettingsService, 'authenticate'>;
  externalTokens: Pick<ExternalTokensService, 'authenticate'>;
  csrf: Csrf;
  audit: AuditService;
  access: AccessService;
  stepUpMs: number;
  clock: () => number;
}): RouteGuard {
  const { sessions, apiKeys, csrf, audit, access, stepUpMs, clock } = deps;

  /** Loads the caller's access in the route's organization and decides the route's permission there. */
  async function authorizeInOrg(
    request: FastifyRequest,
    route: GuardedRoute,
    principal: Principal,
    generation: Generation | undefined,
    limit?: AccessLimit,
  ): Promise<OrgContext> {
    const { permission } = route.access;
    const routeName = `${route.method} ${route.url}`;
    const actor = actorOf(principal);
    const slug = (request.params as Record<string, unknown> | undefined)?.org;
    const org = typeof slug === 'string' ? await access.load(slug, principal.userId, generation) : undefined;
    // A key acts in its own organization only; anywhere else is "no such organization".
    const keyElsewhere = principal.type === 'api_key' && org?.id !== principal.keyOrgId;
    if (!org || keyElsewhere) {
      await recordDenial(audit, {
        orgId: null,
        actor,
        context: auditContextOf(request),
        permission,
        route: routeName,
        reason:
          typeof slug === 'string'
            ? `not a member of organization "${slug.slice(0, 64)}"${keyElsewhere ? ' with this key' : ''}`
            : 'no instance-wide permissions are granted to users',
      });
      if (typeof slug === 'string') throw new NotFoundError('No such organization.');
      throw new ForbiddenError();
    }
    if (limit) org.access.limit = limit;
    if (!isAllowed(org.access, permission, { kind: 'any' })) {
      const decision = decide(org.access, permission, { kind: 'any' });
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
    return org;
  }

  /** An organization's policy refuses the caller: audited as a denial, answered 403 with `code`. */
  async function refuseByPolicy(
    request: FastifyRequest,
    route: GuardedRoute,
    principal: Principal,
    org: OrgContext,
    refusal: { reason: string; code: string; message: string },
  ): Promise<never> {
    await recordDenial(audit, {
      orgId: org.id,
      actor: actorOf(principal),
      context: auditContextOf(request),
      permission: route.access.permission,
      route: `${route.method} ${route.url}`,
      reason: refusal.reason,
    });
    throw new AppError(403, refusal.code, refusal.message);
  }

  /**
   * MFA-4: in an organization that requires a second factor, a member without one reaches nothing
   * there, through a session or through a key made before the policy or before the factor was removed.
   */
  async function assertMfaPolicy(
    request: FastifyRequest,
    route: GuardedRoute,
    principal: Principal,
    org: OrgContext,
    mfaEnrolled: boolean,
  ): Promise<void> {
    if (!org.mfaRequired || mfaEnrolled) return;
    await refuseByPolicy(request, route, principal, org, {
      reason: 'the organization requires a second factor, and this member has none yet',
      code: 'mfa_enrolment_required',
      message:
        'This organization requires two-factor authentication: add an authenticator app or a passkey in your profile first.',
    });
  }

  /**
   * SSO-4, AUTH-8: in an organization that requires SSO, a session reaches it only when it was signed
   * in through one of the organization's own connections, or when it is the break-glass owner's,
   * signed in with a password and a second factor. Everyone else is sent to their identity provider.
   */
  async function assertSsoPolicy(
    request: FastifyRequest,
    route: GuardedRoute,
    principal: Principal,
    org: OrgContext,
    session: LiveSession,
  ): Promise<void> {
    // A sign-in through one organization's identity provider opens that organization only: its
    // provider (and whoever runs it) vouches for people there, not in the other organizations they
    // belong to.
    if (session.ssoOrgId !== null && session.ssoOrgId !== org.id)
      await refuseByPolicy(request, route, principal, org, {
        reason: "the session was signed in through another organization's identity provider",
        code: 'sso_session_other_org',
        message:
          "You signed in through another organization's identity provider: sign out and sign in to this organization.",
      });
    if (!org.ssoRequired || session.ssoOrgId === org.id) return;
    // Still an owner, signed in with a password and a proved second factor.
    const breakGlass = org.breakGlassUserId === session.userId && org.role === 'owner' && session.mfaEnrolled;
    if (breakGlass) return;
    await refuseByPolicy(request, route, principal, org, {
      reason: 'the organization requires signing in through its identity provider',
      code: 'sso_required',
      message:
        'This organization requires signing in through its identity provider: sign out and choose single sign-on.',
    });
  }

  async function withSession(
    request: FastifyRequest,
    route: GuardedRoute,
    token: string,
    generation: Generation | undefined,
  ): Promise<Principal> {
    const session = await sessions.resolve(token, generation);
    if (!session) throw new UnauthenticatedError('Your session has ended; sign in again.');
    if (session.secondFactorPending && !route.access.beforeSecondFactor)
      throw new AppError(
        401,
        'second_factor_required',
        'Enter the code from your authenticator to finish signing in.',
      );
    const principal: Principal = {
      type: 'user',
      id: session.userId,
      userId: session.userId,
      display: session.email,
      session,
    };
    if (!SAFE_METHODS.has(request.method)) {
      const problem = csrf.problem(request, session.id);
      if (problem) {
        await audit.record({
          actor: actorOf(principal),
          action: 'auth.csrf_rejected',
          target: { type: 'route', id: `${route.method} ${route.url}` },
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
    if (permission !== SELF_PERMISSION) {
      principal.org = await authorizeInOrg(request, route, principal, generation);
      await assertMfaPolicy(
        request,
        route,
        principal,
        principal.org,
        session.mfaEnrolled || session.secondFactorAtProvider,
      );
      await assertSsoPolicy(request, route, principal, principal.org, session);
    }
    if (privileged && clock() - session.authenticatedAt > stepUpMs) throw new StepUpRequiredError();
    return principal;
  }

  async function withApiKey(request: FastifyRequest, route: GuardedRoute, token: string): Promise<Principal> {
    const key = await apiKeys.authenticate(token, bearerTokenHashOf(request, token), auditContextOf(request));
    if (!key) throw new UnauthenticatedError('This API key is not valid: it is unknown, expired or revoked.');
    if (key.password_change_required_at !== null)
      throw new AppError(
        403,
        'password_change_required',
        "The key's member must change their password first.",
      );
    const principal: Principal = {
      ...apiKeyActor(key),
      userId: key.user_id,
      keyOrgId: key.org_id,
    };
    if (route.access.permission === SELF_PERMISSION)
      throw new ApiKeyNotAllowedError('API keys act in their organization; this needs a signed-in person.');
    // Not reused for a key: its lookup above waited on the database, possibly behind a change that
    // committed after the request began, which the generation read then does not show.
    const org = await authorizeInOrg(request, route, principal, undefined, {
      via: `API key ${key.id} (${key.name})`,
      permissions: new Set(JSON.parse(key.permissions) as string[]),
      selector: key.selector,
    });
    principal.org = org;
    await assertMfaPolicy(request, route, principal, org, Boolean(key.mfa_enrolled));
    principal.stepUpExempt = isAllowed(org.access, 'apikeys:use_privileged', { kind: 'any' });
    if (route.access.privileged && !principal.stepUpExempt) {
      await recordDenial(audit, {
        orgId: org.id,
        actor: actorOf(principal),
        context: auditContextOf(request),
        permission: 'apikeys:use_privileged',
        route: `${route.method} ${route.url}`,
        reason: 'a privileged route needs a recent sign-in, which a key cannot give',
      });
      throw new ApiKeyNotAllowedError(
        'This route needs a recent sign-in, which an API key cannot give, unless the key holds apikeys:use_privileged.',
      );
    }
    return principal;
  }

  /** A SCIM route: the organization's SCIM token, for that organization, and nothing else. */
  async function withScimToken(request: FastifyRequest, token: string | undefined): Promise<Principal> {
    const opened = token ? await deps.scim.authenticate(token, bearerTokenHashOf(request, token)) : undefined;
    if (!opened)
      throw new UnauthenticatedError(
        "This endpoint takes the organization's SCIM token as a bearer token; this one is unknown, or was rotated.",
      );
    // Another organization's address with this token: as if it did not exist.
    if ((request.params as Record<string, unknown> | undefined)?.org !== opened.orgSlug)
      throw new NotFoundError('No such organization.');
    return {
      type: 'scim',
      id: opened.orgId,
      userId: '',
      display: 'SCIM provisioning',
      scimOrgId: opened.orgId,
    };
  }

  /**
   * SSO-6: an access token from the organization's identity provider, as the member it was issued
   * for: their role in that organization, nothing of their own account, and no privileged route (a
   * token proves no recent sign-in here).
   */
  async function withExternalToken(
    request: FastifyRequest,
    route: GuardedRoute,
    token: string,
  ): Promise<Principal> {
    const notHere = (why: string) =>
      new AppError(403, 'external_token_not_allowed', `An identity provider's access token ${why}.`);
    if (route.access.permission === SELF_PERMISSION)
      throw notHere("acts in its organization, not on one's own account");
    const slug = (request.params as Record<string, unknown> | undefined)?.org;
    const caller = typeof slug === 'string' ? await deps.externalTokens.authenticate(slug, token) : undefined;
    if (!caller)
      throw new UnauthenticatedError(
        'This bearer token is not valid here: unknown, expired, revoked, for another audience, or for someone not linked to this organization.',
      );
    const principal: Principal = {
      type: 'user',
      id: caller.userId,
      userId: caller.userId,
      display: caller.email,
    };
    const org = await authorizeInOrg(request, route, principal, undefined);
    principal.org = org;
    await assertMfaPolicy(request, route, principal, org, caller.mfaEnrolled);
    if (route.access.privileged) throw notHere('cannot prove a recent sign-in, which this route needs');
    return principal;
  }

  return async (request, route, generation) => {
    const bearer = bearerTokenOf(request);
    if (route.access.permission === SCIM_PERMISSION) return withScimToken(request, bearer);
    if (bearer?.startsWith('bwp_'))
      throw new AppError(403, 'scim_token_not_allowed', 'A SCIM token reaches the SCIM endpoints only.');
    // Bulwark's own tokens name their kind (bwk_, bwp_); anything else is the identity provider's.
    if (bearer && !/^bw[a-z]_/.test(bearer)) return withExternalToken(request, route, bearer);
    if (bearer !== undefined) return withApiKey(request, route, bearer);
    const token = sessionCookieOf(request);
    if (!token) throw new UnauthenticatedError();
    return withSession(request, route, token, generation);
  };
}
