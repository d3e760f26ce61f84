import { generateToken, isWellFormedToken, newId, tokenHash } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import type { AuditRequestContext } from '../audit/audit.types.js';
import { type Generation, ReadCache } from '../db/read-cache.js';
import type { DB, SessionsTable } from '../db/schema.js';
import { unlessStorageFull } from '../errors.js';
import type { CredentialSeals, CredentialSealsIn } from './credential-seals.js';
import type { SessionsStore, SessionsStoreIn } from './sessions.store.js';

/**
 * Server-side sessions (AUTH-3): the browser holds a 256-bit token, the database only its SHA-256, so
 * a copy of the database opens no session. A session ends when unused for the idle timeout, at its
 * absolute lifetime, at logout, or when revoked; it survives a server restart because it lives in the
 * database, not in memory.
 */

export interface SessionPolicy {
  idleMs: number;
  absoluteMs: number;
  /** Live sessions one user may hold at once (ASVS 7.1.2); starting one more ends the oldest. */
  maxPerUser: number;
}

export interface LiveSession {
  id: string;
  userId: string;
  email: string;
  displayName: string;
  passwordChangeRequired: boolean;
  authenticatedAt: number;
  /** The absolute end; a session that replaces this one keeps it. */
  expiresAt: number;
  /** Signed in with the password, waiting for the second factor: opens nothing but that step. */
  secondFactorPending: boolean;
  /** The user has a confirmed second factor (MFA-1, MFA-2). */
  mfaEnrolled: boolean;
  /** The SSO connection this session was signed in through, and its organization; null for a password. */
  ssoConnectionId: string | null;
  ssoOrgId: string | null;
  /** The provider said a second factor was proved there: it counts for an organization's MFA policy. */
  secondFactorAtProvider: boolean;
}

/** Writing last-seen on every request would turn every read into a write; once a minute is enough. */
const TOUCH_EVERY_MS = 60_000;

/** Sessions whose rows are kept between requests; past that, the oldest read go first. */
const SESSION_ROWS_CACHED = 10_000;

type SessionRow = NonNullable<Awaited<ReturnType<SessionsStore['findLive']>>>;

export function createSessionsService(deps: {
  store: SessionsStore;
  seals: CredentialSeals;
  clock: () => number;
  policy: SessionPolicy;
}) {
  return {
    ...sessionsServiceOn(deps),
    /** This service, writing inside `trx`: for changes that commit with their audit events (AUD-7). */
    inTransaction: (trx: Kysely<DB>) =>
      sessionsServiceOn({
        ...deps,
        store: deps.store.inTransaction(trx),
        seals: deps.seals.inTransaction(trx),
      }),
  };
}

