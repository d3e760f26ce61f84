import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import { AppError, NotFoundError, UnauthenticatedError, ValidationError } from '../errors.js';
import type { MfaService, SecondFactorProof } from '../mfa/mfa.service.js';
import type { OrgsStore } from '../orgs/orgs.store.js';
import { EMAIL_SHAPE } from '../shapes.js';
import type { BreachedPasswords } from './breached-passwords.js';
import type { Csrf } from './csrf.js';
import type { LoginLimiter } from './login-limiter.js';
import { passwordProblem } from './password-policy.js';
import type { Passwords } from './passwords.js';
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
  user: {
    id: string;
    email: string;
    displayName: string;
    passwordChangeRequired: boolean;
    mfaEnrolled: boolean;
  };
  /** The password was right; the sign-in waits for a code (POST /api/auth/mfa/verify). */
  secondFactorRequired: boolean;
  memberships: Array<{ orgId: string; slug: string; name: string; role: string; mfaRequired: boolean }>;
  csrfToken: string;
}

type ViewedSession = Pick<
  LiveSession,
  'id' | 'userId' | 'email' | 'displayName' | 'passwordChangeRequired' | 'secondFactorPending' | 'mfaEnrolled'
>;

/** A second factor did not check out: the same answer for a wrong, used or malformed code. */
const wrongCode = () =>
  new ValidationError([
    { path: 'body.code', message: 'is not a valid code from your authenticator or a recovery code' },
  ]);

// One answer whatever went wrong (expired challenge, unknown key, bad signature, a counter that did
// not rise): the audit event has the reason, the person only needs to try again.
const passkeyRefused = () =>
  new ValidationError([{ path: 'body.passkey', message: 'was not accepted; try your passkey again' }]);

