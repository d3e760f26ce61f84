import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeCursor } from '../db/keyset.js';
import { handshake, registerAgent } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';

/**
 * The console's lists: agents, services, commands and members searched, filtered, sorted and paged
 * on the server (ACC-3, AGT-4, AGT-5, UI-1).
 *
 * Attack: an operator whose role covers only the staging agents pages through the fleet (by name,
 * with tiny pages, with searches for production names, with cursors crafted to point into production)
 * to learn how many production agents there are, what they are called, or to read their services and
 * commands. Every answer they get must be the one they would get if the production agents did not
 * exist: no rows, no cursor made from them, no "there is more" that only they account for.
 */

type AgentList = { agents: Array<{ id: string; name: string; status: string }>; next: string | null };
type ServiceList = {
  services: Array<{
    id: string;
    name: string;
    kind: string;
    agent: { id: string; name: string; status: string };
    available: boolean;
    unavailableReason: string | null;
    health: { status: string };
  }>;
  next: string | null;
};
type CommandList = {
  commands: Array<{ id: string; agentId: string; service: string; action: string }>;
  next: string | null;
};
type MemberList = { members: Array<{ id: string; email: string; role: string }>; next: string | null };
type Problem = { error: { code: string; fields?: Array<{ path: string }> } };

const lowAction = (name: string) => ({
  name,
  description: 'low action',
  params: { type: 'object', properties: {}, additionalProperties: false },
  risk: 'low',
  timeoutSeconds: 60,
  secrets: [],
});

