import type { AuditService } from '../audit/audit.service.js';
import type { AuditRequestContext } from '../audit/audit.types.js';
import { AppError, NotFoundError, ValidationError } from '../errors.js';
import { EMAIL_SHAPE } from '../http/schemas.js';
import type { OrgsStore } from '../orgs/orgs.store.js';
import type { Csrf } from './csrf.js';
import type { LoginLimiter } from './login-limiter.js';
import type { PasswordHasher } from './password-hasher.js';
import { passwordProblem } from './password-policy.js';
import type { LiveSession, SessionsService } from './sessions.service.js';
import type { UserRow, UsersStore } from './users.store.js';

/**
 * Sign-in, sign-out and password change (AUTH-1, AUTH-2, AUTH-5). Every failed sign-in looks the same
 * to the caller, whether the account does not exist, the password is wrong or the account is
 * disabled: the same status and body, and the same work (an unknown account costs a real argon2
 * verification), so neither the answer nor its timing tells an attacker which accounts exist.
 */

export class InvalidCredentialsError extends AppError {
  constructor() {
    super(401, 'invalid_credentials', 'The email or password is not correct.');
  }
}

/**
 * What a failed sign-in records as the caller. People type their password into the email field; the
 * audit log and its exports must not keep it, so only an email-shaped identifier is recorded.
 */
function attemptedIdentity(email: string): string {
  return EMAIL_SHAPE.test(email) ? email : '(not an email address)';
}

export interface SessionView {
  user: { id: string; email: string; displayName: string; passwordChangeRequired: boolean };
  memberships: Array<{ orgId: string; slug: string; name: string; role: string }>;
  csrfToken: string;
}

