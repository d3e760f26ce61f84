import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Member, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import type { SessionClient } from '../test-support/session-client.js';
import { collectEvents as collect } from '../test-support/sse.js';

/**
 * The organization's live stream (one per console tab) carries every command's status, the approvals
 * inbox and agents' presence. Attacks on it:
 * - a member of another organization (or of both, reading the other one) listens for this one's
 *   commands and agents;
 * - a member trusted only with the staging agents listens for what happens on production agents:
 *   which commands run there, which agents are up;
 * - a member who may not approve listens for the approvals inbox, to learn what is being asked;
 * - someone who read a ticket uses it again, or for another organization, or uses a ticket for one
 *   command's stream to open the whole organization's;
 * - a member whose role is taken away keeps listening on a stream opened before.
 * Each event is sent only to a reader whose own access, as it is when the event is sent, covers the
 * event's agent with the permission the event needs.
 */

async function ticket(client: SessionClient, slug: string): Promise<string> {
  const issued = await client.json<{ ticket: string }>('POST', `/api/orgs/${slug}/events/tickets`);
  expect(issued.status).toBe(201);
  return issued.body.ticket;
}

const open = (client: SessionClient, slug: string, value: string) =>
  client.send('GET', `/api/orgs/${slug}/events?ticket=${encodeURIComponent(value)}`);

async function subscribe(client: SessionClient, slug: string) {
  const stream = collect(await open(client, slug, await ticket(client, slug)));
  await stream.until((e) => e.name === 'ready');
  return stream;
}

const action = (name: string, risk: string) => ({
  name,
  description: `${risk} action`,
  params: { type: 'object', additionalProperties: false },
  risk,
  timeoutSeconds: 60,
  secrets: [],
});

