import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../db/database.js';
import { SESSION_COOKIE } from '../identity/session-guard.js';
import { openBeside } from '../test-support/databases.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { postedForm, type SamlAccount, type SamlIdp, startSamlIdp } from '../test-support/saml-idp.js';
import { CookieJar, ssoRefusal } from '../test-support/sso-browser.js';
import { samlAcsPath, samlMetadataPath } from './sso.routes.js';

/**
 * SAML 2.0 sign-in (SSO-2) against a real IdP process (samlify) the test makes hostile. Each attack
 * below is a response the IdP — or someone between it and the browser — sends, and each must end on
 * the sign-in page with nobody signed in: an unsigned assertion, XML signature wrapping (a forged
 * assertion beside a signed one), a NameID with a comment in it, an expired assertion, one for
 * another service or addressed to another ACS, one signed by a key the IdP never published, the same
 * response posted twice, and a response nobody here asked for (IdP-initiated).
 */

const ALICE: SamlAccount = {
  nameId: 'alice@example.test',
  email: 'alice@example.test',
  name: 'Alice',
  groups: ['eng'],
};

describe.each(BACKENDS)('SAML sign-in on %s', (backend: Backend) => {
  let world: OrgWorld;
  let idp: SamlIdp;
  let connectionId: string;
  let acsUrl: string;
  let reader: Database;

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    // The SP's addresses depend on the connection's id: the IdP learns them once it exists.
    idp = await startSamlIdp({ entityId: 'urn:placeholder', acsUrl: 'http://placeholder.invalid/acs' });
    const created = await world.owner.client.json<{ id: string; config: Record<string, unknown> }>(
      'POST',
      '/api/orgs/acme/sso/connections',
      {
        name: 'Acme SAML',
        kind: 'saml',
        config: {
          metadataXml: await idp.metadataXml(),
          defaultRole: 'viewer',
          groupRoles: [{ group: 'admins', role: 'admin' }],
        },
      },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    connectionId = created.body.id;
    expect(created.body.config).toMatchObject({ idpEntityId: idp.entityId, idpSsoUrl: idp.ssoUrl });
    acsUrl = `${world.server.url}${samlAcsPath(connectionId)}`;
    await idp.serviceProvider({ entityId: `${world.server.url}${samlMetadataPath(connectionId)}`, acsUrl });
    reader = openBeside(world.server.config.database);
  }, 60_000);

  afterAll(async () => {
    await reader?.db.destroy();
    await idp?.stop();
    await world?.close();
  });

  /** A browser starts a sign-in here and is sent to the IdP, which answers with its form. */
  async function toIdp(account: SamlAccount = ALICE) {
    await idp.nextAccount(account);
    const browser = new CookieJar();
    const started = await fetch(`${world.server.url}/api/auth/sso/${connectionId}/start?returnTo=%2Fagents`, {
      method: 'POST',
      headers: { origin: world.server.url, 'sec-fetch-site': 'same-origin' },
    });
    browser.absorb(started);
    expect(started.status).toBe(200);
    const { location } = (await started.json()) as { location: string };
    const atIdp = await fetch(location);
    expect(atIdp.status, await atIdp.clone().text()).toBe(200);
    return { browser, form: postedForm(await atIdp.text()) };
  }

  /** The browser posts the IdP's form to the ACS, cross-site, with the cookies it holds. */
  async function post(browser: CookieJar, form: { action: string; fields: Record<string, string> }) {
    const response = await fetch(form.action, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: browser.header() },
      body: new URLSearchParams(form.fields).toString(),
    });
    browser.absorb(response);
    return {
      status: response.status,
      location: response.headers.get('location'),
      session: browser.values.get(SESSION_COOKIE),
    };
  }

  async function signInWith(mode: Parameters<SamlIdp['tamper']>[0], account: SamlAccount = ALICE) {
    await idp.tamper(mode);
    try {
      const { browser, form } = await toIdp(account);
      return await post(browser, form);
    } finally {
      await idp.tamper('none');
    }
  }

  it('signs a person in through the IdP, just in time, and serves its SP metadata', async () => {
    const landed = await signInWith('none');
    expect([landed.status, landed.location, ssoRefusal(landed.location)]).toEqual([303, '/agents', null]);
    expect(landed.session).toBeDefined();
    const members = await world.owner.client.json<{ members: Array<{ email: string; role: string }> }>(
      'GET',
      '/api/orgs/acme/members',
    );
    expect(members.body.members.find((m) => m.email === ALICE.email)?.role).toBe('viewer');
    // Groups map to a role at every sign-in.
    expect((await signInWith('none', { ...ALICE, groups: ['admins'] })).status).toBe(303);
    const again = await world.owner.client.json<{ members: Array<{ email: string; role: string }> }>(
      'GET',
      '/api/orgs/acme/members',
    );
    expect(again.body.members.find((m) => m.email === ALICE.email)?.role).toBe('admin');

    const metadata = await fetch(`${world.server.url}${samlMetadataPath(connectionId)}`);
    const xml = await metadata.text();
    expect(metadata.headers.get('content-type')).toMatch(/samlmetadata\+xml/);
    expect(xml).toContain(`entityID="${world.server.url}${samlMetadataPath(connectionId)}"`);
    expect(xml).toContain(`Location="${acsUrl}"`);
    expect(xml).toContain('WantAssertionsSigned="true"');
  });

  const attacks: Array<[Parameters<SamlIdp['tamper']>[0], string]> = [
    ['unsigned', 'an assertion without a signature'],
    ['wrapping', 'a forged assertion beside the signed one (XSW)'],
    ['wrapping-extensions', 'the signed assertion hidden in Extensions, a forged one in its place'],
    ['expired', 'an assertion past NotOnOrAfter'],
    ['wrong-audience', 'an assertion for another service provider'],
    ['wrong-recipient', 'an assertion addressed to another ACS'],
    ['other-key', 'an assertion signed by a key the IdP never published'],
  ];
  for (const [mode, what] of attacks)
    it(`refuses ${what}`, async () => {
      const refused = await signInWith(mode);
      expect(refused.status).toBe(303);
      expect(ssoRefusal(refused.location), mode).not.toBeNull();
      expect(refused.session).toBeUndefined();
    });

  it('reads a NameID with a comment in it whole, never as its first part', async () => {
    // Signed over "admin@example.test.evil.test"; a parser reading the first text node sees "admin@example.test".
    const admin = await world.join('admin@example.test', 'owner');
    const landed = await signInWith('comment-injection', {
      nameId: 'admin@example.test.evil.test',
      email: 'admin@example.test.evil.test',
    });
    if (landed.session) {
      const me = await fetch(`${world.server.url}/api/auth/session`, {
        headers: { cookie: `${SESSION_COOKIE}=${landed.session}` },
      });
      const body = (await me.json()) as { user: { id: string; email: string } };
      expect(body.user.id).not.toBe(admin.id);
      expect(body.user.email).toBe('admin@example.test.evil.test');
    }
    const identities = await reader.db.selectFrom('sso_identities').select('subject').execute();
    expect(identities.map((i) => i.subject)).not.toContain('admin@example.test');
  });

  it('takes a response once: the same one posted again is refused', async () => {
    const { browser, form } = await toIdp();
    const first = await post(browser, form);
    expect(ssoRefusal(first.location)).toBeNull();
    // Replayed from the same browser (its cookie is gone with the sign-in) and from a fresh one.
    const replayed = await post(browser, form);
    expect(ssoRefusal(replayed.location)).not.toBeNull();
    const elsewhere = await post(new CookieJar(), form);
    expect(ssoRefusal(elsewhere.location)).not.toBeNull();
    expect(elsewhere.session).toBeUndefined();
  });

  it('refuses a response started in another browser, and an IdP-initiated one', async () => {
    const { form } = await toIdp();
    // The attacker's own sign-in, planted into a victim's browser (login CSRF): the victim holds no cookie for it.
    const planted = await post(new CookieJar(), form);
    expect(ssoRefusal(planted.location)).toBe('sso_browser_mismatch');
    await idp.nextAccount(ALICE);
    const unsolicited = postedForm(await idp.unsolicited(acsUrl));
    const refused = await post(new CookieJar(), unsolicited);
    expect([refused.status, ssoRefusal(refused.location)]).toEqual([303, 'saml_unsolicited']);
    const failures = await reader.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'auth.login_failed')
      .execute();
    expect(failures.some((event) => String(event.details).includes('saml_unsolicited'))).toBe(true);
  });

  it('accepts an IdP-initiated response only where allowed, and then only once (the replay cache)', async () => {
    const allowing = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/sso/connections', {
      name: 'Acme SAML, IdP-initiated',
      kind: 'saml',
      config: { metadataXml: await idp.metadataXml(), defaultRole: 'viewer', allowIdpInitiated: true },
    });
    expect(allowing.status).toBe(201);
    const otherAcs = `${world.server.url}${samlAcsPath(allowing.body.id)}`;
    await idp.serviceProvider({
      entityId: `${world.server.url}${samlMetadataPath(allowing.body.id)}`,
      acsUrl: otherAcs,
    });
    try {
      await idp.nextAccount(ALICE);
      const form = postedForm(await idp.unsolicited(otherAcs));
      const first = await post(new CookieJar(), form);
      expect([first.status, ssoRefusal(first.location)]).toEqual([303, null]);
      expect(first.session).toBeDefined();
      const again = await post(new CookieJar(), form);
      expect(ssoRefusal(again.location)).toBe('saml_replayed');
      expect(again.session).toBeUndefined();
    } finally {
      await idp.serviceProvider({ entityId: `${world.server.url}${samlMetadataPath(connectionId)}`, acsUrl });
    }
  });

  /** A session's step-up through the IdP, as the console starts it and the browser follows it. */
  async function stepUp(session: string) {
    const browser = new CookieJar();
    const reauth = await fetch(`${world.server.url}/api/auth/sso/reauthenticate`, {
      method: 'POST',
      headers: {
        cookie: `${SESSION_COOKIE}=${session}`,
        origin: world.server.url,
        'sec-fetch-site': 'same-origin',
        'x-csrf-token': await csrfOf(session),
      },
    });
    browser.absorb(reauth);
    expect(reauth.status).toBe(200);
    const { location } = (await reauth.json()) as { location: string };
    const atIdp = await fetch(location);
    return post(browser, postedForm(await atIdp.text()));
  }

  it('steps a session up at the IdP with ForceAuthn, and replaces the session', async () => {
    const landed = await signInWith('none');
    const stepped = await stepUp(landed.session!);
    expect((await idp.lastRequest())?.forceAuthn).toBe(true);
    expect([stepped.status, ssoRefusal(stepped.location)]).toEqual([303, null]);
    expect(stepped.session).toBeDefined();
    expect(stepped.session).not.toBe(landed.session);
  });

  async function csrfOf(session: string) {
    const view = await fetch(`${world.server.url}/api/auth/session`, {
      headers: { cookie: `${SESSION_COOKIE}=${session}` },
    });
    return ((await view.json()) as { csrfToken: string }).csrfToken;
  }

  it("links an account the organization's SCIM made at its first sign-in, and keeps out whom SCIM removed", async () => {
    const turnedOn = await world.owner.client.json<{ token: string }>('PUT', '/api/orgs/acme/scim', {
      defaultRole: 'operator',
    });
    const scim = (method: string, path: string, body?: unknown) =>
      fetch(`${world.server.url}/scim/v2/acme${path}`, {
        method,
        headers: { authorization: `Bearer ${turnedOn.body.token}`, 'content-type': 'application/scim+json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const created = (await (await scim('POST', '/Users', { userName: 'carol@example.test' })).json()) as {
      id: string;
    };
    const carol = { nameId: 'carol@example.test', email: 'carol@example.test', name: 'Carol' };
    const landed = await signInWith('none', carol);
    expect([landed.status, ssoRefusal(landed.location)]).toEqual([303, null]);
    const me = await fetch(`${world.server.url}/api/auth/session`, {
      headers: { cookie: `${SESSION_COOKIE}=${landed.session}` },
    });
    expect(((await me.json()) as { user: { id: string } }).user.id).toBe(created.id);
    // Deprovisioned by SCIM: a sign-in through the provider does not make her a member again.
    await scim('PATCH', `/Users/${created.id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'replace', path: 'active', value: false }],
    });
    expect(ssoRefusal((await signInWith('none', carol)).location)).not.toBeNull();
    expect((await world.owner.client.json('DELETE', '/api/orgs/acme/scim')).status).toBe(200);
  });

  it("keeps another organization's SAML connection from signing in this one's people, and a session to its organization", async () => {
    // Beta's owner connects the very same IdP (its entity ID, its certificate): Alice's link is acme's.
    await world.createOrg('Beta', 'owner@acme.test');
    const copied = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/beta/sso/connections', {
      name: 'Same IdP, other organization',
      kind: 'saml',
      config: { metadataXml: await idp.metadataXml(), defaultRole: 'owner' },
    });
    expect(copied.status).toBe(201);
    const otherAcs = `${world.server.url}${samlAcsPath(copied.body.id)}`;
    await idp.serviceProvider({
      entityId: `${world.server.url}${samlMetadataPath(copied.body.id)}`,
      acsUrl: otherAcs,
    });
    try {
      const started = await fetch(`${world.server.url}/api/auth/sso/${copied.body.id}/start`, {
        method: 'POST',
        headers: { origin: world.server.url, 'sec-fetch-site': 'same-origin' },
      });
      const browser = new CookieJar();
      browser.absorb(started);
      await idp.nextAccount(ALICE);
      const atIdp = await fetch(((await started.json()) as { location: string }).location);
      const refused = await post(browser, postedForm(await atIdp.text()));
      // Not Alice: beta's connection finds no link of its own, and her account is not taken by email.
      expect(ssoRefusal(refused.location)).toBe('sso_account_exists');
    } finally {
      await idp.serviceProvider({ entityId: `${world.server.url}${samlMetadataPath(connectionId)}`, acsUrl });
    }
    // Alice, made an owner of Gamma too, reaches it only by signing in there: acme's IdP vouches for acme.
    await world.createOrg('Gamma', ALICE.email!);
    const landed = await signInWith('none');
    const reach = async (slug: string) =>
      (
        await fetch(`${world.server.url}/api/orgs/${slug}/members`, {
          headers: { cookie: `${SESSION_COOKIE}=${landed.session}` },
        })
      ).status;
    expect(await reach('acme')).toBe(200);
    expect(await reach('gamma')).toBe(403);
  });

  it('refuses a form body on any other route, and junk at the ACS', async () => {
    const form = await fetch(`${world.server.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'email=owner%40acme.test&password=x',
    });
    expect(form.status).toBe(415);
    const junk = await fetch(acsUrl, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'SAMLResponse=bm90IHhtbA%3D%3D&RelayState=x',
    });
    expect([junk.status, ssoRefusal(junk.headers.get('location'))]).toEqual([303, 'saml_unsolicited']);
    const twice = await fetch(acsUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'SAMLResponse=a&SAMLResponse=b',
    });
    expect(twice.status).toBe(400);
    const missing = await fetch(acsUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'RelayState=x',
    });
    expect(missing.status).toBe(422);
  });

  // Last: it moves the server's clock past the IdP's, which every later sign-in would notice.
  it('refuses a step-up whose assertion says the person authenticated before it began', async () => {
    // The IdP answers with AuthnInstant "now" by its clock; the server's clock is ten minutes ahead
    // of it, as if the IdP had answered from an old session without asking for the password.
    world.clock.advance(Date.now() - world.clock.now() + 10 * 60_000);
    const landed = await signInWith('none');
    expect(landed.session).toBeDefined();
    const stale = await stepUp(landed.session!);
    expect(ssoRefusal(stale.location)).toBe('sso_reauthentication_stale');
    expect(stale.session).toBeUndefined();
  });
});
