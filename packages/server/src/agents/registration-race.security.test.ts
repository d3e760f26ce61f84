import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAgent } from '../test-support/agents.js';
import { BACKENDS, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * Attack: one registration token, leaked or copied, used by several hosts at the same moment, to
 * register more agents than it allows. On PostgreSQL the registrations really run in parallel
 * transactions; the guarded update of the token's use count must let exactly as many through as the
 * token allows (AGT-1).
 */

describe.each(BACKENDS)('registration races on %s', (backend) => {
  let world: OrgWorld;
  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
  });
  afterAll(() => world.close());

  it.each([1, 3])('lets exactly %i of eight simultaneous registrations through', async (uses) => {
    const { body } = await world.owner.client.json<{ id: string; token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      { uses },
    );
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => registerAgent(world.server.url, body.token, `racer-${i}`)),
    );
    const agents = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.agentId] : []));
    expect(agents).toHaveLength(uses);
    expect(new Set(agents).size).toBe(uses);
    for (const o of outcomes) {
      if (o.status === 'rejected') expect(String(o.reason)).toMatch(/401.*registration_token_invalid/);
    }
    const tokens = await world.owner.client.json<{
      tokens: Array<{ id: string; uses: number; status: string }>;
    }>('GET', '/api/orgs/acme/agent-registration-tokens');
    expect(tokens.body.tokens.find((t) => t.id === body.id)).toMatchObject({ uses, status: 'used' });
  });
});