function sessionsServiceOn(deps: {
  store: SessionsStoreIn;
  seals: CredentialSealsIn;
  clock: () => number;
  policy: SessionPolicy;
}) {
  const { store, seals, clock, policy } = deps;
  const rows = new ReadCache<SessionRow>({ maxEntries: SESSION_ROWS_CACHED });

  /**
   * Ends the user's oldest live sessions beyond the limit, keeping the one just started; returns the
   * ids this call ended (a concurrent sign-in may have ended some first). A session waiting for its
   * second factor counts only among those waiting: a password alone must not push out the sessions of
   * someone who proved both factors.
   */
  async function endBeyondLimit(
    userId: string,
    startedId: string,
    secondFactorPending: boolean,
    now: number,
  ) {
    const others = await store.liveOthersOf(userId, startedId, {
      secondFactorPending,
      now,
      idleMs: policy.idleMs,
    });
    const ended: string[] = [];
    for (const { id } of others.slice(policy.maxPerUser - 1)) {
      if (await store.revoke(id, now, 'ended: session limit')) ended.push(id);
    }
    return ended;
  }

  return {
    /**
     * Starts a session and returns the token to hand to the browser, once, with the ids of the
     * sessions it ended under the per-user limit. `expiresAt` carries a replaced session's absolute
     * end over, so re-authenticating never extends a session's lifetime; `authenticatedAt` carries its
     * last proof over when the new one proves less (a password change is not a step-up).
     */
    async start(
      userId: string,
      context: AuditRequestContext,
      options: {
        expiresAt?: number;
        authenticatedAt?: number;
        secondFactorPending?: boolean;
        /** Signed in through this SSO connection (an organization requiring SSO admits only these). */
        ssoConnectionId?: string;
        /** The provider's ID token said a second factor was proved there. */
        secondFactorAtProvider?: boolean;
      } = {},
    ): Promise<{ token: string; sessionId: string; ended: string[] }> {
      const { expiresAt, authenticatedAt, secondFactorPending = false, ssoConnectionId } = options;
      const secondFactorAtProvider = options.secondFactorAtProvider ? 1 : 0;
      const now = clock();
      const token = generateToken('bws');
      const sessionId = newId('ses', now);
      const row: SessionsTable = {
        id: sessionId,
        token_hash: tokenHash(token),
        user_id: userId,
        created_at: now,
        last_seen_at: now,
        expires_at: expiresAt ?? now + policy.absoluteMs,
        authenticated_at: authenticatedAt ?? now,
        ip: context.ip ?? null,
        user_agent: context.userAgent ?? null,
        revoked_at: null,
        revoked_reason: null,
        second_factor_pending: secondFactorPending ? 1 : 0,
        sso_connection_id: ssoConnectionId ?? null,
        second_factor_at_provider: secondFactorAtProvider,
        seal: '',
      };
      row.seal = await seals.seal('session', row);
      await store.insert(row);
      return { token, sessionId, ended: await endBeyondLimit(userId, sessionId, secondFactorPending, now) };
    },

    /**
     * The live session a token opens, or undefined; an expired one is ended on the way. Given the
     * database's generation, the session's row is reused while nothing has been written since it was
     * read; lifetimes are checked against the clock every time.
     */
    async resolve(token: string, generation?: Generation): Promise<LiveSession | undefined> {
      const hash = tokenHash(token);
      // A remembered row was read for this very token, whose checksum was checked then.
      let row = rows.lookup(hash, generation);
      if (row === undefined) {
        if (!isWellFormedToken(token, 'bws')) return undefined;
        row = await store.findLive(hash);
        // A session row the server did not issue (written into the database) opens nothing.
        if (row && !(await seals.holds('session', row, { id: row.id, userId: row.user_id })))
          return undefined;
        if (row) rows.store(hash, generation, row);
      }
      if (row?.status !== 'active') return undefined;
      const now = clock();
      if (now >= row.expires_at) {
        await store.revoke(row.id, now, 'expired: absolute lifetime');
        return undefined;
      }
      if (now - row.last_seen_at >= policy.idleMs) {
        await store.revoke(row.id, now, 'expired: idle');
        return undefined;
      }
      // A full disk must not stop reads: a missed touch only makes the session look idle sooner.
      if (now - row.last_seen_at >= TOUCH_EVERY_MS) await store.touch(row.id, now).catch(unlessStorageFull);
      return {
        id: row.id,
        userId: row.user_id,
        email: row.email,
        displayName: row.display_name,
        passwordChangeRequired: row.password_change_required_at !== null,
        authenticatedAt: row.authenticated_at,
        expiresAt: row.expires_at,
        secondFactorPending: row.second_factor_pending === 1,
        // SQLite answers 0/1, PostgreSQL true/false.
        mfaEnrolled: Boolean(row.mfa_enrolled),
        ssoConnectionId: row.sso_connection_id ?? null,
        ssoOrgId: row.sso_org_id ?? null,
        secondFactorAtProvider: row.second_factor_at_provider === 1,
      };
    },

    end: (sessionId: string, reason: string) => store.revoke(sessionId, clock(), reason),

    /** The user's live sessions (AUTH-7), newest use first. */
    async listOf(userId: string) {
      const now = clock();
      return (await store.listOpen(userId)).filter(
        (row) => now < row.expires_at && now - row.last_seen_at < policy.idleMs,
      );
    },

    /** The absolute end of one of the user's open sessions, or undefined when it is not theirs or has ended. */
    async openSessionOf(userId: string, sessionId: string) {
      return store.findOpenOf(userId, sessionId);
    },

    endAllOf: (userId: string, reason: string, exceptSessionId?: string) =>
      store.revokeAllOf(userId, clock(), reason, exceptSessionId),
  };
}

export type SessionsService = ReturnType<typeof createSessionsService>;
