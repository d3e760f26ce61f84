// Attacks on the sign-in brute-force limits (AUTH-6), and what stops each one:
// - Password guessing against one account from a botnet (a new address per guess): the per-account
//   lock catches it after 10 failures, however the attacker spells the email (case, spaces).
// - Password spraying (one common password against many accounts) from one machine: the per-address
//   lock catches it after 50 failures, and rotating through the 2^64 addresses of an IPv6 /64, or
//   writing an IPv4 address as IPv4-mapped IPv6, gives no fresh counter.
// - Resetting the address counter by signing in to an account of one's own between guesses.
// - Reading emails out of Redis (its memory, dumps, MONITOR): only SHA-256 digests are stored.
// - Knocking Redis over (or cutting the instance off from it) to switch the limits off: every call
//   fails with 503 instead, and there is no per-instance fallback to multiply the limits.
// - Learning whether an account exists from the lock: unknown emails are counted and refused alike.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { redisUrl } from '../test-support/databases.js';
import { deadPort } from '../test-support/ports.js';
import { keysUnder } from '../test-support/redis.js';
import { rejection } from '../test-support/rejection.js';
import {
  createLoginLimiter,
  DEFAULT_LOGIN_LIMITS,
  LimiterUnavailableError,
  type LoginLimiter,
  TooManyAttemptsError,
} from './login-limiter.js';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

let clients: Redis[] = [];
let prefixes: string[] = [];

/**
 * A client made like the server's own (main.ts): no offline queue, one retry per request. Without an
 * offline queue a lazy client refuses commands until connected, so, like main.ts, connect first.
 */
function client(target: string | number, extra: { retryStrategy?: () => null } = {}): Redis {
  const options = { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false, ...extra };
  const redis =
    typeof target === 'number' ? new Redis(target, '127.0.0.1', options) : new Redis(target, options);
  // Connection errors surface as rejected commands; the event would only print an unhandled warning.
  redis.on('error', () => {});
  clients.push(redis);
  return redis;
}

async function connected(url: string, extra: { retryStrategy?: () => null } = {}): Promise<Redis> {
  const redis = client(url, extra);
  await redis.connect();
  return redis;
}

function freshPrefix(): string {
  const prefix = `bulwark-test:login:${randomBytes(6).toString('hex')}`;
  prefixes.push(prefix);
  return prefix;
}

afterEach(async () => {
  const url = redisUrl();
  if (url && prefixes.length > 0) {
    const admin = await connected(url);
    for (const prefix of prefixes) {
      const keys = await keysUnder(admin, prefix);
      if (keys.length > 0) await admin.del(...keys);
    }
  }
  await Promise.all(clients.map((redis) => (redis.status === 'ready' ? redis.quit() : redis.disconnect())));
  clients = [];
  prefixes = [];
});

const limitersUnderTest = (): Array<{ store: string; make: () => Promise<LoginLimiter> }> => {
  const url = redisUrl();
  const memory = { store: 'memory', make: async () => createLoginLimiter({ limits: DEFAULT_LOGIN_LIMITS }) };
  if (!url) return [memory];
  const redis = {
    store: 'redis',
    make: async () =>
      createLoginLimiter({
        limits: DEFAULT_LOGIN_LIMITS,
        redis: await connected(url),
        keyPrefix: freshPrefix(),
      }),
  };
  return [memory, redis];
};

describe.each(limitersUnderTest())('login limiter under attack ($store store)', ({ make }) => {
  it('locks an account against a botnet however the email is spelled', async () => {
    const limits = await make();
    const spellings = [
      'Victim@Example.com',
      ' victim@example.com',
      'VICTIM@EXAMPLE.COM\t',
      'victim@example.com',
    ];
    let reported = 0;
    for (let i = 0; i < 10; i++) {
      const { lockouts } = await limits.recordFailure(spellings[i % spellings.length]!, `198.18.${i}.1`);
      reported += lockouts.length;
    }
    expect(reported).toBe(1);
    for (const spelling of spellings) {
      await expect(limits.check(spelling, '198.18.200.1')).rejects.toBeInstanceOf(TooManyAttemptsError);
    }
  });

  it('locks a sprayer rotating through its IPv6 /64 or writing IPv4 as mapped IPv6', async () => {
    const limits = await make();
    for (let i = 0; i < 50; i++) {
      await limits.recordFailure(`target${i}@example.com`, `2001:db8:aa:bb:${i.toString(16)}::${i + 1}`);
    }
    await expect(limits.check('fresh@example.com', '2001:db8:aa:bb:ffff::9')).rejects.toBeInstanceOf(
      TooManyAttemptsError,
    );
    // The neighbouring /64 belongs to someone else.
    await expect(limits.check('fresh@example.com', '2001:db8:aa:bc::1')).resolves.toEqual({ delayMs: 0 });

    for (let i = 0; i < 50; i++) {
      await limits.recordFailure(`target${i}@example.com`, i % 2 ? '203.0.113.66' : '::ffff:203.0.113.66');
    }
    await expect(limits.check('fresh@example.com', '203.0.113.66')).rejects.toBeInstanceOf(
      TooManyAttemptsError,
    );
  });

  it('gives no fresh budget to an attacker who signs in to an account of its own', async () => {
    const limits = await make();
    const ip = '192.0.2.99';
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 10; i++) await limits.recordFailure(`victim${round}-${i}@example.com`, ip);
      await limits.recordSuccess('attacker@example.com');
    }
    await expect(limits.check('attacker@example.com', ip)).rejects.toBeInstanceOf(TooManyAttemptsError);
  });

  it('counts and refuses an email nobody registered exactly like a real one, saying nothing of it', async () => {
    const limits = await make();
    // The limiter never looks accounts up: the same calls, whatever exists.
    const errors: unknown[] = [];
    for (const email of ['real-owner@example.com', 'no-such-user@example.com']) {
      for (let i = 0; i < 10; i++) await limits.recordFailure(email, `198.18.50.${i}`);
      errors.push(await rejection(limits.check(email, '198.18.60.1')));
    }
    const ipLimits = await make();
    for (let i = 0; i < 50; i++) await ipLimits.recordFailure(`someone${i}@example.com`, '198.18.70.1');
    errors.push(await rejection(ipLimits.check('real-owner@example.com', '198.18.70.1')));

    const shapes = errors.map((e) => {
      expect(e).toBeInstanceOf(TooManyAttemptsError);
      const { status, code, message } = e as TooManyAttemptsError;
      return { status, code, message };
    });
    expect(new Set(shapes.map((s) => JSON.stringify(s))).size).toBe(1);
    expect(shapes[0]).toEqual({
      status: 429,
      code: 'too_many_attempts',
      message: expect.not.stringMatching(/account|user|email|exist|@/i),
    });
  });
});