export function createAuthService(deps: {
  users: UsersStore;
  orgs: OrgsStore;
  sessions: SessionsService;
  hasher: PasswordHasher;
  csrf: Csrf;
  audit: AuditService;
  limiter: LoginLimiter;
  clock: () => number;
  /** How the progressive delay waits; a real timer in production. */
  wait?: (ms: number) => Promise<void>;
}) {
  const { users, orgs, sessions, hasher, csrf, audit, limiter, clock } = deps;
  const wait = deps.wait ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));

  /**
   * Counts a failed password proof against the account and the address (AUTH-6) and audits every
   * lockout that began with it, once.
   */
  async function countFailure(email: string, context: AuditRequestContext, userId?: string) {
    const { lockouts } = await limiter.recordFailure(email, context.ip ?? 'unknown');
    for (const lockout of lockouts) {
      await audit.record({
        actor: { type: 'anonymous', display: lockout.scope === 'account' ? attemptedIdentity(email) : null },
        action: 'auth.locked_out',
        target: userId ? { type: 'user', id: userId, display: email } : null,
        outcome: 'denied',
        context,
        details: { scope: lockout.scope, retryAfterSeconds: lockout.retryAfterSeconds },
      });
    }
  }

  async function view(
    session: Pick<LiveSession, 'id' | 'userId' | 'email' | 'displayName' | 'passwordChangeRequired'>,
  ): Promise<SessionView> {
    return {
      user: {
        id: session.userId,
        email: session.email,
        displayName: session.displayName,
        passwordChangeRequired: session.passwordChangeRequired,
      },
      memberships: await orgs.membershipsOf(session.userId),
      csrfToken: csrf.tokenFor(session.id),
    };
  }

  /** The answer to an action that started a session: its token (for the cookie) and its view. */
  async function issued(user: UserRow, started: { token: string; sessionId: string }) {
    return {
      token: started.token,
      view: await view({
        id: started.sessionId,
        userId: user.id,
        email: user.email,
        displayName: user.display_name,
        passwordChangeRequired: user.password_change_required_at !== null,
      }),
    };
  }

  async function signIn(user: UserRow, context: AuditRequestContext, via: 'password' | 'invitation') {
    const started = await sessions.start(user.id, context);
    await audit.record({
      actor: { type: 'user', id: user.id, display: user.email },
      action: 'auth.login_succeeded',
      target: { type: 'session', id: started.sessionId },
      outcome: 'success',
      context,
      details: { via },
    });
    return issued(user, started);
  }

  return {
    view,

    /** The live session a cookie's token opens, if any (an ended or malformed one is no session). */
    liveSession: (token: string | undefined) =>
      token ? sessions.resolve(token) : Promise.resolve(undefined),

    /** Refuses (503 `auth_busy`) when password hashing is at capacity, before a sign-in does any work. */
    assertCanVerifyPasswords: () => hasher.assertCapacity(),

    async login(
      input: { email: string; password: string },
      context: AuditRequestContext,
    ): Promise<{ token: string; view: SessionView }> {
      hasher.assertCapacity();
      const email = input.email.trim().toLowerCase();
      const ip = context.ip ?? 'unknown';
      // Locked accounts and addresses are refused before any hashing; the answer is the same whether
      // or not the account exists, because the key is whatever was typed.
      const { delayMs } = await limiter.check(email, ip);
      if (delayMs > 0) await wait(delayMs);
      const user = await users.findByEmail(email);
      const passwordMatches = user?.password_hash
        ? await hasher.verify(user.password_hash, input.password)
        : await hasher.verifyNothing(input.password);
      if (!user || !passwordMatches || user.status !== 'active') {
        await audit.record({
          actor: { type: 'anonymous', display: attemptedIdentity(email) },
          action: 'auth.login_failed',
          target: user ? { type: 'user', id: user.id, display: user.email } : null,
          outcome: 'failure',
          context,
          details: {
            reason: !user ? 'unknown_account' : !passwordMatches ? 'wrong_password' : 'account_disabled',
          },
        });
        await countFailure(email, context, user?.id);
        throw new InvalidCredentialsError();
      }
      await limiter.recordSuccess(email);
      // A new session, and so a new id, at every sign-in: a session id planted before sign-in is worthless.
      return signIn(user, context, 'password');
    },

    /** Signs in a user who just created their account from an invitation (the token was their proof). */
    signIn,

    /**
     * Re-proves the password for step-up (MFA-5). The session is replaced by a new one (a new id at a
     * privilege change) that keeps the old one's absolute end. Failures count like sign-in failures.
     */
    async reauthenticate(
      session: LiveSession,
      password: string,
      context: AuditRequestContext,
    ): Promise<{ token: string; view: SessionView }> {
      hasher.assertCapacity();
      await limiter.check(session.email, context.ip ?? 'unknown');
      const user = await users.findById(session.userId);
      const open = await sessions.openSessionOf(session.userId, session.id);
      if (!user?.password_hash || !open || !(await hasher.verify(user.password_hash, password))) {
        await audit.record({
          actor: { type: 'user', id: session.userId, display: session.email },
          action: 'auth.reauthenticated',
          target: { type: 'session', id: session.id },
          outcome: 'failure',
          context,
          details: { reason: 'wrong_password' },
        });
        await countFailure(session.email, context, session.userId);
        throw new ValidationError([{ path: 'body.password', message: 'is not your password' }]);
      }
      await sessions.end(session.id, 'replaced at re-authentication');
      const started = await sessions.start(user.id, context, open.expires_at);
      await audit.record({
        actor: { type: 'user', id: user.id, display: user.email },
        action: 'auth.reauthenticated',
        target: { type: 'session', id: started.sessionId },
        outcome: 'success',
        context,
        details: { replaced: session.id },
      });
      return issued(user, started);
    },

    listSessions: (userId: string) => sessions.listOf(userId),

    /** Ends one of the caller's own sessions (AUTH-7); another user's session id is simply not found. */
    async revokeSession(
      session: LiveSession,
      sessionId: string,
      context: AuditRequestContext,
    ): Promise<void> {
      const target = await sessions.openSessionOf(session.userId, sessionId);
      if (!target) throw new NotFoundError('No such session.');
      await sessions.end(sessionId, 'revoked by its user');
      await audit.record({
        actor: { type: 'user', id: session.userId, display: session.email },
        action: 'auth.session_revoked',
        target: { type: 'session', id: sessionId },
        outcome: 'success',
        context,
        details: { current: sessionId === session.id },
      });
    },

    async logout(session: LiveSession, context: AuditRequestContext): Promise<void> {
      await sessions.end(session.id, 'logout');
      await audit.record({
        actor: { type: 'user', id: session.userId, display: session.email },
        action: 'auth.logout',
        target: { type: 'session', id: session.id },
        outcome: 'success',
        context,
      });
    },

    /**
     * Changes the password after re-proving the current one, ends every other session of the user,
     * and replaces the current session with a new one (a privilege change gets a new id).
     */
    async changePassword(
      session: LiveSession,
      input: { currentPassword: string; newPassword: string },
      context: AuditRequestContext,
    ): Promise<{ token: string; view: SessionView }> {
      // A stolen session must not become a way to guess the password without limits.
      await limiter.check(session.email, context.ip ?? 'unknown');
      const user = await users.findById(session.userId);
      if (!user?.password_hash || !(await hasher.verify(user.password_hash, input.currentPassword))) {
        await audit.record({
          actor: { type: 'user', id: session.userId, display: session.email },
          action: 'auth.password_changed',
          outcome: 'failure',
          context,
          details: { reason: 'wrong_current_password' },
        });
        await countFailure(session.email, context, session.userId);
        throw new ValidationError([
          { path: 'body.currentPassword', message: 'is not your current password' },
        ]);
      }
      const memberships = await orgs.membershipsOf(user.id);
      const problem =
        input.newPassword === input.currentPassword
          ? { message: 'Choose a password different from the current one.' }
          : passwordProblem(input.newPassword, {
              email: user.email,
              ...(memberships[0] ? { orgName: memberships[0].name, orgSlug: memberships[0].slug } : {}),
            });
      if (problem) throw new ValidationError([{ path: 'body.newPassword', message: problem.message }]);

      await users.setPassword(user.id, await hasher.hash(input.newPassword), clock(), false);
      const ended = await sessions.endAllOf(user.id, 'password changed');
      const started = await sessions.start(user.id, context);
      await audit.record({
        actor: { type: 'user', id: user.id, display: user.email },
        action: 'auth.password_changed',
        target: { type: 'user', id: user.id, display: user.email },
        outcome: 'success',
        context,
        details: { sessionsEnded: ended },
      });
      return issued({ ...user, password_change_required_at: null }, started);
    },
  };
}

export type AuthService = ReturnType<typeof createAuthService>;
