import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { ServiceUnavailableError } from '../errors.js';

/**
 * Fixed-window limiters (requests per route class, per API key, agent connection attempts) whose
 * counters live where the deployment says: in this process's memory for a single instance, or in
 * Redis, shared by every instance behind the load balancer (HA-1), so that spreading requests over
 * N instances buys a client nothing, not N times the limit. Sign-in has its own limiter
 * (identity/login-limiter.ts): it counts failures, not requests.
 */

/** Where the counters live: Redis when the deployment has one, memory otherwise. */
export interface LimiterStore {
  redis?: Redis | undefined;
  /** Names every counter in Redis: `<keyPrefix>:<limit name>:<key>`; DEFAULT_LIMITER_PREFIX unless given. */
  keyPrefix?: string;
}

export const DEFAULT_LIMITER_PREFIX = 'bulwark:rl';

/**
 * What a limit does while Redis cannot answer (down, unreachable, timing out, a certificate refused).
 * `refuse`: the request is refused with 503 `rate_limit_unavailable` (fails closed: an attacker who
 * can disturb Redis must not thereby lift the limit). `local`: each instance counts in its own memory
 * until Redis answers again, so the limit still holds per instance (N instances allow up to N times
 * the limit) and the service stays up. Counting resumes in Redis with the next request once it is back.
 */
export type WhenStoreDown = 'refuse' | 'local';

export interface WindowLimit {
  /** Names the counters, e.g. `http:write`; distinct limits must have distinct names. */
  name: string;
  /** Requests allowed per key in one window. */
  points: number;
  windowSeconds: number;
  whenStoreDown: WhenStoreDown;
  /**
   * The code of the 503 a `refuse` limit answers with. `auth_unavailable` for the authentication
   * routes: the answer sign-in has always given while Redis is down (identity/login-limiter.ts).
   */
  unavailableCode?: UnavailableCode;
}

const UNAVAILABLE_MESSAGES = {
  rate_limit_unavailable: 'Request limits cannot be checked right now; try again in a moment.',
  auth_unavailable: 'Authentication is temporarily unavailable; try again in a moment.',
};
export type UnavailableCode = keyof typeof UNAVAILABLE_MESSAGES;

export type Admission = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export class RateLimitUnavailableError extends ServiceUnavailableError {
  constructor(cause: unknown, code: UnavailableCode = 'rate_limit_unavailable') {
    super(code, UNAVAILABLE_MESSAGES[code]);
    // For the server log only; the error handler never sends it.
    this.cause = cause;
  }
}

export function createWindowLimiter(store: LimiterStore, limit: WindowLimit) {
  if (!Number.isInteger(limit.points) || limit.points < 1)
    throw new Error(`limit ${limit.name}: points must be a positive integer, got ${limit.points}`);
  const options = {
    keyPrefix: `${store.keyPrefix ?? DEFAULT_LIMITER_PREFIX}:${limit.name}`,
    points: limit.points,
    duration: limit.windowSeconds,
  };
  // No in-memory block cache: a key blocked in one instance's memory would outlast a reset in Redis,
  // and the decision would no longer be the shared one.
  const limiter = store.redis
    ? new RateLimiterRedis({
        ...options,
        storeClient: store.redis,
        // While the client is (re)connecting, fail at once rather than queue behind the outage.
        rejectIfRedisNotReady: true,
        ...(limit.whenStoreDown === 'local' ? { insuranceLimiter: new RateLimiterMemory(options) } : {}),
      })
    : new RateLimiterMemory(options);

  return {
    /** Counts one request for `key`; throws RateLimitUnavailableError when the store cannot decide. */
    async take(key: string): Promise<Admission> {
      try {
        await limiter.consume(key);
        return { allowed: true };
      } catch (outcome) {
        // A RateLimiterRes is the limiter's "no"; anything else is the store failing (with `local`,
        // the memory fallback has already answered, so only `refuse` limits get here).
        if (outcome instanceof RateLimiterRes)
          return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(outcome.msBeforeNext / 1000)) };
        throw new RateLimitUnavailableError(outcome, limit.unavailableCode);
      }
    },
  };
}

export type WindowLimiter = ReturnType<typeof createWindowLimiter>;
