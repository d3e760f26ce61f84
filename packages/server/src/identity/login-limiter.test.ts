import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { redisUrl } from '../test-support/databases.js';
import { keysUnder } from '../test-support/redis.js';
import { rejection } from '../test-support/rejection.js';
import {
  addressKey,
  createLoginLimiter,
  DEFAULT_LOGIN_LIMITS,
  LimiterUnavailableError,
  type LoginLimiter,
  type LoginLimits,
  progressiveDelayMs,
  TooManyAttemptsError,
} from './login-limiter.js';

const WINDOW = DEFAULT_LOGIN_LIMITS.windowSeconds;

describe('progressiveDelayMs', () => {
  it('is free for the first 3 failures, then doubles from 250 ms up to 4 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50].map(progressiveDelayMs)).toEqual([
      0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 4000, 4000, 4000,
    ]);
    expect(progressiveDelayMs(1e9)).toBe(4000);
    expect(progressiveDelayMs(-1)).toBe(0);
    expect(progressiveDelayMs(Number.NaN)).toBe(0);
  });
});

describe('addressKey', () => {
  it('counts IPv4 as is, IPv4-mapped IPv6 as IPv4 and IPv6 by its /64', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::FFFF:cb00:7107')).toBe('203.0.113.7');
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('64:ff9b::203.0.113.7')).toBe('64:ff9b:0:0::/64');
  });
});

describe('createLoginLimiter', () => {
  it('refuses limits that are not positive integers', () => {
    for (const bad of [
      { ...DEFAULT_LOGIN_LIMITS, accountFailures: 0 },
      { ...DEFAULT_LOGIN_LIMITS, ipFailures: 2.5 },
      { ...DEFAULT_LOGIN_LIMITS, windowSeconds: -1 },
    ]) {
      expect(() => createLoginLimiter({ limits: bad })).toThrow(/positive integer/);
    }
  });

  it('defaults to 10 failures per account and 50 per address in 15 minutes, in memory', () => {
    expect(DEFAULT_LOGIN_LIMITS).toEqual({ accountFailures: 10, ipFailures: 50, windowSeconds: 900 });
    expect(createLoginLimiter({ limits: DEFAULT_LOGIN_LIMITS }).store).toBe('memory');
  });
});

const STORES = [{ store: 'memory' as const }, { store: 'redis' as const }];

