import { randomBytes } from 'node:crypto';
import { AGENT_CONNECT_PATH } from '@bulwark/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import { createPostgresDatabase, postgresUrl, redisUrl } from '../test-support/databases.js';
import { OWNER } from '../test-support/org-world.js';
import { type RedisProcess, startRedis } from '../test-support/redis-server.js';
import { startTestServer, type TestServer } from '../test-support/server.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * Request limits across instances (HA-1, KEY-1, AGT-3, invariant 9).
 *
 * Attack: behind a load balancer, a client spreads its requests over every instance. If each instance
 * counted in its own memory, N instances would give it N times every limit: N times the writes per
 * minute, N times an API key's budget, N times the agent connection attempts. With Redis configured
 * the counters are shared, so the limit holds at the configured total.
 *
 * Attack: the attacker disturbs Redis (or it simply fails) hoping the limits lift. Writes, the
 * authentication routes and agent connections then answer 503 with a stable code — never 500, never
 * unlimited — reads go on under a per-instance count, and all of it is counted in Redis again once
 * it is back.
 *
 * Every request comes from its own address through the trusted proxy (this run's random IPv6 /32
 * sub-range), so the machine's Redis, shared with other suites and earlier runs, holds no counter
 * these tests could collide with.
 */

const run = randomBytes(4).toString('hex');
let addresses = 0;
/** A client address no other test or run uses. */
const freshAddress = () => `2001:db8:${run.slice(0, 4)}:${run.slice(4)}::${(++addresses).toString(16)}`;

const LIMITS = {
  BULWARK_TRUSTED_PROXIES: '127.0.0.1',
  BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '4',
  BULWARK_RATE_LIMIT_READ_PER_MINUTE: '5',
  BULWARK_AGENT_CONNECTS_PER_MINUTE: '4',
  BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
  BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
  BULWARK_BOOTSTRAP_ORG_NAME: 'Acme',
};

/** A request as it arrives through the proxy from `address`, with `headers` (a key, say). */
async function from(
  server: TestServer,
  address: string,
  method: string,
  route: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; code: string | undefined }> {
  const response = await fetch(`${server.url}${route}`, {
    method,
    headers: { 'x-forwarded-for': address, ...headers },
  });
  const text = await response.text();
  const body = text.startsWith('{') ? (JSON.parse(text) as { error?: { code: string } }) : {};
  return { status: response.status, code: body.error?.code };
}

