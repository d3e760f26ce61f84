import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAgent } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';

/**
 * Agent management inside one organization, scoped by labels (ACC-3, AGT-4).
 *
 * Attack: an operator trusted with the staging agents relabels one as production, or a production
 * agent as staging, to gain commands on production hosts or to take a host out of others' sight; or
 * manages, or merely sees, agents outside their scope.
 */

describe.each(BACKENDS)('agents on %s', (backend: Backend) => {
  let world: OrgWorld;
  let keeper: Member;
  const agents: Record<'staging' | 'prod', string> = { staging: '', prod: '' };

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    for (const env of ['staging', 'prod'] as const) {
      const { body } = await owner.json<{ token: string }>(
        'POST',
        '/api/orgs/acme/agent-registration-tokens',
        {
          labels: { env },
        },
      );
      agents[env] = (await registerAgent(world.server.url, body.token, `${env}-1`)).agentId;
    }
    // A member whose organization role sees no agents: all they hold on agents comes from the binding.
    const minimal = await owner.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'minimal',
      permissions: ['teams:read'],
    });
    keeper = await world.join('keeper@example.test', minimal.body.id);
    const role = await owner.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'agent-keeper',
      permissions: ['agents:read', 'agents:manage'],
    });
    const binding = await owner.json('POST', '/api/orgs/acme/role-bindings', {
      role: role.body.id,
      subject: { type: 'user', id: keeper.id },
      selector: 'env=staging',
    });
    expect(binding.status).toBe(201);
  });
  afterAll(() => world?.close());

  describe('agents within a label scope', () => {
    it('lists and shows only the agents in scope', async () => {
      const listed = await keeper.client.json<{ agents: Array<{ id: string }> }>(
        'GET',
        '/api/orgs/acme/agents',
      );
      expect(listed.body.agents.map((a) => a.id)).toEqual([agents.staging]);
      expect((await keeper.client.json('GET', `/api/orgs/acme/agents/${agents.prod}`)).status).toBe(403);
    });

    it('pages by id with a cursor, skipping what the caller may not see', async () => {
      const page = (client: typeof keeper.client, query: string) =>
        client.json<{ agents: Array<{ id: string }>; next: string | null }>(
          'GET',
          `/api/orgs/acme/agents?${query}`,
        );
      const all = [agents.staging, agents.prod].sort();
      const first = await page(world.owner.client, 'limit=1');
      expect([first.body.agents.map((a) => a.id), first.body.next]).toEqual([[all[0]], all[0]]);
      // The last page says so: no cursor leads to an empty page.
      const second = await page(world.owner.client, `limit=1&after=${first.body.next}`);
      expect(second.body).toMatchObject({ agents: [{ id: all[1] }], next: null });
      // The keeper sees one agent whichever way the fleet is paged, and no hint of the other.
      const scoped = await page(keeper.client, 'limit=1');
      expect(scoped.body).toMatchObject({ agents: [{ id: agents.staging }], next: null });
      const rest = await page(keeper.client, `limit=1&after=${agents.staging}`);
      expect(rest.body).toEqual({ agents: [], next: null });
    });

    it('renames and relabels within scope, audited with before and after', async () => {
      const renamed = await keeper.client.json<{ name: string }>(
        'PATCH',
        `/api/orgs/acme/agents/${agents.staging}`,
        {
          name: 'staging-web',
          labels: { env: 'staging', tier: 'web' },
        },
      );
      expect(renamed.status).toBe(200);
      expect(renamed.body).toMatchObject({ name: 'staging-web', labels: { env: 'staging', tier: 'web' } });
      const events = await world.owner.client.json<{ events: Array<{ details: Record<string, unknown> }> }>(
        'GET',
        '/api/orgs/acme/audit/events?action=agent.updated',
      );
      expect(events.body.events[0]?.details).toEqual({
        name: { from: 'staging-1', to: 'staging-web' },
        labels: { from: { env: 'staging' }, to: { env: 'staging', tier: 'web' } },
      });
    });

    it('refuses moving an agent out of scope or touching one outside it, and changes nothing', async () => {
      const outOfScope = await keeper.client.json('PATCH', `/api/orgs/acme/agents/${agents.staging}`, {
        labels: { env: 'prod' },
      });
      expect(outOfScope.status).toBe(403);
      const reach = await keeper.client.json('PATCH', `/api/orgs/acme/agents/${agents.prod}`, {
        labels: { env: 'staging' },
      });
      expect(reach.status).toBe(403);
      expect((await keeper.client.json('POST', `/api/orgs/acme/agents/${agents.prod}/disable`)).status).toBe(
        403,
      );

      const prod = await world.owner.client.json<{ labels: unknown; status: string }>(
        'GET',
        `/api/orgs/acme/agents/${agents.prod}`,
      );
      expect(prod.body).toMatchObject({ labels: { env: 'prod' }, status: 'offline' });
      const staging = await world.owner.client.json<{ labels: unknown }>(
        'GET',
        `/api/orgs/acme/agents/${agents.staging}`,
      );
      expect(staging.body.labels).toEqual({ env: 'staging', tier: 'web' });
    });

    it('disables and enables an agent in scope; revoking needs a recent sign-in', async () => {
      const disabled = await keeper.client.json<{ status: string }>(
        'POST',
        `/api/orgs/acme/agents/${agents.staging}/disable`,
      );
      expect(disabled.body.status).toBe('disabled');
      const enabled = await keeper.client.json<{ status: string }>(
        'POST',
        `/api/orgs/acme/agents/${agents.staging}/enable`,
      );
      expect(enabled.body.status).toBe('offline');
      world.clock.advance(16 * 60_000);
      const revoke = await keeper.client.json<{ error: { code: string } }>(
        'POST',
        `/api/orgs/acme/agents/${agents.staging}/revoke`,
      );
      expect([revoke.status, revoke.body.error.code]).toEqual([403, 'step_up_required']);
    });

    it('lets only someone who manages a scope preset its labels on a registration token', async () => {
      // Attack: an operator (agents:register, not agents:manage) registers a host of their own as prod.
      const operator = await world.join('registrar@example.test', 'operator');
      const labelled = await operator.client.json('POST', '/api/orgs/acme/agent-registration-tokens', {
        labels: { env: 'prod' },
      });
      expect(labelled.status).toBe(403);
      const plain = await operator.client.json('POST', '/api/orgs/acme/agent-registration-tokens', {});
      expect(plain.status).toBe(201);
      // The keeper manages staging agents, and may preset staging only.
      const keeperToken = await keeper.client.json('POST', '/api/orgs/acme/agent-registration-tokens', {
        labels: { env: 'staging' },
      });
      expect(keeperToken.status).toBe(403); // no agents:register at all
    });
  });
});