describe.each(STORES)('login limiter on the $store store', ({ store }) => {
  const url = redisUrl();
  let client: Redis | undefined;
  let prefix = '';

  beforeEach(() => {
    prefix = `bulwark-test:login:${randomBytes(6).toString('hex')}`;
    if (store === 'redis' && url) client = new Redis(url, { maxRetriesPerRequest: 1 });
  });
  afterEach(async () => {
    if (!client) return;
    const keys = await keysUnder(client, prefix);
    if (keys.length > 0) await client.del(...keys);
    await client.quit();
    client = undefined;
  });

  const limiter = (limits: LoginLimits = DEFAULT_LOGIN_LIMITS): LoginLimiter =>
    createLoginLimiter({ limits, keyPrefix: prefix, ...(client ? { redis: client } : {}) });

  // Without Redis (a laptop), the Redis half skips; CI requires Redis, so there it always runs.
  const test = it.skipIf(store === 'redis' && !url);

  test('uses the store it was given', () => {
    expect(limiter().store).toBe(store);
  });

  test('locks an account after 10 failures from different addresses and reports it once', async () => {
    const limits = limiter();
    const account = 'alice@example.com';
    for (let i = 1; i <= 9; i++) {
      expect(await limits.recordFailure(account, `198.51.100.${i}`)).toEqual({ lockouts: [] });
    }
    await expect(limits.check(account, '198.51.100.200')).resolves.toBeDefined();

    const tenth = await limits.recordFailure(account, '198.51.100.10');
    expect(tenth.lockouts).toHaveLength(1);
    expect(tenth.lockouts[0]!.scope).toBe('account');
    expect(tenth.lockouts[0]!.retryAfterSeconds).toBeGreaterThan(WINDOW - 5);
    expect(tenth.lockouts[0]!.retryAfterSeconds).toBeLessThanOrEqual(WINDOW);

    const refused = await rejection(limits.check(account, '198.51.100.201'));
    expect(refused).toBeInstanceOf(TooManyAttemptsError);
    expect(refused).toMatchObject({ status: 429, code: 'too_many_attempts' });
    const retryAfter = (refused as TooManyAttemptsError).retryAfterSeconds;
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(WINDOW);

    // A failure that raced past the check still counts, but the lockout was already reported.
    expect(await limits.recordFailure(account, '198.51.100.11')).toEqual({ lockouts: [] });
    // The addresses and other accounts are unaffected.
    await expect(limits.check('bob@example.com', '198.51.100.1')).resolves.toEqual({ delayMs: 0 });
  });

  test('locks an address after 50 failures across different accounts and reports it once', async () => {
    const limits = limiter();
    const ip = '203.0.113.9';
    for (let i = 1; i <= 49; i++) {
      expect(await limits.recordFailure(`user${i}@example.com`, ip)).toEqual({ lockouts: [] });
    }
    await expect(limits.check('user50@example.com', ip)).resolves.toEqual({ delayMs: 0 });

    const fiftieth = await limits.recordFailure('user50@example.com', ip);
    expect(fiftieth.lockouts).toEqual([{ scope: 'ip', retryAfterSeconds: expect.any(Number) }]);
    expect(fiftieth.lockouts[0]!.retryAfterSeconds).toBeLessThanOrEqual(WINDOW);

    const refused = await rejection(limits.check('someone-new@example.com', ip));
    expect(refused).toBeInstanceOf(TooManyAttemptsError);
    expect((refused as TooManyAttemptsError).retryAfterSeconds).toBeLessThanOrEqual(WINDOW);
    expect(await limits.recordFailure('user51@example.com', ip)).toEqual({ lockouts: [] });

    // The accounts tried from there are not locked elsewhere.
    await expect(limits.check('user1@example.com', '203.0.113.10')).resolves.toEqual({ delayMs: 0 });
  });

  test('reports both lockouts when one failure reaches both limits', async () => {
    const limits = limiter({ accountFailures: 3, ipFailures: 3, windowSeconds: 60 });
    await limits.recordFailure('carol@example.com', '192.0.2.1');
    await limits.recordFailure('carol@example.com', '192.0.2.1');
    const third = await limits.recordFailure('carol@example.com', '192.0.2.1');
    expect(third.lockouts.map((l) => l.scope).sort()).toEqual(['account', 'ip']);
    for (const lockout of third.lockouts) expect(lockout.retryAfterSeconds).toBeLessThanOrEqual(60);
  });

  test('asks for a progressive delay that follows the account, not the address', async () => {
    const limits = limiter();
    const account = 'dave@example.com';
    for (let failures = 0; failures <= 9; failures++) {
      expect(await limits.check(account, '192.0.2.50')).toEqual({ delayMs: progressiveDelayMs(failures) });
      await limits.recordFailure(account, `192.0.2.${failures + 1}`);
    }
    await expect(limits.check('erin@example.com', '192.0.2.1')).resolves.toEqual({ delayMs: 0 });
  });

  test("forgets the account's failures on success, but not the address's", async () => {
    const limits = limiter({ accountFailures: 5, ipFailures: 8, windowSeconds: 900 });
    const account = 'frank@example.com';
    const ip = '192.0.2.77';
    for (let i = 0; i < 4; i++) await limits.recordFailure(account, ip);
    expect(await limits.check(account, ip)).toEqual({ delayMs: progressiveDelayMs(4) });

    await limits.recordSuccess(account);
    expect(await limits.check(account, ip)).toEqual({ delayMs: 0 });

    // The account starts again from zero (4 more do not lock it) while the address keeps its 4.
    for (let i = 0; i < 3; i++) expect(await limits.recordFailure(account, ip)).toEqual({ lockouts: [] });
    const eighth = await limits.recordFailure(account, ip);
    expect(eighth.lockouts.map((l) => l.scope)).toEqual(['ip']);
    await expect(limits.check('other@example.com', ip)).rejects.toBeInstanceOf(TooManyAttemptsError);
    await expect(limits.check(account, '192.0.2.78')).resolves.toEqual({ delayMs: progressiveDelayMs(4) });
  });

  test('forgets nothing when an account that never failed signs in', async () => {
    await expect(limiter().recordSuccess('nobody@example.com')).resolves.toBeUndefined();
  });

  test('counts concurrent failures exactly, so exactly one of them reports the lockout', async () => {
    const limits = limiter();
    const results = await Promise.all(
      Array.from({ length: 25 }, (_, i) => limits.recordFailure('grace@example.com', `192.0.2.${i + 1}`)),
    );
    const lockouts = results.flatMap((r) => r.lockouts);
    expect(lockouts).toEqual([{ scope: 'account', retryAfterSeconds: expect.any(Number) }]);
  });
});

describe('login limiter window on the memory store', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('ends the lock when the window ends, counting down Retry-After until then', async () => {
    // Only Date is faked: the store reads Date.now() for expiry, and its cleanup timers stay real, so
    // this also covers a record whose time is up but that is still in memory.
    vi.useFakeTimers({ toFake: ['Date'] });
    const start = Date.now();
    const limits = createLoginLimiter({ limits: { accountFailures: 2, ipFailures: 100, windowSeconds: 60 } });
    await limits.recordFailure('heidi@example.com', '192.0.2.1');
    expect((await limits.recordFailure('heidi@example.com', '192.0.2.2')).lockouts).toEqual([
      { scope: 'account', retryAfterSeconds: 60 },
    ]);

    vi.setSystemTime(start + 45_000);
    const refused = await rejection(limits.check('heidi@example.com', '192.0.2.3'));
    expect(refused).toBeInstanceOf(TooManyAttemptsError);
    expect((refused as TooManyAttemptsError).retryAfterSeconds).toBe(15);

    vi.setSystemTime(start + 60_001);
    expect(await limits.check('heidi@example.com', '192.0.2.3')).toEqual({ delayMs: 0 });
    // A new window starts from one failure, so the next lockout is reported again.
    expect(await limits.recordFailure('heidi@example.com', '192.0.2.3')).toEqual({ lockouts: [] });
    expect((await limits.recordFailure('heidi@example.com', '192.0.2.3')).lockouts).toHaveLength(1);
  });

  it('does not extend the window with failures after the lock', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const start = Date.now();
    const limits = createLoginLimiter({ limits: { accountFailures: 1, ipFailures: 100, windowSeconds: 60 } });
    await limits.recordFailure('ivan@example.com', '192.0.2.1');
    vi.setSystemTime(start + 50_000);
    await limits.recordFailure('ivan@example.com', '192.0.2.1');
    vi.setSystemTime(start + 60_001);
    expect(await limits.check('ivan@example.com', '192.0.2.1')).toEqual({ delayMs: 0 });
  });
});

