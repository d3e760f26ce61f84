import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAgent } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * One selector grammar through the real HTTP API: the agent list filter, a role binding and an API
 * key all take `in (…)` / `notin (…)`, store what keeps working, and answer junk with a 422 that says
 * what is wrong (never a 500, never a silent "matches nothing").
 */

describe.each(BACKENDS)('label selectors over the API on %s', (backend: Backend) => {
  let world: OrgWorld;
  const agents: Record<string, string> = {};

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    const fleet: Array<[string, Record<string, string>]> = [
      ['pay-1', { team: 'payments', tier: 'web' }],
      ['core-1', { team: 'core', tier: 'db' }],
      ['search-1', { team: 'search', tier: 'web' }],
      ['bare-1', {}],
    ];
    for (const [name, labels] of fleet) {
      const created = await world.owner.client.json<{ token: string }>(
        'POST',
        `/api/orgs/${world.slug}/agent-registration-tokens`,
        { labels },
      );
      expect(created.status).toBe(201);
      agents[name] = (await registerAgent(world.server.url, created.body.token, name)).agentId;
    }
  });
  afterAll(() => world?.close());

  const list = (selector: string) =>
    world.owner.client.json<{
      agents: Array<{ name: string }>;
      error?: { code: string; fields?: Array<{ path: string; message: string }> };
    }>('GET', `/api/orgs/${world.slug}/agents?limit=200&selector=${encodeURIComponent(selector)}`);
  const names = async (selector: string) => {
    const answer = await list(selector);
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    return answer.body.agents.map((a) => a.name).sort();
  };

  it('filters the agent list with in and notin; notin keeps agents without the label', async () => {
    expect(await names('team in (payments, core)')).toEqual(['core-1', 'pay-1']);
    expect(await names('tier notin (db)')).toEqual(['bare-1', 'pay-1', 'search-1']);
    expect(await names('tier,team notin (payments,core)')).toEqual(['search-1']);
    expect(await names('env=prod,team in (payments, core)')).toEqual([]);
  });

  it('answers a malformed selector with 422 and the problem, at query.selector', async () => {
    const answer = await list('team in (payments,core');
    expect(answer.status).toBe(422);
    expect(answer.body.error?.code).toBe('validation_failed');
    expect(JSON.stringify(answer.body.error)).toContain('query.selector');
    expect(JSON.stringify(answer.body.error)).toContain('is never closed');
  });

  it('binds a role on a set selector, stored normalized, and keeps accepting the older forms', async () => {
    const dev = await world.join(`dev-${backend}@acme.test`, 'viewer');
    const bind = (selector: string) =>
      world.owner.client.json<{ selector: string | null }>('POST', `/api/orgs/${world.slug}/role-bindings`, {
        role: 'operator',
        subject: { type: 'user', id: dev.id },
        selector,
      });
    const set = await bind('team in ( payments , core ),tier notin (db)');
    expect(set.status, JSON.stringify(set.body)).toBe(201);
    expect(set.body.selector).toBe('team in (payments,core),tier notin (db)');
    const older = await bind('env = staging, !canary');
    expect(older.status).toBe(201);
    expect(older.body.selector).toBe('env=staging,!canary');
    const junk = await bind('team in ()');
    expect(junk.status).toBe(422);
    expect(JSON.stringify(junk.body)).toContain('lists no values');

    const explain = (labels: string) =>
      world.owner.client.json<{ allowed: boolean }>(
        'GET',
        `/api/orgs/${world.slug}/access/explain?permission=commands:create&user=${dev.id}&labels=${encodeURIComponent(labels)}`,
      );
    expect((await explain('team=payments,tier=web')).body.allowed).toBe(true);
    expect((await explain('team=core')).body.allowed).toBe(true);
    expect((await explain('team=core,tier=db')).body.allowed).toBe(false);
    expect((await explain('team=search')).body.allowed).toBe(false);
  });

  it('creates an API key limited by a set selector and refuses a broken one', async () => {
    const create = (selector: string) =>
      world.owner.client.json<{ selector?: string | null }>('POST', `/api/orgs/${world.slug}/api-keys`, {
        name: `ci-${selector.length}`,
        permissions: ['agents:read'],
        selector,
      });
    const ok = await create('team notin (legacy,test)');
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    const broken = await create('team notin legacy)');
    expect(broken.status).toBe(422);
    expect(JSON.stringify(broken.body)).toContain('closes nothing');
  });
});
