import { generateToken, tokenHash } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../db/database.js';
import { openBeside } from '../test-support/databases.js';
import { BACKENDS, type Backend, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { ENTRA, OKTA, type RecordedStep } from '../test-support/scim-recordings.js';

/**
 * SCIM 2.0 provisioning (SSO-5), as Okta and Entra ID drive it, and as an attacker would try it: a
 * SCIM token is the identity provider's power over one organization's membership, and nothing more.
 * It cannot take over an account by its email, change or lock out an account that is not its own,
 * reach another organization or any other route, or survive its rotation; a token written into the
 * database opens nothing. Deprovisioning someone ends their sessions and API keys at once.
 */

type ScimErrorBody = { schemas: string[]; status: string; scimType?: string; detail: string };
type ScimUserBody = {
  id: string;
  userName: string;
  active: boolean;
  meta: { version: string };
  displayName: string;
};

describe.each(BACKENDS)('SCIM provisioning on %s', (backend: Backend) => {
  let world: OrgWorld;
  let token: string;
  let base: string;
  let reader: Database;

  const scim = async <T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
    /** null: no Authorization header at all. */
    bearer: string | null = token,
  ) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/scim+json' }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      headers: response.headers,
      body: (text ? JSON.parse(text) : undefined) as T,
    };
  };

  const configure = (body: unknown) =>
    world.owner.client.json<{ token?: string; settings: { baseUrl: string; tokenHint: string } }>(
      'PUT',
      '/api/orgs/acme/scim',
      body,
    );

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    await world.createOrg('Beta');
    const turnedOn = await configure({ defaultRole: 'viewer' });
    expect(turnedOn.status).toBe(200);
    token = turnedOn.body.token!;
    base = turnedOn.body.settings.baseUrl;
    expect(base).toBe(`${world.server.url}/scim/v2/acme`);
    reader = openBeside(world.server.config.database);
  }, 60_000);

  afterAll(async () => {
    await reader?.db.destroy();
    await world?.close();
  });

  async function replay(steps: RecordedStep[], values: Record<string, string>) {
    const fill = (value: unknown): unknown => {
      if (typeof value === 'string')
        return value.replace(/\{\{(\w+)\}\}/g, (_, name: string) => values[name] ?? '');
      if (Array.isArray(value)) return value.map(fill);
      if (value && typeof value === 'object')
        return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, fill(inner)]));
      return value;
    };
    for (const step of steps) {
      const answer = await scim(
        step.method,
        fill(step.path) as string,
        step.body === undefined ? undefined : fill(step.body),
        step.contentType ? { 'content-type': step.contentType } : {},
      );
      expect(answer.status, `${step.note}: ${JSON.stringify(answer.body)}`).toBe(step.status);
      if (step.status !== 204)
        expect(answer.headers.get('content-type'), step.note).toMatch(/^application\/scim\+json/);
      if (step.expect) expect(answer.body, step.note).toMatchObject(fill(step.expect) as object);
      for (const [name, field] of Object.entries(step.capture ?? {}))
        values[name] = (answer.body as Record<string, string>)[field]!;
    }
    return values;
  }

  it('provisions as Okta does: lookup, create, profile push, group push, deactivate, reactivate', async () => {
    const values = await replay(OKTA, { email: 'grace@acme.test', EMAIL: 'GRACE@Acme.Test' });
    // A real member now, who signs in through the provider: no password here.
    const members = await world.owner.client.json<{
      members: Array<{ id: string; email: string; role: string }>;
    }>('GET', '/api/orgs/acme/members');
    expect(members.body.members.find((m) => m.id === values.userId)).toMatchObject({
      email: 'grace@acme.test',
      role: 'viewer',
    });
    const row = await reader.db
      .selectFrom('users')
      .select(['password_hash', 'display_name'])
      .where('id', '=', values.userId!)
      .executeTakeFirstOrThrow();
    expect(row).toEqual({ password_hash: null, display_name: 'Grace B. Hopper' });
  });

  it('shows in the access review that SCIM is on and whom it provisioned, never its token', async () => {
    const response = await world.owner.client.send('GET', '/api/orgs/acme/access-review');
    const text = await response.text();
    expect(text).not.toContain(token);
    const review = JSON.parse(text) as {
      scim: { configured: boolean; tokenHint: string; defaultRole: string };
      members: Array<{ email: string; provisionedBy: string | null }>;
    };
    expect(review.scim).toMatchObject({
      configured: true,
      tokenHint: token.slice(0, 10),
      defaultRole: 'viewer',
    });
    expect(review.members.find((m) => m.email === 'grace@acme.test')?.provisionedBy).toBe('scim');
    expect(review.members.find((m) => m.email === OWNER.email)?.provisionedBy).toBeNull();
  });

  it('provisions as Entra ID does: enterprise extension, capitalized ops, string booleans, soft then hard delete', async () => {
    const values = await replay(ENTRA, { email: 'alan@acme.test' });
    const member = await reader.db
      .selectFrom('memberships')
      .select('role')
      .where('org_id', '=', (await orgId('acme'))!)
      .where('user_id', '=', values.userId!)
      .executeTakeFirst();
    expect(member).toBeUndefined();
    // The account SCIM made, and that belongs to nobody else, is disabled, not left signed in somewhere.
    const user = await reader.db
      .selectFrom('users')
      .select('status')
      .where('id', '=', values.userId!)
      .executeTakeFirstOrThrow();
    expect(user.status).toBe('disabled');
    const events = await reader.db
      .selectFrom('audit_events')
      .select(['action', 'actor_type'])
      .where('action', 'in', ['user.created', 'member.removed', 'user.disabled'])
      .where('actor_type', '=', 'scim')
      .execute();
    expect(new Set(events.map((e) => e.action))).toEqual(
      new Set(['user.created', 'member.removed', 'user.disabled']),
    );
  });

  const orgId = async (slug: string) =>
    (await reader.db.selectFrom('orgs').select('id').where('slug', '=', slug).executeTakeFirst())?.id;

  it('deprovisioning ends the person’s sessions and revokes their API keys at once', async () => {
    const dana = await world.join('dana@acme.test', 'admin');
    await dana.client.send('POST', '/api/auth/reauth', { password: 'Quiet-Harbor-Lantern-93' });
    const key = await dana.client.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
      name: 'dana ci',
      permissions: ['agents:read'],
    });
    expect(key.status).toBe(201);
    const keyReads = () =>
      fetch(`${world.server.url}/api/orgs/acme/agents`, {
        headers: { authorization: `Bearer ${key.body.token}` },
      });
    expect((await keyReads()).status).toBe(200);
    expect((await dana.client.send('GET', '/api/auth/session')).status).toBe(200);

    // The provider finds the invited member by their email and deactivates them.
    const found = await scim<{ Resources: ScimUserBody[] }>(
      'GET',
      '/Users?filter=userName%20eq%20%22dana@acme.test%22',
    );
    expect(found.body.Resources).toHaveLength(1);
    const off = await scim<ScimUserBody>('PATCH', `/Users/${dana.id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'replace', path: 'active', value: false }],
    });
    expect([off.status, off.body.active]).toEqual([200, false]);
    expect((await dana.client.send('GET', '/api/auth/session')).status).toBe(401);
    expect((await keyReads()).status).toBe(401);
    // An account SCIM did not make is not SCIM's to disable: only the membership here ended.
    const user = await reader.db
      .selectFrom('users')
      .select('status')
      .where('id', '=', dana.id)
      .executeTakeFirstOrThrow();
    expect(user.status).toBe('active');

    // Activated again, they get back the role they had.
    const on = await scim<ScimUserBody>('PATCH', `/Users/${dana.id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'replace', path: 'active', value: true }],
    });
    expect(on.body.active).toBe(true);
    const member = await reader.db
      .selectFrom('memberships')
      .select('role')
      .where('user_id', '=', dana.id)
      .where('org_id', '=', (await orgId('acme'))!)
      .executeTakeFirstOrThrow();
    expect(member.role).toBe('admin');
  });

  it('never takes over an existing account by its email, and never changes an account it did not make', async () => {
    // Someone with an account here (in another organization) whom the provider names by email.
    const outsider = await world.admin('create-user', '--email', 'victim@beta.test', '--org', 'beta');
    expect(outsider.code, outsider.stderr).toBe(0);
    const taken = await scim<ScimErrorBody>('POST', '/Users', {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: 'victim@beta.test',
      emails: [{ value: 'victim@beta.test', primary: true }],
      active: true,
    });
    expect([taken.status, taken.body.scimType]).toEqual([409, 'uniqueness']);
    const victim = await reader.db
      .selectFrom('users')
      .select(['id'])
      .where('email', '=', 'victim@beta.test')
      .executeTakeFirstOrThrow();
    const memberships = await reader.db
      .selectFrom('memberships')
      .select('org_id')
      .where('user_id', '=', victim.id)
      .execute();
    expect(memberships).toEqual([{ org_id: await orgId('beta') }]);

    // A member who joined by invitation: SCIM's rename of their email must not move their account.
    const erin = await world.join('erin@acme.test', 'viewer');
    const renamed = await scim<ScimUserBody>('PUT', `/Users/${erin.id}`, {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: 'erin@acme.test',
      emails: [{ value: 'attacker@evil.test', primary: true }],
      displayName: 'Not Erin',
      active: true,
    });
    expect(renamed.status).toBe(200);
    const erinRow = await reader.db
      .selectFrom('users')
      .select(['email', 'display_name'])
      .where('id', '=', erin.id)
      .executeTakeFirstOrThrow();
    expect(erinRow).toEqual({ email: 'erin@acme.test', display_name: 'erin' });
  });

  it('leaves alone an account it made once its person belongs to another organization too', async () => {
    // Acme's SCIM made the account: it was acme's to manage while acme was all the person belonged to.
    const made = await scim<ScimUserBody>('POST', '/Users', {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: 'gina@acme.test',
      emails: [{ value: 'gina@acme.test', primary: true }],
      displayName: 'Gina',
      active: true,
    });
    expect(made.status).toBe(201);
    // Then the person joined beta as well.
    await reader.db
      .insertInto('memberships')
      .values({
        org_id: (await orgId('beta'))!,
        user_id: made.body.id,
        role: 'viewer',
        created_at: Date.now(),
      })
      .execute();
    // Acme's SCIM renames and deactivates her: the account is beta's member's now too, so neither the
    // rename nor the disabling reaches it (only her membership of acme ends). The count of her
    // organizations must see beta, though the request runs in acme's scope (row-level security).
    const put = await scim('PUT', `/Users/${made.body.id}`, {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: 'gina@acme.test',
      emails: [{ value: 'someone-else@evil.test', primary: true }],
      displayName: 'Not Gina',
      active: false,
    });
    expect(put.status).toBe(200);
    const account = await reader.db
      .selectFrom('users')
      .select(['email', 'display_name', 'status'])
      .where('id', '=', made.body.id)
      .executeTakeFirstOrThrow();
    expect(account).toEqual({ email: 'gina@acme.test', display_name: 'Gina', status: 'active' });
  });

  it('cannot bring back, with their old role, someone an owner removed in the console', async () => {
    const frank = await world.join('frank@acme.test', 'admin');
    // SCIM has touched him (it keeps a record: userName, the role to give back after a deactivation).
    expect(
      (await scim('PUT', `/Users/${frank.id}`, { userName: 'frank@acme.test', active: true })).status,
    ).toBe(200);
    expect((await world.owner.client.json('DELETE', `/api/orgs/acme/members/${frank.id}`)).status).toBe(200);
    const back = await scim<ScimErrorBody>('PATCH', `/Users/${frank.id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'replace', path: 'active', value: true }],
    });
    expect(back.status).toBe(404);
    const member = await reader.db
      .selectFrom('memberships')
      .select('role')
      .where('user_id', '=', frank.id)
      .executeTakeFirst();
    expect(member).toBeUndefined();
  });

  it('cannot deprovision the last owner', async () => {
    const owner = await scim<ScimErrorBody>('PATCH', `/Users/${world.owner.id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'replace', value: { active: false } }],
    });
    expect([owner.status, owner.body.scimType]).toEqual([400, 'mutability']);
    expect((await world.owner.client.send('GET', '/api/orgs/acme/members')).status).toBe(200);
  });

  it('reaches nothing without its token, nothing of another organization, and no other route', async () => {
    const anonymous = await scim<ScimErrorBody>('GET', '/Users', undefined, {}, null);
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.schemas).toEqual(['urn:ietf:params:scim:api:messages:2.0:Error']);
    // A well-formed token nobody issued.
    expect((await scim('GET', '/Users', undefined, {}, generateToken('bwp'))).status).toBe(401);
    // The owner's own session is no SCIM credential either.
    const session = await world.owner.client.json<ScimErrorBody>('GET', '/scim/v2/acme/Users');
    expect(session.status).toBe(401);
    // Acme's token at Beta's address: as if Beta did not exist.
    const elsewhere = await fetch(`${world.server.url}/scim/v2/beta/Users`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(elsewhere.status).toBe(404);
    // And nowhere outside SCIM.
    const agents = await fetch(`${world.server.url}/api/orgs/acme/agents`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(agents.status).toBe(403);
    expect(((await agents.json()) as { error: { code: string } }).error.code).toBe('scim_token_not_allowed');
    // A team SCIM did not make is not a SCIM group.
    const team = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/teams', {
      name: 'hand-made',
      description: '',
    });
    expect(team.status).toBe(201);
    expect((await scim('GET', `/Groups/${team.body.id}`)).status).toBe(404);
    expect((await scim('DELETE', `/Groups/${team.body.id}`)).status).toBe(404);
  });

  it('refuses a token written into the database, and the old token once rotated', async () => {
    // Someone who can write the database, not the master key, swaps in a token of their own.
    const forged = generateToken('bwp');
    const acme = (await orgId('acme'))!;
    const original = await reader.db
      .selectFrom('scim_configs')
      .selectAll()
      .where('org_id', '=', acme)
      .executeTakeFirstOrThrow();
    await reader.db
      .updateTable('scim_configs')
      .set({ token_hash: tokenHash(forged) })
      .where('org_id', '=', acme)
      .execute();
    expect((await scim('GET', '/Users', undefined, {}, forged)).status).toBe(401);
    await reader.db
      .updateTable('scim_configs')
      .set({ token_hash: original.token_hash })
      .where('org_id', '=', acme)
      .execute();
    expect((await scim('GET', '/Users')).status).toBe(200);

    const rotated = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/acme/scim/token');
    expect(rotated.status).toBe(200);
    expect((await scim('GET', '/Users')).status).toBe(401);
    token = rotated.body.token;
    expect((await scim('GET', '/Users')).status).toBe(200);
  });

  it('honours ETags: a stale If-Match is refused, nothing changes', async () => {
    const created = await scim<ScimUserBody>('POST', '/Users', {
      userName: 'etag@acme.test',
      displayName: 'Etag One',
    });
    expect(created.status).toBe(201);
    expect(created.headers.get('etag')).toBe(created.body.meta.version);
    expect(created.headers.get('location')).toBe(`${base}/Users/${created.body.id}`);
    const changed = await scim<ScimUserBody>(
      'PUT',
      `/Users/${created.body.id}`,
      { userName: 'etag@acme.test', displayName: 'Etag Two' },
      { 'if-match': created.body.meta.version },
    );
    expect(changed.status).toBe(200);
    expect(changed.body.meta.version).not.toBe(created.body.meta.version);
    const stale = await scim<ScimErrorBody>(
      'PUT',
      `/Users/${created.body.id}`,
      { userName: 'etag@acme.test', displayName: 'Etag Three' },
      { 'if-match': created.body.meta.version },
    );
    expect(stale.status).toBe(412);
    expect((await scim<ScimUserBody>('GET', `/Users/${created.body.id}`)).body.displayName).toBe('Etag Two');
  });

  it('maps groups to roles, again at every change of membership', async () => {
    const mapped = await configure({
      defaultRole: 'viewer',
      groupRoles: [{ group: 'sre', role: 'operator' }],
    });
    expect([mapped.status, mapped.body.token]).toEqual([200, undefined]);
    const person = await scim<ScimUserBody>('POST', '/Users', { userName: 'sam@acme.test' });
    const roleOf = async () =>
      (
        await reader.db
          .selectFrom('memberships')
          .select('role')
          .where('user_id', '=', person.body.id)
          .where('org_id', '=', (await orgId('acme'))!)
          .executeTakeFirstOrThrow()
      ).role;
    expect(await roleOf()).toBe('viewer');
    const group = await scim<{ id: string }>('POST', '/Groups', {
      displayName: 'sre',
      members: [{ value: person.body.id }],
    });
    expect(group.status).toBe(201);
    expect(await roleOf()).toBe('operator');
    const removed = await scim('PATCH', `/Groups/${group.body.id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'remove', path: `members[value eq "${person.body.id}"]` }],
    });
    expect(removed.status).toBe(200);
    expect(await roleOf()).toBe('viewer');
    // A role stronger than the setter's own cannot be handed to the provider.
    const admin = await world.join('adam@acme.test', 'admin');
    const tooStrong = await admin.client.json<{ error: { code: string } }>('PUT', '/api/orgs/acme/scim', {
      defaultRole: 'owner',
    });
    expect(tooStrong.status).toBe(403);
  });

  it('answers junk with SCIM errors, never a 5xx', async () => {
    const cases: Array<[string, string, unknown, number, string | undefined]> = [
      ['GET', '/Users?filter=userName%20eq', undefined, 400, 'invalidFilter'],
      ['GET', '/Users?filter=%22%22%22', undefined, 400, 'invalidFilter'],
      ['GET', '/Users?count=-1', undefined, 400, 'invalidValue'],
      ['GET', '/Users?sortBy=x', undefined, 400, 'invalidValue'],
      ['POST', '/Users', { userName: '' }, 400, 'invalidValue'],
      ['POST', '/Users', { userName: 'not-an-email' }, 400, 'invalidValue'],
      ['POST', '/Users', { userName: 'x@acme.test', active: 'maybe' }, 400, 'invalidValue'],
      ['POST', '/Users', [1, 2], 400, 'invalidValue'],
      ['POST', '/Users', '"just a string"', 400, 'invalidValue'],
      ['POST', '/Groups', { displayName: 'x', members: [{ value: 'usr_nobody' }] }, 400, 'invalidValue'],
      ['PATCH', `/Users/${world?.owner.id ?? ''}`, { Operations: [] }, 400, 'invalidValue'],
      [
        'PATCH',
        `/Users/${world?.owner.id ?? ''}`,
        {
          schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
          Operations: [{ op: 'move', path: 'x' }],
        },
        400,
        'invalidValue',
      ],
      [
        'PATCH',
        `/Users/${world?.owner.id ?? ''}`,
        {
          schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
          Operations: [{ op: 'replace', path: 'emails[type eq', value: 'x' }],
        },
        400,
        'invalidPath',
      ],
      ['GET', '/Users/usr_00000000000000000000000000', undefined, 404, undefined],
      ['DELETE', '/Groups/tea_nope', undefined, 400, 'invalidValue'],
      ['GET', '/Nothing', undefined, 404, undefined],
    ];
    for (const [method, path, body, status, scimType] of cases) {
      const answer = await scim<ScimErrorBody>(
        method,
        path.replace(/\/Users\/$/, `/Users/${world.owner.id}`),
        body,
      );
      expect([answer.status, answer.body?.scimType], `${method} ${path}`).toEqual([status, scimType]);
      expect(answer.body.schemas).toEqual(['urn:ietf:params:scim:api:messages:2.0:Error']);
    }
  });

  it('pages lists from a 1-based startIndex', async () => {
    const all = await scim<{ totalResults: number; Resources: ScimUserBody[] }>('GET', '/Users');
    expect(all.body.totalResults).toBeGreaterThanOrEqual(5);
    const second = await scim<{ startIndex: number; itemsPerPage: number; Resources: ScimUserBody[] }>(
      'GET',
      '/Users?startIndex=2&count=2',
    );
    expect(second.body).toMatchObject({ startIndex: 2, itemsPerPage: 2 });
    expect(second.body.Resources.map((r) => r.id)).toEqual(all.body.Resources.slice(1, 3).map((r) => r.id));
    const types = await scim<{ Resources: Array<{ id: string }> }>('GET', '/ResourceTypes');
    expect(types.body.Resources.map((r) => r.id)).toEqual(['User', 'Group']);
    const described = await scim<{ Resources: Array<{ id: string }> }>('GET', '/Schemas');
    expect(described.body.Resources).toHaveLength(2);
  });

  it('turned off, its token opens nothing', async () => {
    expect((await world.owner.client.json('DELETE', '/api/orgs/acme/scim')).status).toBe(200);
    expect((await scim('GET', '/Users')).status).toBe(401);
    const settings = await world.owner.client.json<{ enabled: boolean }>('GET', '/api/orgs/acme/scim');
    expect(settings.body.enabled).toBe(false);
  });
});
