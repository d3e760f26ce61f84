import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { redisUrl } from '../test-support/databases.js';
import { keysUnder } from '../test-support/redis.js';
import { type ClusterBus, createLocalClusterBus, createRedisClusterBus } from './cluster-bus.js';

/**
 * The cluster bus on its own (HA-1): instances of one prefix hear each other and never themselves,
 * another prefix hears nothing, and the holder keys of agents expire unless refreshed and are let go
 * only by the instance that holds them.
 */

const DEADLINE = { timeout: 10_000, interval: 20 };
const logger = pino({ level: 'silent' });

describe('a local cluster bus', () => {
  it('tells nobody when alone, and the other buses of its hub when it has one', async () => {
    const alone = createLocalClusterBus();
    expect(alone.shared).toBe(false);
    const heardAlone: unknown[] = [];
    alone.subscribe('work', (body) => heardAlone.push(body));
    alone.publish('work', { agentId: 'agt_1' });
    expect(heardAlone).toEqual([]);

    const hub = new EventEmitter();
    const [a, b] = [createLocalClusterBus(hub), createLocalClusterBus(hub)];
    const heardByA: unknown[] = [];
    const heardByB: Array<[unknown, string]> = [];
    a.subscribe('work', (body) => heardByA.push(body));
    const unsubscribe = b.subscribe('work', (body, from) => heardByB.push([body, from]));
    a.publish('work', { agentId: 'agt_1' });
    expect(heardByB).toEqual([[{ agentId: 'agt_1' }, a.instanceId]]);
    expect(heardByA).toEqual([]);
    unsubscribe();
    a.publish('work', { agentId: 'agt_2' });
    expect(heardByB).toHaveLength(1);
    await Promise.all([alone.close(), a.close(), b.close()]);
  });
});

describe.skipIf(!redisUrl())('a Redis cluster bus', () => {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function client(): Promise<Redis> {
    const redis = new Redis(redisUrl()!, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    cleanups.push(() => redis.disconnect());
    return redis;
  }
  async function bus(redis: Redis, prefix: string): Promise<ClusterBus> {
    const created = await createRedisClusterBus({ redis, prefix, logger });
    cleanups.push(() => created.close());
    return created;
  }
  /** Until Redis counts `n` subscribers of the channel: a subscription is asynchronous. */
  const subscribed = (redis: Redis, channel: string, n: number) =>
    vi.waitFor(async () => {
      const [, count] = (await redis.pubsub('NUMSUB', channel)) as [string, number];
      expect(count).toBe(n);
    }, DEADLINE);

  it('carries a message to the other instances of its prefix only, never back to its sender', async () => {
    const prefix = `bulwark-test:${randomBytes(6).toString('hex')}`;
    const redis = await client();
    const [a, b, c] = [
      await bus(redis, prefix),
      await bus(redis, prefix),
      await bus(redis, `${prefix}-other`),
    ];
    const heard = { a: [] as unknown[], b: [] as Array<[unknown, string]>, c: [] as unknown[] };
    a.subscribe('work', (body) => heard.a.push(body));
    b.subscribe('work', (body, from) => heard.b.push([body, from]));
    c.subscribe('work', (body) => heard.c.push(body));
    await subscribed(redis, `${prefix}:work`, 2);
    await subscribed(redis, `${prefix}-other:work`, 1);

    a.publish('work', { agentId: 'agt_1' });
    b.publish('work', { agentId: 'agt_2' });
    await vi.waitFor(() => expect(heard.b).toHaveLength(1), DEADLINE);
    await vi.waitFor(() => expect(heard.a).toHaveLength(1), DEADLINE);
    expect(heard.b).toEqual([[{ agentId: 'agt_1' }, a.instanceId]]);
    expect(heard.a).toEqual([{ agentId: 'agt_2' }]);
    // A later message on the other prefix arrives; none of this prefix's did.
    const d = await bus(redis, `${prefix}-other`);
    d.publish('work', { agentId: 'agt_3' });
    await vi.waitFor(() => expect(heard.c).toEqual([{ agentId: 'agt_3' }]), DEADLINE);
  });

  it('keeps holder keys with a lifetime, lists them, and lets only their holder release them', async () => {
    const prefix = `bulwark-test:${randomBytes(6).toString('hex')}`;
    const redis = await client();
    cleanups.push(async () => {
      const keys = await keysUnder(redis, prefix);
      if (keys.length > 0) await redis.del(...keys);
    });
    const [a, b] = [await bus(redis, prefix), await bus(redis, prefix)];
    a.hold(
      [
        ['agt_one', 1000],
        ['agt_two', 2000],
      ],
      45_000,
    );
    await vi.waitFor(async () => expect(await b.holders()).toHaveLength(2), DEADLINE);
    expect((await b.holders()).sort((x, y) => x.at - y.at)).toEqual([
      { agentId: 'agt_one', instance: a.instanceId, at: 1000, ttlMs: 45_000 },
      { agentId: 'agt_two', instance: a.instanceId, at: 2000, ttlMs: 45_000 },
    ]);
    // Each key dies on its own unless refreshed: an instance that stops leaves nobody held for long.
    const ttl = await redis.pttl(`${prefix}:agent:agt_one`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(45_000);

    // Another instance cannot let go of an agent it does not hold; the holder can.
    b.release(['agt_one']);
    a.release(['agt_two']);
    await vi.waitFor(
      async () => expect((await b.holders()).map((h) => h.agentId)).toEqual(['agt_one']),
      DEADLINE,
    );
  });
});