describe.each(BACKENDS)('lists on %s', (backend: Backend) => {
  let world: OrgWorld;
  let keeper: Member;
  /** Agent ids by name. Staging: alpha-stg, delta-stg; production interleaves them by name. */
  const ids: Record<string, string> = {};
  const staging = ['alpha-stg', 'delta-stg'];
  const production = ['bravo-prd', 'charlie-prd', 'echo-prd', 'zulu-prd'];
  const connections: Array<Awaited<ReturnType<typeof handshake>>> = [];

  async function connectAndReport(
    name: string,
    services: Array<{ name: string; kind: string; health: string }>,
  ) {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      { labels: { env: name.endsWith('stg') ? 'staging' : 'prod' } },
    );
    const registered = await registerAgent(world.server.url, body.token, name);
    ids[name] = registered.agentId;
    if (services.length === 0) return;
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    expect(connection.answer.type).toBe('welcome');
    connection.socket.send(
      JSON.stringify({
        v: 1,
        type: 'report',
        services: services.map((s) => ({
          name: s.name,
          kind: s.kind,
          health: { status: s.health },
          actions: [lowAction('restart'), lowAction('flush')],
        })),
      }),
    );
    expect((await connection.next()).type).toBe('report_result');
    connections.push(connection);
  }

  const get = <T>(client: Member['client'], path: string) =>
    client.json<T & Problem>('GET', `/api/orgs/acme/${path}`);

  /** Every page of a list, following `next` in `after`. */
  async function walk<T extends { next: string | null }>(
    client: Member['client'],
    path: string,
    rowsOf: (page: T) => string[],
  ) {
    const seen: string[] = [];
    const cursors: string[] = [];
    let next: string | null = null;
    for (let i = 0; i < 20; i++) {
      const sep = path.includes('?') ? '&' : '?';
      const url: string = next ? `${path}${sep}after=${encodeURIComponent(next)}` : path;
      const page: { status: number; body: T } = await get<T>(client, url);
      expect(page.status).toBe(200);
      seen.push(...rowsOf(page.body));
      const cursor: string | null = page.body.next;
      if (cursor === null) return { seen, cursors };
      next = cursor;
      cursors.push(cursor);
    }
    throw new Error('the list never ended');
  }

  beforeAll(async () => {
    world = await startOrgWorld({}, backend, Date.now());
    await connectAndReport('alpha-stg', [
      { name: 'web', kind: 'nginx', health: 'up' },
      { name: 'queue', kind: 'redis', health: 'degraded' },
    ]);
    await connectAndReport('delta-stg', [{ name: 'db', kind: 'postgres', health: 'up' }]);
    await connectAndReport('bravo-prd', [{ name: 'web', kind: 'nginx', health: 'down' }]);
    for (const name of ['charlie-prd', 'echo-prd', 'zulu-prd']) await connectAndReport(name, []);

    const minimal = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'minimal',
      permissions: ['teams:read'],
    });
    keeper = await world.join('keeper@example.test', minimal.body.id);
    const role = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'staging-reader',
      permissions: ['agents:read', 'services:read', 'commands:read'],
    });
    const binding = await world.owner.client.json('POST', '/api/orgs/acme/role-bindings', {
      role: role.body.id,
      subject: { type: 'user', id: keeper.id },
      selector: 'env=staging',
    });
    expect(binding.status).toBe(201);

    // Commands on a staging and a production agent, by the owner.
    for (const [agent, service, action] of [
      ['alpha-stg', 'web', 'restart'],
      ['alpha-stg', 'queue', 'flush'],
      ['bravo-prd', 'web', 'restart'],
      ['alpha-stg', 'web', 'flush'],
      ['bravo-prd', 'web', 'flush'],
    ] as const) {
      const created = await world.owner.client.json('POST', '/api/orgs/acme/commands', {
        agent: ids[agent],
        service,
        action,
        reason: `${action} ${service} on ${agent}`,
      });
      expect(created.status).toBe(201);
    }
    // delta-stg is disabled: its service stays listed, but runs nothing.
    expect(
      (await world.owner.client.json('POST', `/api/orgs/acme/agents/${ids['delta-stg']}/disable`)).status,
    ).toBe(200);
  });
  afterAll(async () => {
    for (const connection of connections) connection.socket.close();
    await world?.close();
  });

  describe('agents', () => {
    it('searches by name, hostname or id, case-insensitively, and filters by status', async () => {
      const found = await get<AgentList>(world.owner.client, 'agents?q=STG&sort=name');
      expect(found.body.agents.map((a) => a.name)).toEqual(staging);
      // LIKE's wildcards are searched for as text, not as wildcards.
      expect((await get<AgentList>(world.owner.client, 'agents?q=%25')).body.agents).toEqual([]);
      // (Unescaped, `a_s` would find alpha-stg and delta-stg.)
      expect((await get<AgentList>(world.owner.client, 'agents?q=a_s')).body.agents).toEqual([]);
      const byId = await get<AgentList>(world.owner.client, `agents?q=${ids['echo-prd']}`);
      expect(byId.body.agents.map((a) => a.name)).toEqual(['echo-prd']);
      const disabled = await get<AgentList>(world.owner.client, 'agents?status=disabled');
      expect(disabled.body.agents.map((a) => a.name)).toEqual(['delta-stg']);
      const online = await get<AgentList>(world.owner.client, 'agents?status=online&sort=name');
      expect(online.body.agents.map((a) => a.name)).toEqual(['alpha-stg', 'bravo-prd']);
      const offline = await get<AgentList>(world.owner.client, 'agents?status=offline&sort=name');
      expect(offline.body.agents.map((a) => a.name)).toEqual(['charlie-prd', 'echo-prd', 'zulu-prd']);
    });

    it('sorts by a listed column either way and pages with the cursor, no row twice or missed', async () => {
      const all = [...staging, ...production].sort();
      const up = await walk<AgentList>(world.owner.client, 'agents?sort=name&limit=2', (p) =>
        p.agents.map((a) => a.name),
      );
      expect(up.seen).toEqual(all);
      const down = await walk<AgentList>(world.owner.client, 'agents?sort=-name&limit=4', (p) =>
        p.agents.map((a) => a.name),
      );
      expect(down.seen).toEqual([...all].reverse());
      // Creation order keeps the agent id as its cursor, as the list always answered.
      const created = await get<AgentList>(world.owner.client, 'agents?limit=1');
      expect(created.body.next).toBe(created.body.agents[0]!.id);
    });

    it('answers 422 naming the field for junk query values', async () => {
      const nameCursor = (await get<AgentList>(world.owner.client, 'agents?sort=name&limit=1')).body.next!;
      for (const [query, field] of [
        ['sort=password_hash', 'sort'],
        ['sort=name;drop table agents', 'sort'],
        ['status=asleep', 'status'],
        ['limit=0', 'limit'],
        ['limit=201', 'limit'],
        ['limit=ten', 'limit'],
        ['q=', 'q'],
        [`q=${'x'.repeat(101)}`, 'q'],
        ['after=not-a-cursor!', 'after'],
        [`after=${Buffer.from('{"a":1}').toString('base64url')}`, 'after'],
        // A cursor of one order is refused under another, rather than resuming somewhere else.
        [`sort=hostname&after=${nameCursor}`, 'after'],
        [`sort=created&after=${nameCursor}`, 'after'],
      ]) {
        const answer = await get<AgentList>(world.owner.client, `agents?${query}`);
        expect([query, answer.status, answer.body.error?.code]).toEqual([query, 422, 'validation_failed']);
        expect(JSON.stringify(answer.body.error.fields)).toContain(field);
      }
    });

    it('shows one agent with its live connection, and why a disabled one runs nothing', async () => {
      type Detail = {
        connection: { connectedAt: string; address: string; agentVersion: string } | null;
        status: string;
        statusReason: string | null;
      };
      const alpha = await get<Detail>(world.owner.client, `agents/${ids['alpha-stg']}`);
      expect(alpha.body.status).toBe('online');
      expect(alpha.body.statusReason).toBeNull();
      expect(alpha.body.connection).toMatchObject({
        agentVersion: 'test',
        address: expect.stringMatching(/127\.0\.0\.1|::1/),
      });
      expect(Date.parse(alpha.body.connection!.connectedAt)).toBeGreaterThan(0);
      const delta = await get<Detail>(world.owner.client, `agents/${ids['delta-stg']}`);
      expect(delta.body).toMatchObject({ status: 'disabled', connection: null });
      expect(delta.body.statusReason).toMatch(/disabled/);
    });
  });

  describe('a label-scoped reader', () => {
    it('pages the agents as though out-of-scope agents did not exist', async () => {
      // Production agents sort between and after the staging ones: a page of one must still end the
      // list at delta-stg, with no cursor made from, and no "more" accounted for by, a production agent.
      for (const sort of ['name', '-name', 'created', 'hostname']) {
        const scoped = await walk<AgentList>(keeper.client, `agents?sort=${sort}&limit=1`, (p) =>
          p.agents.map((a) => a.name),
        );
        expect(new Set(scoped.seen)).toEqual(new Set(staging));
        expect(scoped.cursors).toHaveLength(1);
        expect(JSON.stringify(scoped)).not.toMatch(/prd/);
        for (const name of production) expect(JSON.stringify(scoped)).not.toContain(ids[name]);
      }
      const search = await get<AgentList>(keeper.client, 'agents?q=prd');
      expect(search.body).toEqual({ agents: [], next: null });
      const online = await get<AgentList>(keeper.client, 'agents?status=online');
      expect(online.body.agents.map((a) => a.name)).toEqual(['alpha-stg']);
    });

    it('gets nothing out of scope from a cursor crafted to point into production', async () => {
      const crafted = encodeCursor('name', { value: 'bravo-prd', id: ids['bravo-prd']! });
      const page = await get<AgentList>(keeper.client, `agents?sort=name&limit=5&after=${crafted}`);
      expect(page.body).toMatchObject({ agents: [{ name: 'delta-stg' }], next: null });
    });

    it('sees the services and commands of in-scope agents only, and no cursor beyond them', async () => {
      const services = await walk<ServiceList>(keeper.client, 'services?limit=1&sort=name', (p) =>
        p.services.map((s) => `${s.agent.name}/${s.name}`),
      );
      expect(services.seen).toEqual(['delta-stg/db', 'alpha-stg/queue', 'alpha-stg/web']);
      expect(services.cursors).toHaveLength(2);
      const commands = await walk<CommandList>(keeper.client, 'commands?limit=1', (p) =>
        p.commands.map((c) => c.agentId),
      );
      expect(commands.seen).toEqual([ids['alpha-stg'], ids['alpha-stg'], ids['alpha-stg']]);
      expect(commands.cursors).toHaveLength(2);
      const prodCommands = await get<CommandList>(keeper.client, `commands?agent=${ids['bravo-prd']}`);
      expect(prodCommands.body).toEqual({ commands: [], next: null });
    });
  });

  describe('services', () => {
    it('searches, filters by health and agent, sorts and pages', async () => {
      const web = await get<ServiceList>(world.owner.client, 'services?q=NGINX&sort=agent');
      expect(web.body.services.map((s) => s.agent.name)).toEqual(['alpha-stg', 'bravo-prd']);
      const byAgentName = await get<ServiceList>(world.owner.client, 'services?q=delta');
      expect(byAgentName.body.services.map((s) => s.name)).toEqual(['db']);
      const down = await get<ServiceList>(world.owner.client, 'services?health=down');
      expect(down.body.services.map((s) => s.agent.name)).toEqual(['bravo-prd']);
      const ofAgent = await get<ServiceList>(world.owner.client, `services?agent=${ids['alpha-stg']}`);
      expect(ofAgent.body.services.map((s) => s.name)).toEqual(['queue', 'web']);
      const byName = await walk<ServiceList>(world.owner.client, 'services?sort=-name&limit=1', (p) =>
        p.services.map((s) => s.name),
      );
      expect(byName.seen).toEqual(['web', 'web', 'queue', 'db']);
      const byHealth = await get<ServiceList>(world.owner.client, 'services?sort=health');
      expect(byHealth.body.services.map((s) => s.health.status)).toEqual(['degraded', 'down', 'up', 'up']);
    });

    it("tells that a disabled agent's service can run nothing, and why", async () => {
      const db = await get<ServiceList>(world.owner.client, `services?agent=${ids['delta-stg']}`);
      expect(db.body.services[0]).toMatchObject({
        name: 'db',
        available: false,
        agent: { name: 'delta-stg', status: 'disabled' },
      });
      expect(db.body.services[0]!.unavailableReason).toMatch(/disabled/);
      const web = await get<ServiceList>(world.owner.client, `services?agent=${ids['alpha-stg']}`);
      expect(web.body.services[0]).toMatchObject({
        available: true,
        unavailableReason: null,
        agent: { status: 'online' },
      });
    });

    it("tells that a revoked agent's service can never run again, and why", async () => {
      // Registered here, so the lists above stay as they were; revoked while connected.
      await connectAndReport('romeo-prd', [{ name: 'cache', kind: 'memcached', health: 'up' }]);
      expect(
        (await world.owner.client.json('POST', `/api/orgs/acme/agents/${ids['romeo-prd']}/revoke`)).status,
      ).toBe(200);
      const cache = await get<ServiceList>(world.owner.client, `services?agent=${ids['romeo-prd']}`);
      expect(cache.body.services).toHaveLength(1);
      expect(cache.body.services[0]).toMatchObject({
        name: 'cache',
        available: false,
        agent: { name: 'romeo-prd', status: 'revoked' },
      });
      expect(cache.body.services[0]!.unavailableReason).toMatch(/revoked/);
    });

    it('answers 422 for junk query values', async () => {
      for (const query of ['sort=agent_labels', 'health=fine', 'agent=agt_', 'limit=-1', 'after=%00', 'q=']) {
        const answer = await get<ServiceList>(world.owner.client, `services?${query}`);
        expect([query, answer.status, answer.body.error?.code]).toEqual([query, 422, 'validation_failed']);
      }
    });
  });

  describe('commands', () => {
    it('filters by service and requester, searches, sorts and pages', async () => {
      const queue = await get<CommandList>(world.owner.client, 'commands?service=queue');
      expect(queue.body.commands.map((c) => c.action)).toEqual(['flush']);
      const mine = await get<CommandList>(world.owner.client, `commands?requester=${world.owner.id}`);
      expect(mine.body.commands).toHaveLength(5);
      const theirs = await get<CommandList>(world.owner.client, `commands?requester=${keeper.id}`);
      expect(theirs.body.commands).toEqual([]);
      // Found in the reason too.
      const onBravo = await get<CommandList>(world.owner.client, 'commands?q=BRAVO');
      expect(onBravo.body.commands.map((c) => c.agentId)).toEqual([ids['bravo-prd'], ids['bravo-prd']]);
      const byAction = await walk<CommandList>(world.owner.client, 'commands?sort=action&limit=2', (p) =>
        p.commands.map((c) => c.action),
      );
      expect(byAction.seen).toEqual(['flush', 'flush', 'flush', 'restart', 'restart']);
      // Oldest first, the reverse of the default.
      const oldest = await walk<CommandList>(world.owner.client, 'commands?sort=created&limit=3', (p) =>
        p.commands.map((c) => c.id),
      );
      const newest = await walk<CommandList>(world.owner.client, 'commands?limit=3', (p) =>
        p.commands.map((c) => c.id),
      );
      expect(oldest.seen).toEqual([...newest.seen].reverse());
      // The older `before` cursor still pages the default order.
      const first = await get<CommandList>(world.owner.client, 'commands?limit=2');
      const older = await get<CommandList>(world.owner.client, `commands?limit=2&before=${first.body.next}`);
      expect(older.body.commands.map((c) => c.id)).toEqual(newest.seen.slice(2, 4));
    });

    it('answers 422 for junk query values', async () => {
      const first = await get<CommandList>(world.owner.client, 'commands?limit=1');
      for (const query of [
        'sort=params',
        'requester=owner',
        'service=../etc',
        'status=done',
        `sort=service&before=${first.body.next}`,
        `before=${first.body.next}&after=${first.body.next}`,
        'after=cmd_',
        'q=',
      ]) {
        const answer = await get<CommandList>(world.owner.client, `commands?${query}`);
        expect([query, answer.status, answer.body.error?.code]).toEqual([query, 422, 'validation_failed']);
      }
    });
  });

  describe('members', () => {
    it('searches by email or name, filters by role, sorts and pages', async () => {
      // Joined a minute apart, so that their order of joining is their order in time.
      world.clock.advance(60_000);
      await world.join('zed@example.test', 'viewer');
      world.clock.advance(60_000);
      await world.join('amy@example.test', 'operator');
      const found = await get<MemberList>(world.owner.client, 'members?q=ZED');
      expect(found.body.members.map((m) => m.email)).toEqual(['zed@example.test']);
      const operators = await get<MemberList>(world.owner.client, 'members?role=operator');
      expect(operators.body.members.map((m) => m.email)).toEqual(['amy@example.test']);
      const all = await walk<MemberList>(world.owner.client, 'members?sort=-email&limit=1', (p) =>
        p.members.map((m) => m.email),
      );
      expect(all.seen).toEqual(
        ['amy@example.test', 'keeper@example.test', 'owner@acme.test', 'zed@example.test'].reverse(),
      );
      const joined = await walk<MemberList>(world.owner.client, 'members?sort=joined&limit=3', (p) =>
        p.members.map((m) => m.email),
      );
      // The owner and the keeper joined at the same instant of the test's clock.
      expect(joined.seen.slice(0, 2).sort()).toEqual(['keeper@example.test', 'owner@acme.test']);
      expect(joined.seen.slice(-2)).toEqual(['zed@example.test', 'amy@example.test']);
    });

    it('answers 422 for junk query values', async () => {
      for (const query of ['sort=password', 'status=gone', 'role=root;', 'limit=501', 'after=usr_!', 'q=']) {
        const answer = await get<MemberList>(world.owner.client, `members?${query}`);
        expect([query, answer.status, answer.body.error?.code]).toEqual([query, 422, 'validation_failed']);
      }
    });
  });
});
