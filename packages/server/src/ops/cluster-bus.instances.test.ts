import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { ServerMessage } from '@bulwark/protocol';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../config.js';
import { type RunningServer, startServer } from '../main.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { createPostgresDatabase, postgresUrl, redisUrl } from '../test-support/databases.js';
import { LogCapture, testServerEnv } from '../test-support/server.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';
import { createRedisClusterBus } from './cluster-bus.js';

/**
 * Several instances on one PostgreSQL database and one Redis (HA-1): an agent connected to instance
 * B is online through instance A; a command created through A reaches it; its output and status are
 * read live through streams opened on A (the command's own, and the organization's focused on it);
 * a cancel asked of A reaches the agent on B; the command's parameters and nonce never cross Redis.
 * B sweeps for undelivered commands only every five minutes (its heartbeat period): within the test,
 * only the bus can have brought the command to it.
 *
 * A command whose "agent has work" message never went out (created through an instance with no
 * Redis, which tells nobody) is found by the delivery sweep of A, holding a second agent. An agent
 * disabled through A loses its connection to B. An instance that dies leaves its agents online
 * elsewhere no longer than the lifetime it gave them.
 */

const OWNER = { email: 'owner@cluster.test', password: 'Quiet-Harbor-Lantern-93' };
const DEADLINE = { timeout: 15_000, interval: 50 };

/** A server-sent event stream, its events collected as they come. */
function collect(response: Response) {
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  const events: Array<{ name: string; data: Record<string, unknown> }> = [];
  let buffer = '';
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        events.push({
          name: /^event: (.*)$/m.exec(frame)?.[1] ?? 'message',
          data: data ? (JSON.parse(data) as Record<string, unknown>) : {},
        });
      }
    }
  })();
  return {
    events,
    /** Waits until an event matches. */
    until: (name: string, match: (data: Record<string, unknown>) => boolean = () => true) =>
      vi.waitFor(() => {
        const found = events.find((event) => event.name === name && match(event.data));
        expect(found, `${name} in ${JSON.stringify(events)}`).toBeDefined();
        return found!;
      }, DEADLINE),
    close: () => reader.cancel().catch(() => {}),
  };
}

