import { hash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterRes } from 'rate-limiter-flexible';
import { AppError, ServiceUnavailableError } from '../errors.js';

/**
 * Brute-force limits of sign-in (AUTH-6). Failures are counted per account and per source address in
 * a fixed window; reaching a limit locks that key until its window ends. Several instances share the
 * counters through Redis; a single instance keeps them in memory.
 */

export interface LoginLimits {
  /** Failed sign-ins for one email within the window before that email is locked. */
  accountFailures: number;
  /** Failed sign-ins from one address (an IPv6 /64) within the window before it is locked. */
  ipFailures: number;
  /** Length of the counting window, and so the longest a lockout lasts, in seconds. */
  windowSeconds: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = Object.freeze({
  accountFailures: 10,
  ipFailures: 50,
  windowSeconds: 15 * 60,
});

export class TooManyAttemptsError extends AppError {
  constructor(readonly retryAfterSeconds: number) {
    // One wording for account and address locks, so the answer tells nothing about the account.
    super(429, 'too_many_attempts', 'Too many sign-in attempts; try again later.');
  }
}

export class LimiterUnavailableError extends ServiceUnavailableError {
  constructor(cause?: unknown) {
    super('auth_unavailable', 'Sign-in is temporarily unavailable; try again in a moment.');
    // Kept for the server log only; the error handler never sends it.
    this.cause = cause;
  }
}

const FREE_FAILURES = 3;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 4000;

/**
 * How long to wait before verifying the next password of an account that has `accountFailures`
 * recent failures. A few typos cost nothing; after that each guess gets slower, which caps an online
 * guesser well below the lockout rate without making a legitimate user wait more than seconds.
 */
export function progressiveDelayMs(accountFailures: number): number {
  if (!(accountFailures > FREE_FAILURES)) return 0;
  return Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (accountFailures - FREE_FAILURES - 1));
}

/**
 * The store key of an account: hashed so that Redis (its memory, RDB/AOF files, MONITOR, backups)
 * never holds an email address, and normalized so that case or stray spaces give no fresh counter.
 */
function accountKey(account: string): string {
  return hash('sha256', account.trim().toLowerCase(), 'hex');
}

/**
 * The store key of a source address. An IPv4-mapped IPv6 address counts as the IPv4 address, and an
 * IPv6 address counts as its /64: one subscriber or server usually holds a whole /64, so per-address
 * counting would let it rotate through 2^64 fresh counters.
 */
export function addressKey(ip: string): string {
  const address = ip.trim().replace(/%.*$/, '').toLowerCase();
  if (isIPv4(address)) return address;
  if (!isIPv6(address)) return address;
  const groups = ipv6Groups(address);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const [high = 0, low = 0] = groups.slice(6);
    return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a dotted IPv4 tail converted). */
function ipv6Groups(address: string): number[] {
  let text = address;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const fill = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((g) => Number.parseInt(g, 16));
}

type Limiter = RateLimiterMemory | RateLimiterRedis;

function assertLimits(limits: LoginLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 1) {
      throw new Error(`login limits: ${name} must be a positive integer, got ${value}`);
    }
  }
}

export function createLoginLimiter(deps: { limits: LoginLimits; redis?: Redis; keyPrefix?: string }) {
  const { limits, redis } = deps;
  assertLimits(limits);
  const prefix = deps.keyPrefix ?? 'bulwark:login';

  // No insuranceLimiter and no in-memory block cache: with several instances, a per-instance
  // fallback would multiply the limits by the number of instances exactly when Redis is down, which
  // an attacker can provoke. Every decision comes from the shared store or fails with 503.
  const make = (scope: 'account' | 'ip', points: number): Limiter => {
    const options = { keyPrefix: `${prefix}:${scope}`, points, duration: limits.windowSeconds };
    return redis ? new RateLimiterRedis({ ...options, storeClient: redis }) : new RateLimiterMemory(options);
  };
  const accounts = make('account', limits.accountFailures);
  const addresses = make('ip', limits.ipFailures);

  /** Any store error means the limiter cannot decide: refuse the sign-in rather than skip the check. */
  async function ask<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw new LimiterUnavailableError(error);
    }
  }

  /**
   * Failures counted in the current window. The memory store answers a record whose time is up but
   * whose cleanup timer has not fired yet with a negative `msBeforeNext`: that window is over.
   */
  function live(res: RateLimiterRes | null): RateLimiterRes | null {
    return res && res.msBeforeNext > 0 ? res : null;
  }

  const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

  return {
    store: (redis ? 'redis' : 'memory') as 'memory' | 'redis',

    async check(account: string, ip: string): Promise<{ delayMs: number }> {
      const [accountRes, addressRes] = await ask(() =>
        Promise.all([accounts.get(accountKey(account)), addresses.get(addressKey(ip))]),
      );
      const accountState = live(accountRes);
      const addressState = live(addressRes);
      const lockedFor = Math.max(
        accountState && accountState.consumedPoints >= limits.accountFailures ? accountState.msBeforeNext : 0,
        addressState && addressState.consumedPoints >= limits.ipFailures ? addressState.msBeforeNext : 0,
      );
      if (lockedFor > 0) throw new TooManyAttemptsError(seconds(lockedFor));
      return { delayMs: progressiveDelayMs(accountState?.consumedPoints ?? 0) };
    },

    async recordFailure(
      account: string,
      ip: string,
    ): Promise<{ lockouts: Array<{ scope: 'account' | 'ip'; retryAfterSeconds: number }> }> {
      // `penalty` increments atomically (INCRBY in a Lua script on Redis) and never rejects, so
      // exactly one failure, on whichever instance, sees the count land on the limit: that one
      // reports the lockout, and the audit log gets one event per lockout.
      const [accountRes, addressRes] = await ask(() =>
        Promise.all([accounts.penalty(accountKey(account), 1), addresses.penalty(addressKey(ip), 1)]),
      );
      const lockouts: Array<{ scope: 'account' | 'ip'; retryAfterSeconds: number }> = [];
      if (accountRes.consumedPoints === limits.accountFailures) {
        lockouts.push({ scope: 'account', retryAfterSeconds: seconds(accountRes.msBeforeNext) });
      }
      if (addressRes.consumedPoints === limits.ipFailures) {
        lockouts.push({ scope: 'ip', retryAfterSeconds: seconds(addressRes.msBeforeNext) });
      }
      return { lockouts };
    },

    async recordSuccess(account: string): Promise<void> {
      // The address counter stays: signing in to an account of one's own must not buy an attacker a
      // fresh budget of guesses against everyone else's.
      await ask(() => accounts.delete(accountKey(account)));
    },
  };
}

export type LoginLimiter = ReturnType<typeof createLoginLimiter>;
