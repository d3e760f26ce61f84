import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isWellFormedToken, tokenHash } from '@bulwark/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { registerAgent } from '../test-support/agents.js';
import { BACKENDS, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { runCli } from '../test-support/processes.js';
import type { SessionClient } from '../test-support/session-client.js';

/**
 * API keys (KEY-1), attacked from the outside:
 * - a key tries to do more than it lists, more than its member holds, or act in another organization;
 * - a key tries to mint a stronger key, outlive its parent, or escape its label scope;
 * - a revoked, expired or orphaned key (its member removed) is tried again;
 * - someone with the database file looks for tokens in it;
 * - a script spreads a key over many addresses to escape the rate limit.
 */

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

interface KeyView {
  id: string;
  name: string;
  hint: string;
  permissions: string[];
  selector: string | null;
  status: string;
  createdByKey: string | null;
  lastUsedAt: string | null;
  lastUsedIp: string | null;
  revokedReason: string | null;
}
type Created = { apiKey: KeyView; token: string };
type ErrorBody = { error: { code: string; message: string } };

async function createKey(client: SessionClient, body: Record<string, unknown>) {
  return client.json<Created & ErrorBody>('POST', '/api/orgs/acme/api-keys', body);
}

/** A call the way a script makes it: the key in the Authorization header, no cookie, no CSRF token. */
async function withKey(token: string, method: string, route: string, body?: unknown, headers = {}) {
  const response = await fetch(`${world!.server.url}${route}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as Record<string, never> };
}

async function keysList() {
  return (await world!.owner.client.json<{ apiKeys: KeyView[] }>('GET', '/api/orgs/acme/api-keys')).body
    .apiKeys;
}

async function auditEvents(action: string) {
  const listed = await world!.owner.client.json<{
    events: Array<{
      actor: { type: string; id: string };
      details: Record<string, unknown>;
      target: { id: string } | null;
    }>;
  }>('GET', `/api/orgs/acme/audit/events?action=${action}`);
  return listed.body.events;
}

describe.each(BACKENDS)('API keys on %s', (backend) => {
  it('are shown once, stored as a hash, and act within the permissions they list, without CSRF', async () => {
    world = await startOrgWorld({}, backend);
    const created = await createKey(world.owner.client, {
      name: 'ci deploy',
      permissions: ['teams:read', 'teams:manage'],
    });
    expect(created.status).toBe(201);
    const { token, apiKey } = created.body;
    expect(isWellFormedToken(token, 'bwk')).toBe(true);
    expect(apiKey).toMatchObject({ name: 'ci deploy', status: 'active', hint: `${token.slice(0, 12)}…` });
    expect(apiKey.permissions).toEqual(['teams:manage', 'teams:read']);

    // A script creates a team: no cookie, no CSRF token, no Origin; the event names the key.
    const team = await withKey(token, 'POST', '/api/orgs/acme/teams', { name: 'Release' });
    expect(team.status).toBe(201);
    const [event] = await auditEvents('team.created');
    expect(event?.actor).toMatchObject({ type: 'api_key', id: apiKey.id });

    // The owner holds members:read; the key does not list it, so the key does not get it.
    const members = await withKey(token, 'GET', '/api/orgs/acme/members');
    expect(members.status).toBe(403);
    const denial = (await auditEvents('access.denied')).find((e) => e.actor.id === apiKey.id);
    expect(String(denial?.details.reason)).toContain(
      `API key ${apiKey.id} (ci deploy) does not hold members:read`,
    );

    // Listed without the token; last use recorded with the address.
    const [listed] = await keysList();
    expect(listed).toMatchObject({ id: apiKey.id, lastUsedIp: '127.0.0.1' });
    expect(listed?.lastUsedAt).not.toBeNull();
    expect(JSON.stringify(await keysList())).not.toContain(token);

    // Self-service routes need a person, not a key.
    const sessions = await withKey(token, 'GET', '/api/auth/sessions');
    expect([sessions.status, sessions.body.error]).toEqual([
      403,
      expect.objectContaining({ code: 'api_key_not_allowed' }),
    ]);

    // A malformed Authorization header never falls back to the cookie beside it.
    const mixed = await world.owner.client.send('GET', '/api/orgs/acme/teams', undefined, {
      authorization: 'Basic b3duZXI6cGFzc3dvcmQ=',
    });
    expect(mixed.status).toBe(401);

    if (backend === 'sqlite') {
      // Attack: a copy of the database file. It holds the token's hash, never the token.
      const file = path.join(world.server.dataDir, 'bulwark.db');
      const raw = Buffer.concat([readFileSync(file), readFileSync(`${file}-wal`, { flag: 'a+' })]);
      expect(raw.includes(token)).toBe(false);
      expect(raw.includes(token.slice(4, 40))).toBe(false);
      expect(raw.includes(tokenHash(token))).toBe(true);
    } else {
      // Attack: a dump of the database. The key's row holds the token's hash, never the token.
      const database = openDatabase(world.server.config);
      try {
        const rows = JSON.stringify(await database.db.selectFrom('api_keys').selectAll().execute());
        expect(rows.includes(token)).toBe(false);
        expect(rows.includes(token.slice(4, 40))).toBe(false);
        expect(rows.includes(tokenHash(token))).toBe(true);
      } finally {
        await database.close();
      }
    }
  });

  it('never hold more than their member: at creation, after a demotion, and once the member is removed', async () => {
    world = await startOrgWorld({}, backend);
    const admin = await world.join('admin@acme.test', 'admin');
    // Admins do not hold security configuration: a key with it is refused and the attempt audited.
    const stronger = await createKey(admin.client, {
      name: 'too strong',
      permissions: ['agents:read', 'security_configuration:manage'],
    });
    expect([stronger.status, stronger.body.error?.code]).toEqual([403, 'exceeds_your_permissions']);
    expect(stronger.body.error.message).toContain('security_configuration:manage');

    const created = await createKey(admin.client, {
      name: 'admin tool',
      permissions: ['members:read', 'teams:manage'],
    });
    expect(created.status).toBe(201);
    const { token, apiKey } = created.body;
    expect((await withKey(token, 'POST', '/api/orgs/acme/teams', { name: 'Ops' })).status).toBe(201);

    // The member is demoted to viewer: the key loses teams:manage on the very next request.
    const demoted = await world.owner.client.send('PATCH', `/api/orgs/acme/members/${admin.id}`, {
      role: 'viewer',
    });
    expect(demoted.status).toBe(200);
    expect((await withKey(token, 'POST', '/api/orgs/acme/teams', { name: 'Ops 2' })).status).toBe(403);
    expect((await withKey(token, 'GET', '/api/orgs/acme/members')).status).toBe(200);

    // The member is removed: the key is revoked with them, and refused from then on.
    expect((await world.owner.client.send('DELETE', `/api/orgs/acme/members/${admin.id}`)).status).toBe(200);
    const [listed] = await keysList();
    expect(listed).toMatchObject({
      id: apiKey.id,
      status: 'revoked',
      revokedReason: 'its member left the organization',
    });
    const refused = await withKey(token, 'GET', '/api/orgs/acme/members');
    expect(refused.status).toBe(401);
    const [revokedEvent] = await auditEvents('apikey.revoked');
    expect(revokedEvent?.target?.id).toBe(apiKey.id);
    const [rejected] = await auditEvents('auth.api_key_rejected');
    expect(rejected).toMatchObject({
      actor: { type: 'api_key', id: apiKey.id },
      details: { reason: 'revoked' },
    });
  });

  it('act only in their own organization, even where their member belongs too', async () => {
    world = await startOrgWorld({}, backend);
    const org = await world.admin(
      'create-org',
      '--name',
      'Globex',
      '--slug',
      'globex',
      '--owner',
      'owner@acme.test',
      '--mfa-optional',
    );
    expect(org.code, org.stderr).toBe(0);
    const { token } = (
      await createKey(world.owner.client, { name: 'acme only', permissions: ['members:read'] })
    ).body;
    expect((await withKey(token, 'GET', '/api/orgs/acme/members')).status).toBe(200);
    // The owner is a member of globex; their acme key is not, and globex does not exist for it.
    expect((await world.owner.client.send('GET', '/api/orgs/globex/members')).status).toBe(200);
    expect((await withKey(token, 'GET', '/api/orgs/globex/members')).status).toBe(404);
  });

  it('cannot mint a stronger key: privileged routes refuse keys unless they hold apikeys:use_privileged, and a child never exceeds its parent', async () => {
    world = await startOrgWorld({}, backend);
    // A plain management key: key management is privileged, and a key cannot re-authenticate.
    const plain = await createKey(world.owner.client, {
      name: 'plain',
      permissions: ['apikeys:manage', 'agents:read'],
    });
    const refused = await withKey(plain.body.token, 'POST', '/api/orgs/acme/api-keys', {
      name: 'child',
      permissions: ['agents:read'],
    });
    expect([refused.status, refused.body.error]).toEqual([
      403,
      expect.objectContaining({ code: 'api_key_not_allowed' }),
    ]);

    // A key-minting key, limited to 30 days.
    const parent = await createKey(world.owner.client, {
      name: 'minter',
      permissions: ['apikeys:manage', 'apikeys:use_privileged', 'agents:read', 'agents:manage'],
      expiresInDays: 30,
    });
    expect(parent.status, JSON.stringify(parent.body)).toBe(201);
    const mint = (body: Record<string, unknown>) =>
      withKey(parent.body.token, 'POST', '/api/orgs/acme/api-keys', { name: 'child', ...body });

    // More permissions than the parent lists: refused, even though the owner holds them.
    const wider = await mint({ permissions: ['agents:read', 'commands:create'] });
    expect([wider.status, wider.body.error]).toEqual([
      403,
      expect.objectContaining({ code: 'exceeds_your_permissions' }),
    ]);
    // Outliving the parent: refused.
    const longer = await mint({ permissions: ['agents:read'], expiresInDays: 31 });
    expect([longer.status, longer.body.error]).toEqual([
      403,
      expect.objectContaining({ code: 'exceeds_your_permissions' }),
    ]);
    const child = await mint({ permissions: ['agents:read'], selector: 'env=prod', expiresInDays: 7 });
    expect(child.status).toBe(201);
    const grandchildBlocked = await withKey(
      (child.body as unknown as Created).token,
      'POST',
      '/api/orgs/acme/api-keys',
      {
        name: 'grandchild',
        permissions: ['agents:read'],
      },
    );
    expect(grandchildBlocked.status).toBe(403);
    const childKey = (child.body as unknown as Created).apiKey;
    expect(childKey).toMatchObject({ selector: 'env=prod', createdByKey: parent.body.apiKey.id });
    const sibling = await mint({ permissions: ['agents:read'], expiresInDays: 7 });
    expect(sibling.status).toBe(201);

    // Revoking the parent revokes what it minted.
    const revoked = await world.owner.client.json<{ revoked: number }>(
      'DELETE',
      `/api/orgs/acme/api-keys/${parent.body.apiKey.id}`,
    );
    expect(revoked).toEqual({ status: 200, body: { status: 'done', revoked: 3 } });
    expect(
      (await withKey((child.body as unknown as Created).token, 'GET', '/api/orgs/acme/agents')).status,
    ).toBe(401);
    const again = await world.owner.client.json<ErrorBody>(
      'DELETE',
      `/api/orgs/acme/api-keys/${parent.body.apiKey.id}`,
    );
    expect([again.status, again.body.error.code]).toEqual([409, 'already_revoked']);
  });

  it('with a label selector, see and act on matching agents only, and hold only agent permissions', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    const agents: Record<string, string> = {};
    for (const env of ['prod', 'dev']) {
      const { body } = await owner.json<{ token: string }>(
        'POST',
        '/api/orgs/acme/agent-registration-tokens',
        {
          labels: { env },
        },
      );
      agents[env] = (await registerAgent(world.server.url, body.token, `web-${env}`)).agentId;
    }
    const orgWide = await createKey(owner, {
      name: 'scoped',
      permissions: ['members:read'],
      selector: 'env=prod',
    });
    expect(orgWide.status).toBe(422);
    const badSelector = await createKey(owner, {
      name: 'scoped',
      permissions: ['agents:read'],
      selector: 'env==',
    });
    expect(badSelector.status).toBe(422);

    const { token } = (
      await createKey(owner, {
        name: 'prod reader',
        permissions: ['agents:read', 'agents:manage'],
        selector: 'env=prod',
      })
    ).body;
    const listed = await withKey(token, 'GET', '/api/orgs/acme/agents');
    expect(listed.status).toBe(200);
    expect((listed.body as unknown as { agents: Array<{ id: string }> }).agents.map((a) => a.id)).toEqual([
      agents.prod,
    ]);
    expect((await withKey(token, 'GET', `/api/orgs/acme/agents/${agents.dev}`)).status).toBe(403);
    expect((await withKey(token, 'POST', `/api/orgs/acme/agents/${agents.dev}/disable`)).status).toBe(403);
    expect((await withKey(token, 'POST', `/api/orgs/acme/agents/${agents.prod}/disable`)).status).toBe(200);
  });

  it('expire: 90 days by default, at most a year, and an expired key is refused and audited', async () => {
    world = await startOrgWorld({}, backend);
    const tooLong = await createKey(world.owner.client, {
      name: 'forever',
      permissions: ['org:read'],
      expiresInDays: 366,
    });
    expect(tooLong.status).toBe(422);
    const { token, apiKey } = (
      await createKey(world.owner.client, { name: 'default', permissions: ['members:read'] })
    ).body;
    expect((await withKey(token, 'GET', '/api/orgs/acme/members')).status).toBe(200);
    world.clock.advance(90 * 86_400_000);
    expect((await withKey(token, 'GET', '/api/orgs/acme/members')).status).toBe(401);
    const owner = await world.signIn('owner@acme.test', 'Tr4vel-Quietly-Over-Mountains');
    world.owner.client = owner.client;
    expect((await keysList())[0]).toMatchObject({ id: apiKey.id, status: 'expired' });
    const [rejected] = await auditEvents('auth.api_key_rejected');
    expect(rejected?.details).toEqual({ reason: 'expired' });
  });
});

// On SQLite only: the rate limiter counts in memory (or Redis), and `bulwark api` is an HTTP client;
// neither touches the database beyond the key checks the suite above runs on every backend.
describe('API keys and rate limits', () => {
  it('give each key its own budget: spreading a key over many addresses gets it no more', async () => {
    world = await startOrgWorld({
      BULWARK_RATE_LIMIT_READ_PER_MINUTE: '3',
      BULWARK_TRUSTED_PROXIES: '127.0.0.1',
    });
    const { token } = (await createKey(world.owner.client, { name: 'busy', permissions: ['members:read'] }))
      .body;
    const from = (address: string) =>
      withKey(token, 'GET', '/api/orgs/acme/members', undefined, { 'x-forwarded-for': address });
    const statuses = [];
    for (const address of ['203.0.113.1', '203.0.113.2', '203.0.113.3', '203.0.113.4'])
      statuses.push((await from(address)).status);
    // Each address made one request; the key made four, and its fourth is over its budget of three.
    expect(statuses).toEqual([200, 200, 200, 429]);
  });

  it('let `bulwark api` call the API with the key from the environment, never from the command line', async () => {
    world = await startOrgWorld();
    const { token } = (await createKey(world.owner.client, { name: 'cli', permissions: ['members:read'] }))
      .body;
    const run = (args: string[], env: Record<string, string>) =>
      runCli(['api', ...args], { cwd: world!.server.dataDir, env });
    const listed = await run(['GET', '/api/orgs/acme/members', '--server', world.server.url], {
      BULWARK_API_KEY: token,
    });
    expect(listed.code, listed.stderr).toBe(0);
    expect(
      (JSON.parse(listed.stdout) as { members: Array<{ email: string }> }).members.map((m) => m.email),
    ).toEqual(['owner@acme.test']);
    const denied = await run(
      ['POST', '/api/orgs/acme/teams', '--data', '{"name":"x"}', '--server', world.server.url],
      {
        BULWARK_API_KEY: token,
      },
    );
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('the server answered 403');
    const missing = await run(['GET', '/api/orgs/acme/members', '--server', world.server.url], {});
    expect([missing.code, missing.stderr]).toEqual([1, expect.stringContaining('set BULWARK_API_KEY')]);
  });
});