describe.runIf(redisUrl())('login limiter storage in Redis', () => {
  it('keeps no email address in Redis, only the SHA-256 of the normalized email', async () => {
    const prefix = freshPrefix();
    const redis = await connected(redisUrl()!);
    const limits = createLoginLimiter({ limits: DEFAULT_LOGIN_LIMITS, redis, keyPrefix: prefix });
    await limits.recordFailure('  Mallory.Target@Example.COM ', '192.0.2.5');
    await limits.check('mallory.target@example.com', '192.0.2.5');

    const keys = await keysUnder(redis, prefix);
    expect(keys.sort()).toEqual(
      [`${prefix}:account:${sha256('mallory.target@example.com')}`, `${prefix}:ip:192.0.2.5`].sort(),
    );
    for (const key of keys) {
      expect(key).not.toMatch(/@|mallory|target|example/i);
      expect(await redis.get(key)).toBe('1');
    }
  });
});

describe('login limiter when its store is down', () => {
  it('fails closed with 503 when Redis does not answer at all', async () => {
    const redis = client(await deadPort());
    const limits = createLoginLimiter({ limits: DEFAULT_LOGIN_LIMITS, redis, keyPrefix: freshPrefix() });
    expect(limits.store).toBe('redis');

    for (const attempt of [
      () => limits.check('victim@example.com', '192.0.2.1'),
      () => limits.recordFailure('victim@example.com', '192.0.2.1'),
      () => limits.recordSuccess('victim@example.com'),
    ]) {
      const error = await rejection(attempt());
      expect(error).toBeInstanceOf(LimiterUnavailableError);
      expect(error).toMatchObject({ status: 503, code: 'auth_unavailable' });
      expect((error as Error).message).not.toMatch(/redis|econnrefused|127\.0\.0\.1/i);
    }
    // Asking again changes nothing: there is no fallback that starts answering after a while.
    await expect(limits.check('victim@example.com', '192.0.2.1')).rejects.toBeInstanceOf(
      LimiterUnavailableError,
    );
  });

  it.runIf(redisUrl())('fails closed when the connection to Redis drops mid-way', async () => {
    const prefix = freshPrefix();
    // No reconnection, so the client stays down and the test needs no timing.
    const redis = await connected(redisUrl()!, { retryStrategy: () => null });
    const limits = createLoginLimiter({
      limits: { ...DEFAULT_LOGIN_LIMITS, accountFailures: 2 },
      redis,
      keyPrefix: prefix,
    });
    await limits.recordFailure('victim@example.com', '192.0.2.1');
    await limits.recordFailure('victim@example.com', '192.0.2.2');
    await expect(limits.check('victim@example.com', '192.0.2.3')).rejects.toBeInstanceOf(
      TooManyAttemptsError,
    );

    const admin = await connected(redisUrl()!);
    const id = await redis.call('CLIENT', 'ID');
    const ended = once(redis, 'end');
    await admin.call('CLIENT', 'KILL', 'ID', String(id));
    await ended;

    // A locked account stays refused (503, not let through), and so does every other attempt.
    await expect(limits.check('victim@example.com', '192.0.2.3')).rejects.toBeInstanceOf(
      LimiterUnavailableError,
    );
    await expect(limits.check('bystander@example.com', '192.0.2.4')).rejects.toBeInstanceOf(
      LimiterUnavailableError,
    );
    await expect(limits.recordFailure('victim@example.com', '192.0.2.3')).rejects.toBeInstanceOf(
      LimiterUnavailableError,
    );
    await expect(limits.recordSuccess('victim@example.com')).rejects.toBeInstanceOf(LimiterUnavailableError);

    // The lock itself survived in Redis for the instances that can still reach it.
    const other = createLoginLimiter({
      limits: { ...DEFAULT_LOGIN_LIMITS, accountFailures: 2 },
      redis: admin,
      keyPrefix: prefix,
    });
    await expect(other.check('victim@example.com', '192.0.2.3')).rejects.toBeInstanceOf(TooManyAttemptsError);
  });
});