describe.runIf(redisUrl())('login limiter on a shared Redis', () => {
  let clients: Redis[] = [];
  let prefix = '';
  const connect = () => {
    const client = new Redis(redisUrl()!, { maxRetriesPerRequest: 1 });
    // A closed client's errors reach the caller as rejected commands; the event only adds noise.
    client.on('error', () => {});
    clients.push(client);
    return client;
  };

  beforeEach(() => {
    prefix = `bulwark-test:login:${randomBytes(6).toString('hex')}`;
  });
  afterEach(async () => {
    const keys = await keysUnder(clients[0]!, prefix);
    if (keys.length > 0) await clients[0]!.del(...keys);
    await Promise.all(clients.map((c) => c.quit()));
    clients = [];
  });

  it('shares the counts between instances and reports each lockout on exactly one of them', async () => {
    const instances = [connect(), connect()].map((redis) =>
      createLoginLimiter({ limits: DEFAULT_LOGIN_LIMITS, redis, keyPrefix: prefix }),
    );
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        instances[i % 2]!.recordFailure(`judy${i % 3}@example.com`, '198.51.100.60'),
      ),
    );
    const lockouts = results.flatMap((r) => r.lockouts.map((l) => l.scope)).sort();
    // 20 failures for each of 3 accounts: 3 account lockouts; 60 from one address: 1 address lockout.
    expect(lockouts).toEqual(['account', 'account', 'account', 'ip']);
    for (const instance of instances) {
      await expect(instance.check('judy0@example.com', '198.51.100.61')).rejects.toBeInstanceOf(
        TooManyAttemptsError,
      );
      await expect(instance.check('nobody-yet@example.com', '198.51.100.60')).rejects.toBeInstanceOf(
        TooManyAttemptsError,
      );
    }
  });

  it('lets the keys expire with the window, unextended by later failures', async () => {
    const redis = connect();
    const limits = createLoginLimiter({
      limits: { accountFailures: 2, ipFailures: 100, windowSeconds: 120 },
      redis,
      keyPrefix: prefix,
    });
    await limits.recordFailure('ken@example.com', '192.0.2.1');
    await limits.recordFailure('ken@example.com', '192.0.2.1');
    const keys = await keysUnder(redis, prefix);
    expect(keys).toHaveLength(2);
    const before = await Promise.all(keys.map((k) => redis.pttl(k)));
    for (const ttl of before) {
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(120_000);
    }
    await limits.recordFailure('ken@example.com', '192.0.2.1');
    const after = await Promise.all(keys.map((k) => redis.pttl(k)));
    after.forEach((ttl, i) => {
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(before[i]!);
    });

    // The window's end is the key's expiry: once the key is gone, the account is free again.
    const accountKeys = keys.filter((k) => k.startsWith(`${prefix}:account:`));
    expect(accountKeys).toHaveLength(1);
    await expect(limits.check('ken@example.com', '192.0.2.2')).rejects.toBeInstanceOf(TooManyAttemptsError);
    await redis.pexpire(accountKeys[0]!, 0);
    expect(await limits.check('ken@example.com', '192.0.2.2')).toEqual({ delayMs: 0 });
  });

  it('is backed by Redis with no fallback once the client is closed', async () => {
    const redis = connect();
    const limits = createLoginLimiter({ limits: DEFAULT_LOGIN_LIMITS, redis, keyPrefix: prefix });
    expect(limits.store).toBe('redis');
    await limits.recordFailure('leo@example.com', '192.0.2.1');
    const other = connect();
    await redis.quit();
    clients = clients.filter((c) => c !== redis);
    await expect(limits.check('leo@example.com', '192.0.2.1')).rejects.toBeInstanceOf(
      LimiterUnavailableError,
    );
    // The count written before is still there for the instances that can reach Redis.
    const shared = createLoginLimiter({ limits: DEFAULT_LOGIN_LIMITS, redis: other, keyPrefix: prefix });
    expect(await shared.check('leo@example.com', '192.0.2.1')).toEqual({ delayMs: 0 });
    expect(await keysUnder(other, prefix)).toHaveLength(2);
  });
});
