import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AgentKeys, handshake, registerAgent } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';

/**
 * The dashboard (UI-1) over the real API, with agents played by hand over real connections.
 *
 * Attack: a member trusted only with the staging agents opens the dashboard to learn about production
 * anyway — which production commands failed and who ran them, which production hosts are offline or
 * disabled, which production services are down, how many production commands wait for approval — or
 * reads the organization's audit log through its "critical events" without holding audit:read. Every
 * part must be decided exactly as the list it summarizes.
 */

type Connection = Awaited<ReturnType<typeof handshake>>;

interface Dashboard {
  range: string;
  from: string;
  to: string;
  bucketSeconds: number;
  commands: { bucketStarts: string[]; succeeded: number[]; failed: number[]; other: number[] } | null;
  failed: {
    total: number;
    commands: Array<{
      id: string;
      agent: { id: string; name: string };
      status: string;
      requestedBy: { email: string | null; name: string | null };
    }>;
  } | null;
  agents: {
    online: number;
    offline: number;
    disabled: number;
    problems: Array<{ id: string; name: string; status: string }>;
  } | null;
  services: {
    notUpTotal: number;
    notUp: Array<{ name: string; agent: { name: string }; status: string }>;
  } | null;
  approvals: { pending: number } | null;
  critical: Array<{ action: string }> | null;
}

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