/** The HTTP status an agent connection attempt from `address` is answered with (101: the WebSocket opened). */
function connectStatus(server: TestServer, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${server.url.replace('http', 'ws')}${AGENT_CONNECT_PATH}`, {
      headers: { 'x-forwarded-for': address, 'x-forwarded-proto': 'https' },
    });
    socket.on('open', () => {
      socket.close();
      resolve(101);
    });
    socket.on('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0);
      response.resume();
    });
    socket.on('error', (error) => {
      if (!/Unexpected server response/.test(error.message)) reject(error);
    });
  });
}

/** Signs the owner in from a setup address of its own and creates an API key with `permissions`. */
async function createKey(server: TestServer, permissions: string[]): Promise<string> {
  const owner = new SessionClient(server.url, { 'x-forwarded-for': freshAddress() });
  expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
  const created = await owner.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
    name: `limits ${randomBytes(3).toString('hex')}`,
    permissions,
  });
  expect(created.status).toBe(201);
  return created.body.token;
}

describe.skipIf(!postgresUrl() || !redisUrl())('limits shared by two instances through Redis', () => {
  let first: TestServer;
  let second: TestServer;
  let dropDatabase: () => Promise<void>;

  beforeAll(async () => {
    const database = await createPostgresDatabase(postgresUrl()!);
    dropDatabase = database.drop;
    // Two instances behind one load balancer: one database, one master key, one Redis.
    const env = {
      ...LIMITS,
      BULWARK_DATABASE_URL: database.url,
      BULWARK_MASTER_KEY: randomBytes(32).toString('base64'),
      BULWARK_REDIS_URL: redisUrl()!,
    };
    // One after the other: the first migrates and creates the owner, the second finds them.
    first = await startTestServer(env);
    second = await startTestServer(env);
  });
  afterAll(async () => {
    await Promise.all([first?.close(), second?.close()]);
    await dropDatabase?.();
  });

  /** Alternates between the instances, as a round-robin load balancer does. */
  const instance = (i: number) => (i % 2 === 0 ? first : second);

  it('holds a route class at its total: 4 writes a minute from one address, not 4 per instance', async () => {
    const address = freshAddress();
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++)
      statuses.push((await from(instance(i), address, 'POST', '/api/orgs/acme/teams')).status);
    // Unauthenticated writes: refused by the guard while within the limit, by the limit after it.
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429]);
  });

  it("holds an API key's budget at its total, over both instances and many addresses", async () => {
    const token = await createKey(first, ['members:read']);
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      // A fresh address each time: only the key's own budget (5 reads) can stop it.
      const answer = await from(instance(i), freshAddress(), 'GET', '/api/orgs/acme/members', {
        authorization: `Bearer ${token}`,
      });
      statuses.push(answer.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
  });

  it('holds agent connection attempts at their total: 4 a minute from one address', async () => {
    const address = freshAddress();
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push(await connectStatus(instance(i), address));
    expect(statuses).toEqual([101, 101, 101, 101, 429, 429]);
  });
});

describe('limits while Redis is down', () => {
  let redis: RedisProcess | undefined;
  let server: TestServer | undefined;
  afterEach(async () => {
    await server?.close();
    await redis?.stop();
    server = undefined;
    redis = undefined;
  });

  it('refuse writes, authentication, key writes and agent connections with 503, serve reads, and recover', async () => {
    redis = await startRedis();
    server = await startTestServer({
      ...LIMITS,
      // Room for the checks below: this test is about the store, not the counts.
      BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '100',
      BULWARK_RATE_LIMIT_READ_PER_MINUTE: '100',
      BULWARK_AGENT_CONNECTS_PER_MINUTE: '100',
      BULWARK_REDIS_URL: `redis://127.0.0.1:${redis.port}`,
    });
    const live = server;
    const token = await createKey(live, ['members:read', 'teams:manage']);
    const key = { authorization: `Bearer ${token}` };
    const address = freshAddress();

    await redis.stop();

    // Writes (with a key too), sign-in and agent connections fail closed, each with a stable code.
    expect(await from(live, address, 'POST', '/api/orgs/acme/teams')).toEqual({
      status: 503,
      code: 'rate_limit_unavailable',
    });
    expect(await from(live, address, 'POST', '/api/orgs/acme/teams', key)).toEqual({
      status: 503,
      code: 'rate_limit_unavailable',
    });
    expect(await from(live, address, 'POST', '/api/auth/login')).toEqual({
      status: 503,
      code: 'auth_unavailable',
    });
    expect(await connectStatus(live, address)).toBe(503);
    // Reads go on, counted by this instance alone until Redis is back.
    expect((await from(live, address, 'GET', '/api/orgs/acme/members', key)).status).toBe(200);
    expect((await from(live, address, 'GET', '/healthz')).status).toBe(200);

    // Redis comes back where it was: the same server counts there again, with no restart.
    redis = await startRedis(redis.port);
    await vi.waitFor(
      async () => expect((await from(live, address, 'POST', '/api/orgs/acme/teams')).status).toBe(401),
      { timeout: 10_000, interval: 100 },
    );
    expect(await connectStatus(live, address)).toBe(101);
    // The key reaches the route again: refused there for its missing body, not by the limiter.
    expect(await from(live, address, 'POST', '/api/orgs/acme/teams', key)).toEqual({
      status: 422,
      code: 'validation_failed',
    });
  });
});