describe.skipIf(!postgresUrl() || !redisUrl())('commands across instances', () => {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  // This run's own keys and channels in the machine's Redis (BULWARK_REDIS_KEY_PREFIX).
  const keyPrefix = `bulwark-test:${randomBytes(6).toString('hex')}`;
  const prefix = `${keyPrefix}:cluster`;
  const masterKey = randomBytes(32).toString('base64');
  let databaseUrl = '';
  let dir = '';
  let redis: Redis;
  let a: RunningServer;
  let b: RunningServer;
  let owner: SessionClient;
  let agentId = '';
  let orgId = '';
  let agent: Awaited<ReturnType<typeof handshake>>;
  let second: Awaited<ReturnType<typeof handshake>>;
  let secondId = '';
  /** Every message published under the prefix, as Redis carried it. */
  const carried: string[] = [];

  /** An instance in this process; `env` may take Redis away from it. */
  async function instance(name: string, env: Record<string, string | undefined> = {}) {
    const dataDir = path.join(dir, name);
    await mkdir(dataDir, { recursive: true });
    const values: Record<string, string | undefined> = {
      BULWARK_DATA_DIR: dataDir,
      BULWARK_PORT: '0',
      BULWARK_DATABASE_URL: databaseUrl,
      BULWARK_MASTER_KEY: masterKey,
      BULWARK_REDIS_URL: redisUrl()!,
      BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
      BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
      BULWARK_BOOTSTRAP_ORG_NAME: 'Acme',
      BULWARK_REDIS_KEY_PREFIX: keyPrefix,
      // The delivery sweep runs once a heartbeat period: a short one keeps the test short.
      BULWARK_AGENT_HEARTBEAT_SECONDS: '1',
      BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '10000',
      BULWARK_RATE_LIMIT_READ_PER_MINUTE: '10000',
      ...env,
    };
    const defined = Object.fromEntries(
      Object.entries(values).filter((entry): entry is [string, string] => entry[1] !== undefined),
    );
    const server = await startServer(loadConfig({ env: testServerEnv(defined), cwd: dataDir }), {
      logDestination: new LogCapture(),
      print: () => {},
    });
    cleanups.push(() => server.close());
    return server;
  }

  /** The agent's next message of this type about this command; others are skipped. */
  async function agentReceives<T extends ServerMessage['type']>(type: T, commandId: string, on = agent) {
    for (;;) {
      const message = await on.next();
      if (message.type !== type) continue;
      if (message.type === 'command' && message.envelope.commandId !== commandId) continue;
      if (message.type === 'cancel' && message.commandId !== commandId) continue;
      return message as Extract<ServerMessage, { type: T }>;
    }
  }
  const agentSends = (message: Record<string, unknown>) =>
    agent.socket.send(JSON.stringify({ v: 1, ...message }));
  /** Until Redis has a subscriber on the channel: an instance subscribes as its first reader arrives. */
  const subscribed = (channel: string) =>
    vi.waitFor(async () => {
      const [, count] = (await redis.pubsub('NUMSUB', `${prefix}:${channel}`)) as [string, number];
      expect(count).toBeGreaterThan(0);
    }, DEADLINE);
  const createCommand = (client: SessionClient, target = agentId) =>
    client.json<{ id: string; status: string }>('POST', '/api/orgs/acme/commands', {
      agent: target,
      service: 'app',
      action: 'ping',
      params: { target: 'needle-in-the-params' },
      reason: 'across instances',
      confirm: true,
    });

  beforeAll(async () => {
    const database = await createPostgresDatabase(postgresUrl()!);
    cleanups.push(() => database.drop());
    databaseUrl = database.url;
    const temp = await tempDir('cluster');
    cleanups.push(() => temp.remove());
    dir = temp.path;
    redis = new Redis(redisUrl()!, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    cleanups.push(() => redis.disconnect());
    const listener = redis.duplicate();
    await listener.psubscribe(`${prefix}:*`);
    listener.on('pmessage', (_pattern: string, _channel: string, text: string) => carried.push(text));
    cleanups.push(() => listener.disconnect());
    // One after the other: the first migrates and creates the first owner, the second finds them.
    a = await instance('a');
    b = await instance('b', { BULWARK_AGENT_HEARTBEAT_SECONDS: '300' });

    owner = new SessionClient(a.url);
    expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
    const action = {
      name: 'ping',
      description: 'answers',
      params: {
        type: 'object',
        properties: { target: { type: 'string', maxLength: 40 } },
        additionalProperties: false,
      },
      risk: 'low',
      timeoutSeconds: 60,
      secrets: [],
    };
    /** A registered agent connected to `base`, keeping its heartbeats (what a live agent does). */
    const connect = async (name: string, base: string) => {
      const token = await owner.json<{ token: string }>(
        'POST',
        '/api/orgs/acme/agent-registration-tokens',
        {},
      );
      expect(token.status).toBe(201);
      const registered = await registerAgent(a.url, token.body.token, name);
      const connection = await handshake(base, registered.agentId, registered.keys);
      expect(connection.answer.type).toBe('welcome');
      const beat = JSON.stringify({ v: 1, type: 'heartbeat' });
      const heartbeats = setInterval(() => connection.socket.send(beat), 200);
      cleanups.push(() => clearInterval(heartbeats));
      cleanups.push(() => connection.socket.close());
      expect((await reportApp(connection, [action])).type).toBe('report_result');
      return { connection, id: registered.agentId };
    };
    ({ connection: agent, id: agentId } = await connect('web-1', b.url));
    ({ connection: second, id: secondId } = await connect('web-2', a.url));
  }, 60_000);

  afterAll(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('delivers a command created on A to the agent on B, streams its output on A, and cancels it from A', async () => {
    // Online through A, though connected to B, and its page on A shows the connection B holds.
    await vi.waitFor(async () => {
      const shown = await owner.json<{
        status: string;
        connection: { connectedAt: string; address: string; agentVersion: string } | null;
      }>('GET', `/api/orgs/acme/agents/${agentId}`);
      expect(shown.body.status).toBe('online');
      expect(shown.body.connection).toMatchObject({ address: '127.0.0.1', agentVersion: expect.any(String) });
      expect(Date.parse(shown.body.connection!.connectedAt)).toBeGreaterThan(0);
    }, DEADLINE);

    const created = await createCommand(owner);
    expect(created.status).toBe(201);
    const commandId = created.body.id;
    const delivered = await agentReceives('command', commandId);
    expect(delivered.envelope.agentId).toBe(agentId);
    orgId = delivered.envelope.orgId;

    // Two readers on A: the command's own stream, and the organization's focused on the command.
    const own = collect(await owner.openEvents('acme', commandId));
    await own.until('status');
    const ticket = await owner.json<{ ticket: string }>(
      'POST',
      `/api/orgs/acme/events/tickets?command=${commandId}`,
    );
    expect(ticket.status).toBe(201);
    const org = collect(
      await owner.send(
        'GET',
        `/api/orgs/acme/events?command=${commandId}&ticket=${encodeURIComponent(ticket.body.ticket)}`,
      ),
    );
    await org.until('status', (data) => data.commandId === commandId);
    await subscribed(`live:${commandId}`);
    await subscribed(`org:${orgId}`);

    // What the agent says to B is read on A.
    agentSends({ type: 'command_started', commandId });
    agentSends({ type: 'command_output', commandId, seq: 0, stream: 'stdout', data: 'hello from B\n' });
    await own.until('status', (data) => data.status === 'running');
    await own.until('output', (data) => data.data === 'hello from B\n');
    await org.until('output', (data) => data.commandId === commandId && data.data === 'hello from B\n');
    await org.until('command', (data) => data.id === commandId && data.status === 'running');

    // A cancel asked of A reaches the agent on B; the agent's answer ends the stream on A.
    const cancelled = await owner.json('POST', `/api/orgs/acme/commands/${commandId}/cancel`);
    expect(cancelled.status).toBe(200);
    await agentReceives('cancel', commandId);
    agentSends({ type: 'command_finished', commandId, outcome: 'cancelled', exitCode: null, message: '' });
    await own.until('status', (data) => data.status === 'cancelled');
    await org.until('command', (data) => data.id === commandId && data.status === 'cancelled');
    await own.close();
    await org.close();

    // Ids and states crossed Redis; what the command was asked to do, and its nonce, did not.
    expect(carried.some((text) => text.includes(commandId))).toBe(true);
    expect(carried.some((text) => text.includes(agentId))).toBe(true);
    expect(carried.filter((text) => text.includes('needle-in-the-params'))).toEqual([]);
    expect(carried.filter((text) => text.includes(delivered.envelope.nonce))).toEqual([]);
  }, 60_000);

  it('sends no cancel that the audit log does not hold, whatever Redis carries', async () => {
    // The attack: someone who can publish on the cluster's Redis (but not write its database) tells
    // B to cancel a running command. B holds the agent, but sends a cancel only for one requested
    // through the API, which is audited before it is published.
    const running = await createCommand(owner);
    const { envelope } = await agentReceives('command', running.body.id);
    agentSends({ type: 'command_started', commandId: running.body.id });
    await vi.waitFor(async () => {
      const shown = await owner.json<{ status: string }>('GET', `/api/orgs/acme/commands/${running.body.id}`);
      expect(shown.body.status).toBe('running');
    }, DEADLINE);
    const forged = { agentId, orgId: envelope.orgId, commandId: running.body.id };
    await redis.publish(`${prefix}:cancel`, JSON.stringify({ from: 'ins_forged', body: forged }));

    // A genuine cancel of another command, asked after the forged one: the only cancel the agent sees.
    const genuine = await createCommand(owner);
    await vi.waitFor(async () => {
      const shown = await owner.json<{ status: string }>('GET', `/api/orgs/acme/commands/${genuine.body.id}`);
      expect(shown.body.status).toBe('dispatched');
    }, DEADLINE);
    expect((await owner.json('POST', `/api/orgs/acme/commands/${genuine.body.id}/cancel`)).status).toBe(200);
    const cancels: string[] = [];
    while (!cancels.includes(genuine.body.id)) {
      const message = await agent.next();
      if (message.type === 'cancel') cancels.push(message.commandId);
    }
    expect(cancels).toEqual([genuine.body.id]);
  }, 60_000);

  it("finds a command whose notice never went out in its agent's instance's delivery sweep", async () => {
    // C shares the database but not Redis: it tells no other instance of the work it creates.
    const c = await instance('c', { BULWARK_REDIS_URL: undefined });
    const client = new SessionClient(c.url);
    expect((await client.login(OWNER.email, OWNER.password)).status).toBe(200);
    const created = await createCommand(client, secondId);
    expect(created.status).toBe(201);
    expect(created.body.status).toBe('queued');
    const delivered = await agentReceives('command', created.body.id, second);
    expect(delivered.envelope.commandId).toBe(created.body.id);
    await vi.waitFor(async () => {
      const shown = await owner.json<{ status: string }>('GET', `/api/orgs/acme/commands/${created.body.id}`);
      expect(shown.body.status).toBe('dispatched');
    }, DEADLINE);
  }, 60_000);

  it('ends the connection on B of an agent disabled through A', async () => {
    const disabled = await owner.json<{ status: string }>('POST', `/api/orgs/acme/agents/${agentId}/disable`);
    expect(disabled.status).toBe(200);
    let refusal: ServerMessage;
    do refusal = await agent.next();
    while (refusal.type !== 'refused');
    expect(refusal.code).toBe('agent_disabled');
    expect(await agent.closed).toBe(4401);
  }, 60_000);

  it('shows an agent offline once the instance that held it has fallen silent for its lifetime', async () => {
    const token = await owner.json<{ token: string }>('POST', '/api/orgs/acme/agent-registration-tokens', {});
    const { agentId: held } = await registerAgent(a.url, token.body.token, 'web-3');
    // An instance that says it holds the agent once, then dies: it never refreshes, never lets go.
    const dying = await createRedisClusterBus({ redis, prefix, logger: pino({ level: 'silent' }) });
    cleanups.push(() => dying.close());
    dying.hold([[held, Date.now()]], 2000);
    dying.publish('presence', { held: [[held, Date.now()]], ttlMs: 2000, welcomed: true });
    const status = async () =>
      (await owner.json<{ status: string }>('GET', `/api/orgs/acme/agents/${held}`)).body.status;
    await vi.waitFor(async () => expect(await status()).toBe('online'), DEADLINE);
    await vi.waitFor(async () => expect(await status()).toBe('offline'), DEADLINE);
    expect(await redis.exists(`${prefix}:agent:${held}`)).toBe(0);
  }, 60_000);
});