describe.each(BACKENDS)('the organization event stream on %s', (backend) => {
  let world: OrgWorld;
  let scoped: Member;
  let viewer: Member;
  let approver: Member;
  const agents = { staging: '', prod: '', beta: '' };
  let streams: Record<'scoped' | 'viewer' | 'approver' | 'ownerBeta', ReturnType<typeof collect>>;
  let highCommand = '';
  let prodCommand = '';
  let sentinel = '';

  async function registered(slug: string, name: string, labels: Record<string, string>) {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      `/api/orgs/${slug}/agent-registration-tokens`,
      { labels },
    );
    return registerAgent(world.server.url, body.token, name);
  }

  async function connect(agent: Awaited<ReturnType<typeof registered>>) {
    const connection = await handshake(world.server.url, agent.agentId, agent.keys);
    expect(connection.answer.type).toBe('welcome');
    expect((await reportApp(connection, [action('ping', 'low'), action('migrate', 'high')])).type).toBe(
      'report_result',
    );
    return connection;
  }

  const run = async (agent: string, name: string) => {
    const created = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/commands', {
      agent,
      service: 'app',
      action: name,
      confirm: true,
    });
    expect(created.status).toBe(201);
    return created.body.id;
  };

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    await world.createOrg('Beta');
    // Everything this member may see comes from a binding on the staging agents.
    const minimal = await owner.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'minimal',
      permissions: ['org:read'],
    });
    scoped = await world.join('scoped@example.test', minimal.body.id);
    const staging = await owner.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'staging-watch',
      permissions: ['agents:read', 'commands:read', 'approvals:decide'],
    });
    const bound = await owner.json('POST', '/api/orgs/acme/role-bindings', {
      role: staging.body.id,
      subject: { type: 'user', id: scoped.id },
      selector: 'env=staging',
    });
    expect(bound.status).toBe(201);
    viewer = await world.join('viewer@example.test', 'viewer');
    approver = await world.join('approver@example.test', 'operator');

    const stagingAgent = await registered('acme', 'staging-1', { env: 'staging' });
    const prodAgent = await registered('acme', 'prod-1', { env: 'prod' });
    const betaAgent = await registered('beta', 'beta-1', {});
    agents.staging = stagingAgent.agentId;
    agents.prod = prodAgent.agentId;
    agents.beta = betaAgent.agentId;

    // Everyone listens before anything happens.
    streams = {
      scoped: await subscribe(scoped.client, 'acme'),
      viewer: await subscribe(viewer.client, 'acme'),
      approver: await subscribe(approver.client, 'acme'),
      ownerBeta: await subscribe(owner, 'beta'),
    };

    await connect(prodAgent);
    await connect(stagingAgent);
    prodCommand = await run(agents.prod, 'ping');
    highCommand = await run(agents.staging, 'migrate');
    // The last event of acme, which every reader there may see: what came before it has been sent.
    sentinel = await run(agents.staging, 'ping');
    for (const stream of [streams.scoped, streams.viewer, streams.approver])
      await stream.until((e) => e.name === 'command' && e.data.id === sentinel);
    // Then beta's own last event.
    await connect(betaAgent);
    await streams.ownerBeta.until((e) => e.name === 'agent' && e.data.id === agents.beta);
  }, 90_000);
  afterAll(async () => {
    // The server's shutdown ends every reader's stream.
    await world?.close();
    for (const stream of Object.values(streams ?? {})) await stream.close();
  });

  it('tells a reader allowed everything about commands, approvals and agents as they change', () => {
    const seen = streams.approver.events;
    expect(seen).toContainEqual({
      name: 'agent',
      data: expect.objectContaining({ id: agents.prod, status: 'online' }),
    });
    expect(seen).toContainEqual({
      name: 'command',
      data: expect.objectContaining({
        id: highCommand,
        status: 'awaiting_approval',
        agentId: agents.staging,
      }),
    });
    expect(seen).toContainEqual({
      name: 'approval',
      data: expect.objectContaining({ commandId: highCommand, status: 'awaiting_approval' }),
    });
    expect(seen.some((e) => e.name === 'command' && e.data.id === prodCommand)).toBe(true);
  });

  it('sends a reader of another organization nothing of this one', () => {
    const names = JSON.stringify(streams.ownerBeta.events);
    for (const id of [agents.staging, agents.prod, prodCommand, highCommand, sentinel])
      expect(names).not.toContain(id);
    expect(streams.ownerBeta.events.map((e) => e.name)).toEqual(['ready', 'agent']);
  });

  it('sends a label-scoped reader nothing about agents outside their scope', () => {
    const seen = JSON.stringify(streams.scoped.events);
    expect(seen).not.toContain(agents.prod);
    expect(seen).not.toContain(prodCommand);
    // In scope, they hear it all: the agent, its commands, its approvals.
    expect(streams.scoped.events).toContainEqual({
      name: 'agent',
      data: expect.objectContaining({ id: agents.staging, status: 'online' }),
    });
    expect(streams.scoped.events.some((e) => e.name === 'approval' && e.data.commandId === highCommand)).toBe(
      true,
    );
  });

  it('sends no approval event to a member who may not decide on approvals', () => {
    const seen = streams.viewer.events;
    expect(seen.some((e) => e.name === 'command' && e.data.id === highCommand)).toBe(true);
    expect(seen.filter((e) => e.name === 'approval')).toEqual([]);
  });

  it('takes a ticket once, only for the organization and stream it was issued for', async () => {
    const owner = world.owner.client;
    const acme = await ticket(owner, 'acme');
    // Presented to another organization's stream, by the same person who belongs to both.
    const elsewhere = await open(owner, 'beta', acme);
    expect([elsewhere.status, ((await elsewhere.json()) as { error: { code: string } }).error.code]).toEqual([
      401,
      'live_ticket_invalid',
    ]);
    const first = collect(await open(owner, 'acme', acme));
    await first.until((e) => e.name === 'ready');
    await first.close();
    const again = await open(owner, 'acme', acme);
    expect(again.status).toBe(401);
    await again.body?.cancel();
    // A ticket for one command's stream does not open the organization's.
    const narrow = await owner.json<{ ticket: string }>(
      'POST',
      `/api/orgs/acme/commands/${sentinel}/events/tickets`,
    );
    const widened = await open(owner, 'acme', narrow.body.ticket);
    expect(widened.status).toBe(401);
    await widened.body?.cancel();
    // Nor does the cookie alone.
    const bare = await owner.send('GET', '/api/orgs/acme/events');
    expect(bare.status).toBe(401);
    await bare.body?.cancel();
  });

  it('ends the stream of a member whose role is taken away before sending them anything more', async () => {
    const leaving = await world.join('leaving@example.test', 'operator');
    const stream = await subscribe(leaving.client, 'acme');
    const removed = await world.owner.client.send('DELETE', `/api/orgs/acme/members/${leaving.id}`);
    expect(removed.status).toBeLessThan(300);
    const after = await run(agents.staging, 'ping');
    await stream.until((e) => e.name === 'ended');
    expect(JSON.stringify(stream.events)).not.toContain(after);
    await stream.close();
  });
});