describe.each(BACKENDS)('the dashboard on %s', (backend: Backend) => {
  let world: OrgWorld;
  let stager: Member;
  const connections: Record<string, Connection> = {};
  const ids: Record<string, string> = {};

  const action = (name: string, risk: string) => ({
    name,
    description: name,
    params: { type: 'object', properties: {}, additionalProperties: false },
    risk,
    timeoutSeconds: 60,
    secrets: [],
  });

  async function register(name: string, env: string): Promise<{ id: string; keys: AgentKeys }> {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      { labels: { env } },
    );
    const registered = await registerAgent(world.server.url, body.token, name);
    ids[name] = registered.agentId;
    return { id: registered.agentId, keys: registered.keys };
  }

  async function connect(name: string, env: string, health: 'up' | 'down' | 'degraded') {
    const { id, keys } = await register(name, env);
    const connection = await handshake(world.server.url, id, keys);
    expect(connection.answer.type).toBe('welcome');
    connection.socket.send(
      JSON.stringify({
        v: 1,
        type: 'report',
        services: [
          {
            name: 'app',
            kind: 'node',
            health: { status: health, message: health === 'up' ? '' : `${name} app is ${health}` },
            actions: [action('restart', 'low'), action('migrate', 'high')],
          },
        ],
      }),
    );
    expect((await connection.next()).type).toBe('report_result');
    connections[name] = connection;
  }

  /** The next message of a type, skipping others. */
  async function nextOf(connection: Connection, type: string) {
    for (;;) {
      const message = await connection.next();
      if (message.type === type) return message as { type: string; envelope: { commandId: string } };
    }
  }

  /** Runs `restart` on an agent as the owner and has the agent report `outcome`. */
  async function run(agent: string, outcome: 'succeeded' | 'failed' | 'timed_out') {
    const created = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/commands', {
      agent: ids[agent],
      service: 'app',
      action: 'restart',
      params: {},
    });
    expect(created.status).toBe(201);
    const connection = connections[agent]!;
    const delivered = await nextOf(connection, 'command');
    const send = (message: Record<string, unknown>) =>
      connection.socket.send(JSON.stringify({ v: 1, ...message }));
    send({ type: 'command_started', commandId: delivered.envelope.commandId });
    send({
      type: 'command_finished',
      commandId: delivered.envelope.commandId,
      outcome,
      exitCode: outcome === 'succeeded' ? 0 : 1,
      message: outcome,
    });
    await nextOf(connection, 'command_ack');
    return created.body.id;
  }

  const dashboard = async (client: Member['client'], range = '24h') => {
    const answer = await client.json<Dashboard>('GET', `/api/orgs/acme/dashboard?range=${range}`);
    expect(answer.status).toBe(200);
    return answer.body;
  };

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    await connect('staging-web', 'staging', 'down');
    await connect('prod-web', 'prod', 'degraded');
    await register('staging-lost', 'staging');
    await register('prod-lost', 'prod');
    // A disabled agent on each environment is something wrong to show (counted as disabled, never
    // as offline); a revoked one is gone for good and is counted nowhere.
    for (const [name, env, verb] of [
      ['staging-off', 'staging', 'disable'],
      ['prod-off', 'prod', 'disable'],
      ['prod-gone', 'prod', 'revoke'],
    ] as const) {
      const { id } = await register(name, env);
      expect((await world.owner.client.json('POST', `/api/orgs/acme/agents/${id}/${verb}`)).status).toBe(200);
    }
    ids.stagingFailed = await run('staging-web', 'failed');
    ids.prodFailed = await run('prod-web', 'timed_out');
    await run('prod-web', 'succeeded');
    await run('staging-web', 'succeeded');
    // One command waiting for approval on each environment.
    for (const agent of ['staging-web', 'prod-web']) {
      const waiting = await world.owner.client.json('POST', '/api/orgs/acme/commands', {
        agent: ids[agent],
        service: 'app',
        action: 'migrate',
        params: {},
        confirm: true,
      });
      expect(waiting.status).toBe(201);
    }
    // A member who sees the organization and, through a binding, only the staging agents.
    const base = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'member-only',
      permissions: ['org:read'],
    });
    stager = await world.join('stager@example.test', base.body.id);
    const scoped = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'staging-operator',
      permissions: ['agents:read', 'services:read', 'commands:read', 'approvals:decide'],
    });
    const binding = await world.owner.client.json('POST', '/api/orgs/acme/role-bindings', {
      role: scoped.body.id,
      subject: { type: 'user', id: stager.id },
      selector: 'env=staging',
    });
    expect(binding.status).toBe(201);
    // A refused request in the organization's log, for the critical list.
    expect((await stager.client.json('GET', '/api/orgs/acme/audit/events')).status).toBe(403);
  }, 60_000);
  afterAll(async () => {
    for (const connection of Object.values(connections)) connection.socket.close();
    await world?.close();
  });

  it('shows the owner everything that is wrong, with names, and counts commands in server-side buckets', async () => {
    const view = await dashboard(world.owner.client);
    expect(view.failed?.total).toBe(2);
    // The same instant on the test clock: which comes first is not the point here.
    expect(
      view.failed?.commands.map((c) => [c.id, c.agent.name, c.status, c.requestedBy.email]).sort(),
    ).toEqual(
      [
        [ids.prodFailed, 'prod-web', 'timed_out', 'owner@acme.test'],
        [ids.stagingFailed, 'staging-web', 'failed', 'owner@acme.test'],
      ].sort(),
    );
    expect(view.agents).toMatchObject({ online: 2, offline: 2, disabled: 2 });
    expect(view.agents?.problems.map((a) => [a.name, a.status]).sort()).toEqual([
      ['prod-lost', 'offline'],
      ['prod-off', 'disabled'],
      ['staging-lost', 'offline'],
      ['staging-off', 'disabled'],
    ]);
    expect(view.services?.notUp.map((s) => [s.agent.name, s.status]).sort()).toEqual([
      ['prod-web', 'degraded'],
      ['staging-web', 'down'],
    ]);
    // The owner requested both waiting commands: nothing waits for the owner's own approval.
    expect(view.approvals).toEqual({ pending: 0 });
    expect(view.critical?.map((e) => e.action)).toContain('access.denied');
    expect([sum(view.commands!.succeeded), sum(view.commands!.failed), sum(view.commands!.other)]).toEqual([
      2, 2, 2,
    ]);
  });

  it('cuts each period into its buckets, and every period counts the same recent commands', async () => {
    const shapes: Array<[string, number, number]> = [];
    for (const range of ['1h', '24h', '7d']) {
      const view = await dashboard(world.owner.client, range);
      const c = view.commands!;
      shapes.push([range, c.bucketStarts.length, view.bucketSeconds]);
      expect(Date.parse(view.to) - Date.parse(view.from)).toBe(
        c.bucketStarts.length * view.bucketSeconds * 1000,
      );
      // Everything happened just now: in the last bucket.
      expect(c.failed.at(-1)).toBe(2);
      expect(sum(c.failed)).toBe(2);
      expect(c.bucketStarts.at(-1)! <= new Date(world.clock.now()).toISOString()).toBe(true);
    }
    expect(shapes).toEqual([
      ['1h', 60, 60],
      ['24h', 48, 1800],
      ['7d', 56, 10_800],
    ]);
  });

  it('shows a label-scoped member only the agents, services, commands and approvals in scope, and no audit events', async () => {
    const view = await dashboard(stager.client);
    expect(view.failed?.commands.map((c) => c.id)).toEqual([ids.stagingFailed]);
    expect(JSON.stringify(view.failed)).not.toContain('prod');
    // Attack: production's disabled agent must not show even as a count.
    expect(view.agents).toMatchObject({ online: 1, offline: 1, disabled: 1 });
    expect(view.agents?.problems.map((a) => a.name).sort()).toEqual(['staging-lost', 'staging-off']);
    expect(view.services?.notUp.map((s) => s.agent.name)).toEqual(['staging-web']);
    expect(view.approvals).toEqual({ pending: 1 });
    expect(view.critical).toBeNull();
    // The chart counts only staging's commands: one failed, one succeeded, one waiting.
    for (const range of ['1h', '7d']) {
      const c = (await dashboard(stager.client, range)).commands!;
      expect([sum(c.succeeded), sum(c.failed), sum(c.other)]).toEqual([1, 1, 1]);
    }
  });

  it('leaves out, as null rather than zero, the parts a member may not see at all', async () => {
    const reader = await world.join('reader@example.test', 'viewer');
    const view = await dashboard(reader.client);
    expect(view.agents).not.toBeNull();
    expect(view.approvals).toBeNull();
    expect(view.critical).toBeNull();
  });

  it('refuses junk with a precise 422', async () => {
    const junk = await world.owner.client.json<{
      error: { code: string; fields: Array<{ path: string; message: string }> };
    }>('GET', '/api/orgs/acme/dashboard?range=1y');
    expect(junk.status).toBe(422);
    expect(junk.body.error.fields).toEqual([
      { path: 'query.range', message: 'is not a period the dashboard offers (1h, 24h or 7d)' },
    ]);
    const extra = await world.owner.client.json('GET', '/api/orgs/acme/dashboard?agent=1');
    expect(extra.status).toBe(422);
  });
});
