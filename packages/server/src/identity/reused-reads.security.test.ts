import { afterEach, describe, expect, it } from 'vitest';
import { handshake, registerAgent } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';

/**
 * On SQLite, the session, the member's access and the answers of busy lists are read from memory
 * while the database is provably unchanged (db/read-cache.ts).
 *
 * Attack: a session is revoked, a member removed or their role cut, from the console or from the
 * CLI on the host (another process), and the attacker holding the old session keeps using what the
 * server remembered; or one caller is handed the answer remembered for another, who may see more.
 * Each test first shows the reads being reused, then that the change stops them on the very next
 * request.
 *
 * On PostgreSQL nothing is reused (other instances write to the database, and it offers no cheap
 * proof that nothing changed): the same attacks run there, and each test shows that no answer came
 * from memory and that the change still holds on the very next request.
 */

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

describe.each(BACKENDS)('reads reused between requests on %s', (backend: Backend) => {
  /** How many answers the server has given again from memory (its own metric). */
  async function reusedAnswers(): Promise<number> {
    const text = await (await fetch(world!.server.server.metricsUrl!)).text();
    const count = /^bulwark_http_answers_reused_total (\d+)$/m.exec(text)?.[1];
    // Missing, it would read as NaN, and NaN equals NaN: a test counting no reuse would pass unseen.
    expect(count).toBeDefined();
    return Number(count);
  }

  /** Asks twice and checks that the second answer came from memory (on SQLite, the only one that reuses). */
  async function askTwiceReused(member: Member, url: string) {
    const first = await member.client.json('GET', url);
    expect(first.status).toBe(200);
    const before = await reusedAnswers();
    const second = await member.client.json('GET', url);
    expect(second).toEqual(first);
    expect(await reusedAnswers()).toBe(backend === 'sqlite' ? before + 1 : before);
    return second;
  }

  const start = () => startOrgWorld({ BULWARK_METRICS_PORT: '0' }, backend);

  it('stop for a session ended by the CLI, another process, on the very next request', async () => {
    world = await start();
    const dev = await world.join('dev@acme.test', 'viewer');
    await askTwiceReused(dev, '/api/orgs/acme/members');

    const ended = await world.admin('end-sessions', '--email', 'dev@acme.test');
    expect(ended.code, ended.stderr).toBe(0);
    expect((await dev.client.json('GET', '/api/orgs/acme/members')).body).toMatchObject({
      error: { code: 'unauthenticated' },
    });
  });

  it('stop for a member removed or whose role was cut, on the very next request', async () => {
    world = await start();
    const owner = world.owner.client;
    const minimal = await owner.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'minimal',
      permissions: ['teams:read'],
    });
    const ops = await world.join('ops@acme.test', 'operator');
    await askTwiceReused(ops, '/api/orgs/acme/agents');
    expect(
      (await owner.json('PATCH', `/api/orgs/acme/members/${ops.id}`, { role: minimal.body.id })).status,
    ).toBe(200);
    expect((await ops.client.json('GET', '/api/orgs/acme/agents')).status).toBe(403);

    const dev = await world.join('dev@acme.test', 'viewer');
    await askTwiceReused(dev, '/api/orgs/acme/members');
    expect((await owner.json('DELETE', `/api/orgs/acme/members/${dev.id}`)).status).toBe(200);
    expect((await dev.client.json('GET', '/api/orgs/acme/members')).status).toBe(404);
  });

  it('never hand one caller the answer remembered for another', async () => {
    world = await start();
    const owner = world.owner;
    const ids: Record<string, string> = {};
    for (const env of ['staging', 'prod']) {
      const { body } = await owner.client.json<{ token: string }>(
        'POST',
        '/api/orgs/acme/agent-registration-tokens',
        { labels: { env } },
      );
      ids[env] = (await registerAgent(world.server.url, body.token, `${env}-1`)).agentId;
    }
    const minimal = await owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'minimal',
      permissions: ['teams:read'],
    });
    const keeper = await world.join('keeper@acme.test', minimal.body.id);
    const reader = await owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'agent-reader',
      permissions: ['agents:read'],
    });
    const bound = await owner.client.json('POST', '/api/orgs/acme/role-bindings', {
      role: reader.body.id,
      subject: { type: 'user', id: keeper.id },
      selector: 'env=staging',
    });
    expect(bound.status).toBe(201);

    const listed = (answer: { body: unknown }) =>
      (answer.body as { agents: Array<{ id: string }> }).agents.map((agent) => agent.id).sort();
    // The owner's answer, the whole fleet, is remembered for the same URL the keeper asks next.
    expect(listed(await askTwiceReused(owner, '/api/orgs/acme/agents'))).toEqual(
      [ids.staging, ids.prod].sort(),
    );
    expect(listed(await keeper.client.json('GET', '/api/orgs/acme/agents'))).toEqual([ids.staging]);
    expect(listed(await askTwiceReused(keeper, '/api/orgs/acme/agents'))).toEqual([ids.staging]);
    expect(listed(await owner.client.json('GET', '/api/orgs/acme/agents'))).toHaveLength(2);
  });

  it('are not reused for an API key, whose access is read afresh on every request', async () => {
    world = await start();
    const created = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
      name: 'inventory',
      permissions: ['members:read'],
    });
    expect(created.status).toBe(201);
    const before = await reusedAnswers();
    // Three: the first use of a key writes its last-use time, which alone makes the next one miss.
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${world.server.url}/api/orgs/acme/members`, {
        headers: { authorization: `Bearer ${created.body.token}` },
      });
      expect(response.status).toBe(200);
    }
    expect(await reusedAnswers()).toBe(before);
  });

  it("show an agent's live heartbeat, which is not in the database yet", async () => {
    world = await start();
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const agent = await registerAgent(world.server.url, body.token, 'web-1');
    const live = await handshake(world.server.url, agent.agentId, agent.keys);
    expect(live.answer.type).toBe('welcome');
    const connectedAt = new Date(world.clock.now()).toISOString();
    // The connection's audit event is written in the background: wait until the list shows it was.
    let connected = false;
    while (!connected) {
      const page = await world.owner.client.json<{ events: unknown[] }>(
        'GET',
        '/api/orgs/acme/audit/events?action=agent.connected',
      );
      connected = page.body.events.length === 1;
    }
    const seen = (answer: { body: unknown }) =>
      (answer.body as { agents: Array<{ status: string; lastSeenAt: string }> }).agents[0];
    expect(seen(await askTwiceReused(world.owner, '/api/orgs/acme/agents'))).toMatchObject({
      status: 'online',
      lastSeenAt: connectedAt,
    });

    // A heartbeat only updates memory (last-seen times reach the database in batches). The pong to a
    // ping sent after it proves the server has read it: messages are handled in order.
    world.clock.advance(7_000);
    live.socket.send(JSON.stringify({ v: 1, type: 'heartbeat' }));
    const pong = new Promise((resolve) => live.socket.once('pong', resolve));
    live.socket.ping();
    await pong;
    const afterHeartbeat = await world.owner.client.json('GET', '/api/orgs/acme/agents');
    expect(seen(afterHeartbeat)).toMatchObject({
      status: 'online',
      lastSeenAt: new Date(world.clock.now()).toISOString(),
    });
    live.socket.close();
    await live.closed;
  });
});