export function createAuthService(deps: {
  users: UsersStore;
  orgs: OrgsStore;
  sessions: SessionsService;
  passwords: Passwords;
  csrf: Csrf;
  audit: AuditService;
  limiter: LoginLimiter;
  mfa: MfaService;
  clock: () => number;
  /** The breached-password check (AUTH-1), when configured. */
  breached?: BreachedPasswords;
  /** How the progressive delay waits; a real timer in production. */
  wait?: (ms: number) => Promise<void>;
}) {
  const { users, orgs, sessions, passwords, csrf, audit, limiter, mfa, clock } = deps;
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

  type InTransaction = {
    users: ReturnType<UsersStore['inTransaction']>;
    sessions: ReturnType<SessionsService['inTransaction']>;
  };

  /** Changes users and sessions in one transaction with their audit events (AUD-7): all or nothing. */
  function withEvents<T>(work: (tx: InTransaction, events: AuditInput[]) => Promise<T>): Promise<T> {
    return audit.withEvents((trx, events) =>
      work({ users: users.inTransaction(trx), sessions: sessions.inTransaction(trx) }, events),
    );
  }

  /**
   * Starts a session for the user and records the sessions it ended under the per-user limit (ASVS
   * 7.1.2), each as a revocation: the person sees a device signed out and the log says why.
   */
  async function startSession(
    tx: InTransaction,
    events: AuditInput[],
    user: UserRow,
    context: AuditRequestContext,
    options: Parameters<SessionsService['start']>[2],
  ) {
    const started = await tx.sessions.start(user.id, context, options);
    for (const ended of started.ended) {
      events.push({
        actor: { type: 'user', id: user.id, display: user.email },
        action: 'auth.session_revoked',
        target: { type: 'session', id: ended },
        outcome: 'success',
        context,
        details: { reason: 'session_limit', newSession: started.sessionId },
      });
    }
    return started;
  }

  async function view(session: ViewedSession): Promise<SessionView> {
    return {
      user: {
        id: session.userId,
        email: session.email,
        displayName: session.displayName,
        passwordChangeRequired: session.passwordChangeRequired,
        mfaEnrolled: session.mfaEnrolled,
      },
      secondFactorRequired: session.secondFactorPending,
      // Half signed in, the user sees nothing of their organizations yet.
      memberships: session.secondFactorPending
        ? []
        : (await orgs.membershipsOf(session.userId)).map((m) => ({ ...m, mfaRequired: m.mfaRequired === 1 })),
      csrfToken: csrf.tokenFor(session.id),
    };
  }

  /** The answer to an action that started a session: its token (for the cookie) and its view. */
  async function issued(
    user: UserRow,
    started: { token: string; sessionId: string },
    state: { mfaEnrolled: boolean; secondFactorPending?: boolean },
  ) {
    return {
      token: started.token,
      view: await view({
        id: started.sessionId,
        userId: user.id,
        email: user.email,
        displayName: user.display_name,
        passwordChangeRequired: user.password_change_required_at !== null,
        mfaEnrolled: state.mfaEnrolled,
        secondFactorPending: state.secondFactorPending ?? false,
      }),
    };
  }

  /**
   * Starts a session after a password (or an invitation) proved who this is. With a second factor
   * enrolled, the session waits for it and opens nothing else (MFA-1, MFA-2).
   */
  async function signIn(user: UserRow, context: AuditRequestContext, via: 'password' | 'invitation') {
    const mfaEnrolled = await mfa.isEnrolled(user.id);
    // With a second factor still to prove, the failures counted so far stand: signing in again with
    // the password must not reset the count of wrong codes (AUTH-6).
    if (!mfaEnrolled) await limiter.recordSuccess(user.email);
    const started = await withEvents(async (tx, events) => {
      const session = await startSession(tx, events, user, context, { secondFactorPending: mfaEnrolled });
      events.push({
        actor: { type: 'user', id: user.id, display: user.email },
        action: 'auth.login_succeeded',
        target: { type: 'session', id: session.sessionId },
        outcome: 'success',
        context,
        details: { via, secondFactorRequired: mfaEnrolled },
      });
      return session;
    });
    return issued(user, started, { mfaEnrolled, secondFactorPending: mfaEnrolled });
  }

  /** Refuses a locked account or address, and waits out the progressive delay (AUTH-6). */
  async function waitOutLimits(email: string, context: AuditRequestContext) {
    const { delayMs } = await limiter.check(email, context.ip ?? 'unknown');
    if (delayMs > 0) await wait(delayMs);
  }

  /** Checks a second factor for a step of sign-in or re-authentication; failures count like wrong passwords. */
  async function proveSecondFactor(
    session: LiveSession,
    proof: SecondFactorProof | undefined,
    context: AuditRequestContext,
  ) {
    const owner = { userId: session.userId, email: session.email };
    const check = proof === undefined ? undefined : await mfa.verify(owner, proof, context);
    if (check?.ok) return check.method;
    await audit.record({
      actor: { type: 'user', id: session.userId, display: session.email },
      action: 'auth.mfa_failed',
      target: { type: 'session', id: session.id },
      outcome: 'failure',
      context,
      details: { reason: check?.reason ?? 'no_code' },
    });
    await countFailure(session.email, context, session.userId);
    throw proof && 'passkey' in proof ? passkeyRefused() : wrongCode();
  }

  /**
   * Replaces a session by a new one after a fresh proof (a new id at a privilege change, AUTH-3) that
   * keeps the old one's absolute end, so that proving again never extends a session's lifetime.
   */
  async function replaceSession(
    session: LiveSession,
    user: UserRow,
    context: AuditRequestContext,
    event: {
      action: 'auth.mfa_verified' | 'auth.reauthenticated';
      reason: string;
      details: { [key: string]: string | null };
    },
    alsoRecorded: AuditInput[] = [],
  ) {
    const started = await withEvents(async (tx, events) => {
      // Exactly one replacement per session: a second proof racing this one finds it ended.
      if (!(await tx.sessions.end(session.id, event.reason)))
        throw new UnauthenticatedError('Your session has ended; sign in again.');
      // A session signed in through SSO stays one: an organization requiring SSO still admits it.
      const replacement = await startSession(tx, events, user, context, {
        expiresAt: session.expiresAt,
        ...(session.ssoConnectionId ? { ssoConnectionId: session.ssoConnectionId } : {}),
      });
      events.push({
        actor: { type: 'user', id: user.id, display: user.email },
        action: event.action,
        target: { type: 'session', id: replacement.sessionId },
        outcome: 'success',
        context,
        details: { ...event.details, replaced: session.id },
      });
      events.push(...alsoRecorded);
      return replacement;
    });
    // Neither proof changes enrolment: the second step exists only for enrolled users.
    return issued(user, started, { mfaEnrolled: session.mfaEnrolled });
  }

  return {
    view,

    /** The live session a cookie's token opens, if any (an ended or malformed one is no session). */
    liveSession: (token: string | undefined) =>
      token ? sessions.resolve(token) : Promise.resolve(undefined),

    /** Refuses (503 `auth_busy`) when password hashing is at capacity, before a sign-in does any work. */
    assertCanVerifyPasswords: () => passwords.assertCapacity(),

    async login(
      input: { email: string; password: string },
      context: AuditRequestContext,
    ): Promise<{ token: string; view: SessionView }> {
      passwords.assertCapacity();
      const email = input.email.trim().toLowerCase();
      // Locked accounts and addresses are refused before any hashing; the answer is the same whether
      // or not the account exists, because the key is whatever was typed.
      await waitOutLimits(email, context);
      const user = await users.findByEmail(email);
      const verdict = user?.password_hash
        ? await passwords.check(user.id, user.password_hash, input.password)
        : await passwords.verifyNothing(input.password).then(() => 'mismatch' as const);
      if (!user || verdict !== 'match' || user.status !== 'active') {
        await audit.record({
          actor: { type: 'anonymous', display: attemptedIdentity(email) },
          action: 'auth.login_failed',
          target: user ? { type: 'user', id: user.id, display: user.email } : null,
          outcome: 'failure',
          context,
          details: {
            reason: !user
              ? 'unknown_account'
              : verdict === 'tampered'
                ? 'credential_integrity'
                : verdict === 'mismatch'
                  ? 'wrong_password'
                  : 'account_disabled',
          },
        });
        await countFailure(email, context, user?.id);
        throw new InvalidCredentialsError();
      }
      // A new session, and so a new id, at every sign-in: a session id planted before sign-in is worthless.
      return signIn(user, context, 'password');
    },

    /** Signs in a user who just created their account from an invitation (the token was their proof). */
    signIn,

    /**
     * The second step of a sign-in: a code from an authenticator or a recovery code. The waiting
     * session is replaced by a full one (a new id at a privilege change) that keeps its absolute end.
     */
    async completeSecondFactor(
      session: LiveSession,
      proof: SecondFactorProof,
      context: AuditRequestContext,
    ): Promise<{ token: string; view: SessionView }> {
      if (!session.secondFactorPending)
        throw new AppError(409, 'not_waiting_for_second_factor', 'This session is already signed in.');
      await waitOutLimits(session.email, context);
      const user = await users.findById(session.userId);
      if (!user) throw new UnauthenticatedError('Your session has ended; sign in again.');
      const method = await proveSecondFactor(session, proof, context);
      await limiter.recordSuccess(session.email);
      // AUTH-8: a password sign-in by the break-glass owner of an organization that requires SSO is
      // the emergency it exists for, or someone holding that owner's password and factor.
      const breakGlass = (await orgs.breakGlassOrgsOf(user.id)).map(
        (org): AuditInput => ({
          orgId: org.id,
          actor: { type: 'user', id: user.id, display: user.email },
          action: 'auth.break_glass_sign_in',
          target: { type: 'user', id: user.id, display: user.email },
          outcome: 'success',
          context,
          details: { severity: 'critical', via: 'password and second factor', secondFactor: method },
        }),
      );
      return replaceSession(
        session,
        user,
        context,
        { action: 'auth.mfa_verified', reason: 'replaced after the second factor', details: { method } },
        breakGlass,
      );
    },

    /**
     * Re-proves the password for step-up (MFA-5). The session is replaced by a new one (a new id at a
     * privilege change) that keeps the old one's absolute end. Failures count like sign-in failures.
     */
    async reauthenticate(
      session: LiveSession,
      proof: { password: string; secondFactor?: SecondFactorProof | undefined },
      context: AuditRequestContext,
    ): Promise<{ token: string; view: SessionView }> {
      const { password } = proof;
      passwords.assertCapacity();
      await waitOutLimits(session.email, context);
      const user = await users.findById(session.userId);
      if (
        !user?.password_hash ||
        (await passwords.check(user.id, user.password_hash, password)) !== 'match'
      ) {
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
      // MFA-5: with a factor enrolled, the password alone does not re-prove who this is.
      const method = session.mfaEnrolled
        ? await proveSecondFactor(session, proof.secondFactor, context)
        : undefined;
      return replaceSession(session, user, context, {
        action: 'auth.reauthenticated',
        reason: 'replaced at re-authentication',
        details: { secondFactor: method ?? null },
      });
    },

    listSessions: (userId: string) => sessions.listOf(userId),

    /** How many other live sessions the user has: a factor change offers to end them (AUTH-5). */
    async otherSessionsOf(session: LiveSession): Promise<number> {
      return (await sessions.listOf(session.userId)).filter((row) => row.id !== session.id).length;
    },

    /** Ends every session of the user but this one (AUTH-5, AUTH-7); returns how many it ended. */
    async revokeOtherSessions(session: LiveSession, context: AuditRequestContext): Promise<number> {
      return withEvents(async (tx, events) => {
        const ended = await tx.sessions.endAllOf(
          session.userId,
          'ended by its user from another session',
          session.id,
        );
        events.push({
          actor: { type: 'user', id: session.userId, display: session.email },
          action: 'auth.session_revoked',
          target: { type: 'user', id: session.userId, display: session.email },
          outcome: 'success',
          context,
          details: { allOthers: true, ended },
        });
        return ended;
      });
    },

    /** Ends one of the caller's own sessions (AUTH-7); another user's session id is simply not found. */
    async revokeSession(
      session: LiveSession,
      sessionId: string,
      context: AuditRequestContext,
    ): Promise<void> {
      const target = await sessions.openSessionOf(session.userId, sessionId);
      if (!target) throw new NotFoundError('No such session.');
      await withEvents(async (tx, events) => {
        await tx.sessions.end(sessionId, 'revoked by its user');
        events.push({
          actor: { type: 'user', id: session.userId, display: session.email },
          action: 'auth.session_revoked',
          target: { type: 'session', id: sessionId },
          outcome: 'success',
          context,
          details: { current: sessionId === session.id },
        });
      });
    },

    async logout(session: LiveSession, context: AuditRequestContext): Promise<void> {
      await withEvents(async (tx, events) => {
        await tx.sessions.end(session.id, 'logout');
        events.push({
          actor: { type: 'user', id: session.userId, display: session.email },
          action: 'auth.logout',
          target: { type: 'session', id: session.id },
          outcome: 'success',
          context,
        });
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
      await waitOutLimits(session.email, context);
      const user = await users.findById(session.userId);
      if (
        !user?.password_hash ||
        (await passwords.check(user.id, user.password_hash, input.currentPassword)) !== 'match'
      ) {
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
          : await passwordProblem(
              input.newPassword,
              {
                email: user.email,
                ...(memberships[0] ? { orgName: memberships[0].name, orgSlug: memberships[0].slug } : {}),
              },
              deps.breached,
            );
      if (problem) throw new ValidationError([{ path: 'body.newPassword', message: problem.message }]);

      const passwordHash = await passwords.verifierFor(user.id, input.newPassword);
      const started = await withEvents(async (tx, events) => {
        await tx.users.setPassword(user.id, passwordHash, clock(), false);
        const ended = await tx.sessions.endAllOf(user.id, 'password changed');
        // The current password is not a step-up: the new session keeps the old one's last proof.
        const renewed = await startSession(tx, events, user, context, {
          authenticatedAt: session.authenticatedAt,
        });
        events.push({
          actor: { type: 'user', id: user.id, display: user.email },
          action: 'auth.password_changed',
          target: { type: 'user', id: user.id, display: user.email },
          outcome: 'success',
          context,
          details: { sessionsEnded: ended },
        });
        return renewed;
      });
      return issued({ ...user, password_change_required_at: null }, started, {
        mfaEnrolled: session.mfaEnrolled,
      });
    },
  };
}

export type AuthService = ReturnType<typeof createAuthService>;
