import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * CMD-5 deadlines: the delivery timeout is the operator's setting (BULWARK_COMMAND_DELIVERY_TIMEOUT_SECONDS,
 * 10 minutes by default), and an action that declares no execution timeout gets 5 minutes.
 */

type View = { id: string; status: string; createdAt: string; expiresAt: string; timeoutSeconds: number };

describe.each(BACKENDS)('command deadlines on %s', (backend: Backend) => {
  let world: OrgWorld;
  let agentId = '';

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_COMMAND_DELIVERY_TIMEOUT_SECONDS: '90' }, backend);
    const token = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const registered = await registerAgent(world.server.url, token.body.token, 'app-1');
    agentId = registered.agentId;
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    // Declared with no timeout of its own.
    const action = { name: 'check', description: 'check', params: { type: 'object' }, risk: 'low' };
    expect((await reportApp(connection, [action])).type).toBe('report_result');
    // The agent goes away: commands wait in the queue for it.
    connection.socket.close();
    await vi.waitFor(async () => {
      const agent = await world.owner.client.json<{ status: string }>(
        'GET',
        `/api/orgs/acme/agents/${agentId}`,
      );
      expect(agent.body.status).toBe('offline');
    });
  }, 60_000);

  afterAll(async () => {
    await world?.close();
  });

  const get = async (id: string) =>
    (await world.owner.client.json<View>('GET', `/api/orgs/acme/commands/${id}`)).body;

  it('gives an action with no declared timeout five minutes', async () => {
    const created = await world.owner.client.json<View>('POST', '/api/orgs/acme/commands', {
      agent: agentId,
      service: 'app',
      action: 'check',
    });
    expect(created.status).toBe(201);
    expect(created.body.timeoutSeconds).toBe(300);
  });

  it('expires a command its agent did not pick up within the configured delivery timeout', async () => {
    const created = await world.owner.client.json<View>('POST', '/api/orgs/acme/commands', {
      agent: agentId,
      service: 'app',
      action: 'check',
    });
    expect(created.body.status).toBe('queued');
    expect(Date.parse(created.body.expiresAt) - Date.parse(created.body.createdAt)).toBe(90_000);
    // An agent's commands are deliverable until then (the sweep expires those whose deadline has passed).
    world.clock.advance(89_000);
    expect((await get(created.body.id)).status).toBe('queued');
    world.clock.advance(1_000);
    await vi.waitFor(async () => expect((await get(created.body.id)).status).toBe('expired'), {
      timeout: 10_000,
      interval: 100,
    });
  });
});
