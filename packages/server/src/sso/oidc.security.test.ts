import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Database } from '../db/database.js';
import { SESSION_COOKIE } from '../identity/session-guard.js';
import { openBeside } from '../test-support/databases.js';
import {
  OIDC_CLIENT,
  type OidcProvider,
  type ProviderAccount,
  startOidcProvider,
} from '../test-support/oidc-provider.js';
import { BACKENDS, type Backend, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { CookieJar, connectProvider, ssoBrowser, ssoRefusal } from '../test-support/sso-browser.js';
import { OIDC_CALLBACK_PREFIX, SSO_BROWSER_COOKIE } from './sso.routes.js';

/**
 * Sign-in through an OIDC provider (SSO-1, SSO-4), against a real oidc-provider process. The
 * provider is also made hostile (its token answers forged, unsigned, expired, for another client or
 * another sign-in, or never sent) and the attacks a relying party must stop are tried from outside:
 * a replayed `state`, a callback finished in another browser than the one that started it, an
 * account taken over by matching its email, an account link written into the database.
 */

type ErrorBody = { error: { code: string; message: string } };

describe.each(BACKENDS)('OIDC sign-in on %s', (backend: Backend) => {
  let world: OrgWorld;
  let provider: OidcProvider;
  let connectionId: string;
  let writer: Database;
  let tarpit: Server;
  const held: Socket[] = [];

  beforeAll(async () => {
    world = await startOrgWorld(
      // The test IdPs run on loopback: allowed explicitly, as an on-prem deployment would (NET-3).
      { BULWARK_SSO_TIMEOUT_SECONDS: '5', BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1' },
      backend,
    );
    provider = await startOidcProvider(`${world.server.url}${OIDC_CALLBACK_PREFIX}`);
    const created = await connectProvider(world.owner.client, 'acme', provider, 'Acme IdP', {
      scopes: ['email', 'profile', 'groups'],
      groupRoles: [{ group: 'ops', role: 'operator' }],
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    connectionId = created.body.id;
    writer = openBeside(world.server.config.database);
    // A provider that accepts connections and never answers.
    tarpit = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => tarpit.listen(0, '127.0.0.1', resolve));
  }, 60_000);

  afterAll(async () => {
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => tarpit?.close(resolve));
    await writer?.db.destroy();
    await provider?.stop();
    await world?.close();
  });

  const browsers = () => ssoBrowser(world.server.url, provider);
  const toCallback = (account: ProviderAccount, connection = connectionId) =>
    browsers().toCallback(connection, account);
  const finish = (browser: CookieJar, callbackUrl: string) => browsers().finish(browser, callbackUrl);
  const signIn = (account: ProviderAccount) => browsers().signIn(connectionId, account);

  async function sessionOf(cookie: string) {
    const client = new SessionClient(world.server.url);
    client.cookie = cookie;
    return client.json<{
      user: { id: string; email: string };
      memberships: Array<{ slug: string; role: string }>;
    }>('GET', '/api/auth/session');
  }

  const refusal = ssoRefusal;

  async function failureReasons(): Promise<string[]> {
    const rows = await writer.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'auth.login_failed')
      .orderBy('seq')
      .execute();
    return rows
      .map((row) => JSON.parse(row.details) as { via?: string; reason: string })
      .filter((d) => d.via === 'sso')
      .map((d) => d.reason);
  }

  it('puts a person in the teams their groups map to, and takes them out when they leave the group', async () => {
    const team = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/teams', {
      name: 'on-call',
    });
    const untouched = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/teams', {
      name: 'hand-kept',
    });
    const mapped = await connectProvider(world.owner.client, 'acme', provider, 'Acme IdP (teams)', {
      scopes: ['email', 'profile', 'groups'],
      groupTeams: [{ group: 'sre', team: team.body.id }],
    });
    expect(mapped.status, JSON.stringify(mapped.body)).toBe(201);
    const browser = ssoBrowser(world.server.url, provider);
    const teamsOf = async (email: string) => {
      const listed = await world.owner.client.json<{
        members: Array<{ email: string; teams: Array<{ name: string }> }>;
      }>('GET', '/api/orgs/acme/members');
      return listed.body.members.find((m) => m.email === email)?.teams.map((t) => t.name) ?? [];
    };
    await browser.signIn(mapped.body.id, { sub: 'tess', email: 'tess@acme.test', groups: ['sre'] });
    expect(await teamsOf('tess@acme.test')).toEqual(['on-call']);
    // A team the connection does not map is the console's to manage.
    const tess = (
      await world.owner.client.json<{ members: Array<{ id: string; email: string }> }>(
        'GET',
        '/api/orgs/acme/members',
      )
    ).body.members.find((m) => m.email === 'tess@acme.test')!;
    expect(
      (await world.owner.client.json('PUT', `/api/orgs/acme/teams/${untouched.body.id}/members/${tess.id}`))
        .status,
    ).toBeLessThan(300);
    await browser.signIn(mapped.body.id, { sub: 'tess', email: 'tess@acme.test', groups: [] });
    expect(await teamsOf('tess@acme.test')).toEqual(['hand-kept']);
    // A team of another kind of id, or of nowhere, is refused when the connection is made.
    const nowhere = await connectProvider(world.owner.client, 'acme', provider, 'Bad mapping', {
      groupTeams: [{ group: 'sre', team: 'tea_00000000000000000000000000' }],
    });
    expect(nowhere.status).toBe(422);
  });

  it('provisions a new person just in time with the role their groups map to, and re-applies it at every sign-in', async () => {
    const first = await signIn({ sub: 'alice', email: 'Alice@Acme.test', name: 'Alice', groups: ['ops'] });
    expect([first.status, first.location]).toEqual([303, '/agents']);
    const session = await sessionOf(first.session!);
    expect(session.status).toBe(200);
    expect(session.body.user.email).toBe('alice@acme.test');
    expect(session.body.memberships).toEqual([expect.objectContaining({ slug: 'acme', role: 'operator' })]);

    // Out of the group at the provider: the next sign-in is the same person, with the default role.
    const again = await signIn({ sub: 'alice', email: 'alice@acme.test', groups: [] });
    const later = await sessionOf(again.session!);
    expect(later.body.user.id).toBe(session.body.user.id);
    expect(later.body.memberships).toEqual([expect.objectContaining({ slug: 'acme', role: 'viewer' })]);
    const actions = await writer.db
      .selectFrom('audit_events')
      .select('action')
      .where('actor_id', '=', session.body.user.id)
      .orderBy('seq')
      .execute();
    expect(actions.map((row) => row.action)).toEqual(
      expect.arrayContaining([
        'user.created',
        'sso.identity_linked',
        'member.joined',
        'auth.login_succeeded',
        'member.role_changed',
      ]),
    );
  });

  it('never takes over an existing account by its email address', async () => {
    // Whoever controls an account at the provider with the owner's address is not the owner.
    const attempt = await signIn({ sub: 'mallory', email: OWNER.email, groups: ['ops'] });
    expect(refusal(attempt.location)).toBe('sso_account_exists');
    expect(attempt.session).toBeUndefined();
  });

  it('refuses a replayed state, and a callback finished in another browser than the one that started it', async () => {
    const { browser, callbackUrl } = await toCallback({ sub: 'bob', email: 'bob@acme.test' });
    expect((await finish(browser, callbackUrl)).location).toBe('/agents');
    // Attack: the same answer again (a captured redirect replayed), with the same browser's cookie.
    const replayed = await finish(browser, callbackUrl);
    expect(refusal(replayed.location)).toBe('sso_state_unknown');

    // Attack (login CSRF): a victim's browser is sent the attacker's own callback URL.
    const theirs = await toCallback({ sub: 'carol', email: 'carol@acme.test' });
    const victim = new CookieJar();
    const planted = await finish(victim, theirs.callbackUrl);
    expect(refusal(planted.location)).toBe('sso_browser_mismatch');
    expect(planted.session).toBeUndefined();
    expect(await failureReasons()).toEqual(
      expect.arrayContaining(['sso_state_unknown', 'sso_browser_mismatch']),
    );
  });

  it('refuses ID tokens a hostile provider forges, leaves unsigned, lets expire, or makes for another client or sign-in', async () => {
    for (const mode of ['forge', 'alg-none', 'expired', 'wrong-audience', 'other-nonce'] as const) {
      await provider.tamper(mode);
      const attempt = await signIn({ sub: 'dave', email: 'dave@acme.test' });
      expect(refusal(attempt.location), mode).toBe('sso_provider_refused');
      expect(attempt.session, mode).toBeUndefined();
    }
    await provider.tamper('none');
    expect((await signIn({ sub: 'dave', email: 'dave@acme.test' })).location).toBe('/agents');
    const user = await writer.db
      .selectFrom('users')
      .select('id')
      .where('email', '=', 'dave@acme.test')
      .execute();
    expect(user).toHaveLength(1);
  });

  it('takes the key the provider rotated while it runs', async () => {
    expect((await signIn({ sub: 'erin', email: 'erin@acme.test' })).location).toBe('/agents');
    // The provider now signs with a new key and publishes only that one.
    await provider.rotateKey();
    // Keys fetched less than a minute ago are not fetched again for a key they lack (no provider can be
    // made to serve its keys on every request); a minute on, they are. Time is moved, not waited for.
    expect(refusal((await signIn({ sub: 'erin', email: 'erin@acme.test' })).location)).toBe(
      'sso_provider_refused',
    );
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 61_000 });
    try {
      const after = await signIn({ sub: 'erin', email: 'erin@acme.test' });
      expect(after.location).toBe('/agents');
      expect((await sessionOf(after.session!)).status).toBe(200);
    } finally {
      vi.useRealTimers();
    }
  });

  it('ends with a clear error, not a hang, when the provider does not answer', async () => {
    await provider.tamper('silent');
    const { browser, callbackUrl } = await toCallback({ sub: 'frank', email: 'frank@acme.test' });
    expect(refusal((await finish(browser, callbackUrl)).location)).toBe('sso_provider_timeout');
    await provider.tamper('none');

    // A connection whose provider never answers at all: starting says so, and so does the test action.
    const silent = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/sso/connections', {
      name: 'Silent IdP',
      kind: 'oidc',
      config: {
        issuer: `http://127.0.0.1:${(tarpit.address() as { port: number }).port}`,
        clientId: 'x',
        clientSecret: 'y',
        defaultRole: 'viewer',
      },
    });
    expect(silent.status).toBe(201);
    const started = await fetch(`${world.server.url}/api/auth/sso/${silent.body.id}/start`, {
      method: 'POST',
    });
    const body = (await started.json()) as ErrorBody;
    expect([started.status, body.error.code]).toEqual([400, 'sso_provider_timeout']);
    const tested = await world.owner.client.json<{ ok: boolean; problem: string }>(
      'POST',
      `/api/orgs/acme/sso/connections/${silent.body.id}/test`,
    );
    expect(tested.body).toEqual({ ok: false, problem: 'The identity provider did not answer within 5 s.' });
    const healthy = await world.owner.client.json(
      'POST',
      `/api/orgs/acme/sso/connections/${connectionId}/test`,
    );
    expect(healthy.body).toEqual({ ok: true, issuer: provider.issuer });
  });

  it('steps up an SSO session at the provider, which must authenticate the same person again', async () => {
    const first = await signIn({ sub: 'gina', email: 'gina@acme.test' });
    const browser = new CookieJar();
    browser.values.set(SESSION_COOKIE, first.session!);
    const csrfOf = async () => {
      const view = await fetch(`${world.server.url}/api/auth/session`, {
        headers: { cookie: browser.header() },
      });
      return ((await view.json()) as { csrfToken: string }).csrfToken;
    };
    let csrf = await csrfOf();
    const post = async (path: string) => {
      const response = await fetch(`${world.server.url}${path}`, {
        method: 'POST',
        headers: {
          cookie: browser.header(),
          'x-csrf-token': csrf,
          origin: world.server.url,
          'sec-fetch-site': 'same-origin',
        },
      });
      browser.absorb(response);
      return { status: response.status, body: (await response.json()) as ErrorBody & { location: string } };
    };
    // A privileged step (adding a passkey) once the sign-in is older than the step-up window.
    world.clock.advance(16 * 60_000);
    const privileged = '/api/auth/mfa/passkeys/options';
    expect((await post(privileged)).body.error.code).toBe('step_up_required');

    const stepUp = async (account: ProviderAccount) => {
      await provider.nextAccount(account);
      const started = await post('/api/auth/sso/reauthenticate?returnTo=%2Fprofile');
      expect(started.status).toBe(200);
      // The provider is told to ask for the credentials again, whatever session it holds.
      const asked = new URL(started.body.location);
      expect([asked.searchParams.get('max_age'), asked.searchParams.get('prompt')]).toEqual(['0', 'login']);
      return browsers().finish(browser, await browsers().throughProvider(started.body.location));
    };
    // The provider signs in someone else: no step-up for this session.
    expect(refusal((await stepUp({ sub: 'harry', email: 'harry@acme.test' })).location)).toBe(
      'sso_reauthentication_other_person',
    );
    // A provider that did not ask again (an old auth_time) proves nothing now.
    await provider.tamper('stale-auth-time');
    expect(refusal((await stepUp({ sub: 'gina', email: 'gina@acme.test' })).location)).toBe(
      'sso_reauthentication_stale',
    );
    await provider.tamper('none');
    const done = await stepUp({ sub: 'gina', email: 'gina@acme.test' });
    expect(done.location).toBe('/profile');
    expect(done.session).not.toBe(first.session);
    csrf = await csrfOf(); // a new session, so a new CSRF token
    // Past the guard now: what stops it is that this server has no public URL for passkeys.
    expect((await post(privileged)).body.error.code).toBe('public_url_required');
  });

  it('takes an answer only at the address of the connection it was asked of, and admits only allowed domains', async () => {
    // Adding a connection is privileged, and time has moved on in the tests before: prove it is the owner.
    expect(
      (await world.owner.client.json('POST', '/api/auth/reauth', { password: OWNER.password })).status,
    ).toBe(200);
    const other = await connectProvider(world.owner.client, 'acme', provider, 'Partner IdP', {
      allowedEmailDomains: ['partner.test'],
    });
    expect(other.status).toBe(201);
    // Attack (mix-up): a provider's answer for one connection's sign-in, brought to another's address.
    const { browser, callbackUrl } = await toCallback({ sub: 'nick', email: 'nick@acme.test' });
    const elsewhere = callbackUrl.replace(`/oidc/${connectionId}/`, `/oidc/${other.body.id}/`);
    expect(refusal((await finish(browser, elsewhere)).location)).toBe('sso_connection_mismatch');
    // A provider that signs in people of many organizations: only the allowed domains join.
    const outsider = await browsers().signIn(other.body.id, { sub: 'olive', email: 'olive@gmail.test' });
    expect(refusal(outsider.location)).toBe('sso_domain_not_allowed');
    const partner = await browsers().signIn(other.body.id, { sub: 'pete', email: 'pete@partner.test' });
    expect(partner.location).toBe('/agents');
    const pete = (await sessionOf(partner.session!)).body.user.id;
    // Removing the connection (to replace it) does not unlink its people: the same account at the
    // same issuer signs in through another connection as the same person.
    expect(
      (await world.owner.client.json('DELETE', `/api/orgs/acme/sso/connections/${other.body.id}`)).status,
    ).toBe(200);
    const again = await browsers().signIn(connectionId, { sub: 'pete', email: 'pete@partner.test' });
    expect(again.location).toBe('/agents');
    expect((await sessionOf(again.session!)).body.user.id).toBe(pete);
  });

  it('signs nobody in through an account link written into the database', async () => {
    // Attack: a database writer links a provider account they control to the owner.
    await writer.db
      .insertInto('sso_identities')
      .values({
        id: 'sid_01JZZZZZZZZZZZZZZZZZZZZZZZ',
        issuer: provider.issuer,
        subject: 'eve',
        user_id: world.owner.id,
        connection_id: connectionId,
        created_at: Date.now(),
        last_sign_in_at: null,
        seal: '',
      })
      .execute();
    const attempt = await signIn({ sub: 'eve', email: 'eve@acme.test' });
    expect(refusal(attempt.location)).toBe('sso_identity_integrity');
    expect(attempt.session).toBeUndefined();
  });

  it('keeps the client secret sealed: never returned, not readable in the database', async () => {
    const listed = await world.owner.client.json<{ connections: Array<Record<string, unknown>> }>(
      'GET',
      '/api/orgs/acme/sso/connections',
    );
    expect(JSON.stringify(listed.body)).not.toContain(OIDC_CLIENT.secret);
    expect(listed.body.connections.map((c) => c.name)).toContain('Acme IdP');
    const rows = await writer.db.selectFrom('sso_connections').select('config_sealed').execute();
    for (const row of rows) {
      expect(row.config_sealed).toMatch(/^enc1\./);
      expect(row.config_sealed).not.toContain(OIDC_CLIENT.secret);
    }
    // The sign-in page offers the connections by name, without configuration.
    const offered = await fetch(`${world.server.url}/api/auth/sso/orgs/acme`);
    const body = (await offered.json()) as {
      connections: Array<{ id: string; name: string; startUrl: string }>;
    };
    expect(body.connections.find((c) => c.id === connectionId)).toEqual({
      id: connectionId,
      name: 'Acme IdP',
      kind: 'oidc',
      startUrl: `/api/auth/sso/${connectionId}/start`,
    });
  });

  it('binds the sign-in to the browser with a host-only, HTTP-only cookie', async () => {
    const started = await fetch(`${world.server.url}/api/auth/sso/${connectionId}/start`, {
      method: 'POST',
    });
    const cookie = started.headers
      .getSetCookie()
      .find((header) => header.startsWith(`${SSO_BROWSER_COOKIE}=`));
    expect(cookie).toMatch(/; Path=\//);
    expect(cookie).toMatch(/; HttpOnly/);
    expect(cookie).toMatch(/; Secure/);
    expect(cookie).toMatch(/; SameSite=Lax/);
    // Where to land is a path of this site, never another one.
    const offsite = await fetch(
      `${world.server.url}/api/auth/sso/${connectionId}/start?returnTo=//evil.test`,
      {
        method: 'POST',
      },
    );
    expect(offsite.status).toBe(422);
  });
});
