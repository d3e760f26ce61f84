import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../db/database.js';
import { openBeside } from '../test-support/databases.js';
import { type OidcProvider, startOidcProvider } from '../test-support/oidc-provider.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  OWNER,
  startOrgWorld,
} from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { connectProvider, ssoBrowser } from '../test-support/sso-browser.js';
import { OIDC_CALLBACK_PREFIX } from './sso.routes.js';

/**
 * "SSO required" (SSO-4) with a break-glass owner (AUTH-8). Once an organization requires its
 * identity provider, a password is no way in: a member who signs in with one (a leaked password, an
 * account the provider has since disabled) reaches nothing there. The one exception is the owner named
 * for the day the provider is down, with a password and a second factor; each such sign-in is a
 * critical audit event. Turning the requirement on is refused while it would lock everyone out.
 */

type ErrorBody = { error: { code: string } };
const crypto = new NodeCryptoPlugin();

describe.each(BACKENDS)('SSO required on %s', (backend: Backend) => {
  let world: OrgWorld;
  let provider: OidcProvider;
  let connectionId: string;
  let reader: Database;
  let ownerSecret: string;

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1' }, backend);
    provider = await startOidcProvider(`${world.server.url}${OIDC_CALLBACK_PREFIX}`);
    const created = await connectProvider(world.owner.client, 'acme', provider, 'Acme IdP', {
      defaultRole: 'operator',
    });
    expect(created.status).toBe(201);
    connectionId = created.body.id;
    reader = openBeside(world.server.config.database);
  }, 60_000);

  afterAll(async () => {
    await reader?.db.destroy();
    await provider?.stop();
    await world?.close();
  });

  const codeNow = () =>
    generate({ secret: ownerSecret, crypto, epoch: Math.floor(world.clock.now() / 1000) });
  const reach = (client: SessionClient) => client.json<ErrorBody>('GET', '/api/orgs/acme/agents');
  const enforce = (client: SessionClient, body: { ssoRequired: boolean; breakGlassUserId: string | null }) =>
    client.json<ErrorBody & { ssoRequired: boolean }>('PUT', '/api/orgs/acme/sso/enforcement', body);

  let member: Member;
  let secondOwner: Member;
  let alice: SessionClient;

  it('refuses to require SSO without a break-glass owner who has a second factor, or when it would lock out its setter', async () => {
    member = await world.join('pat@acme.test', 'operator');
    secondOwner = await world.join('olga@acme.test', 'owner');
    const none = await enforce(world.owner.client, { ssoRequired: true, breakGlassUserId: null });
    expect([none.status, none.body.error.code]).toEqual([409, 'break_glass_owner_required']);
    // The owner has no second factor yet: a break-glass account that cannot prove one is no account.
    const noFactor = await enforce(world.owner.client, {
      ssoRequired: true,
      breakGlassUserId: world.owner.id,
    });
    expect(noFactor.body.error.code).toBe('break_glass_owner_required');
    const notOwner = await enforce(world.owner.client, { ssoRequired: true, breakGlassUserId: member.id });
    expect(notOwner.body.error.code).toBe('break_glass_owner_required');

    const started = await world.owner.client.json<{ factorId: string; secret: string }>(
      'POST',
      '/api/auth/mfa/totp',
      {
        name: 'phone',
      },
    );
    ownerSecret = started.body.secret;
    const confirmed = await world.owner.client.json(
      'POST',
      `/api/auth/mfa/totp/${started.body.factorId}/confirm`,
      {
        code: await codeNow(),
      },
    );
    expect(confirmed.status).toBe(200);
    // Another owner, signed in with a password and not the break-glass account, would shut themselves out.
    const lockout = await enforce(secondOwner.client, {
      ssoRequired: true,
      breakGlassUserId: world.owner.id,
    });
    expect([lockout.status, lockout.body.error.code]).toEqual([409, 'would_lock_you_out']);
  });

  it('once required, admits only sessions from its own provider, and the break-glass owner', async () => {
    const browser = ssoBrowser(world.server.url, provider);
    const signedIn = await browser.signIn(connectionId, { sub: 'alice', email: 'alice@acme.test' });
    alice = await browser.clientFor(signedIn.session!);
    expect((await reach(alice)).status).toBe(200);

    const on = await enforce(world.owner.client, { ssoRequired: true, breakGlassUserId: world.owner.id });
    expect([on.status, on.body.ssoRequired]).toEqual([200, true]);

    // A member with a password (a leaked one, say) reaches nothing here any more; nor does an owner
    // who is not the break-glass account.
    for (const client of [member.client, secondOwner.client]) {
      const refused = await reach(client);
      expect([refused.status, refused.body.error.code]).toEqual([403, 'sso_required']);
    }
    expect((await reach(alice)).status).toBe(200);
    expect((await reach(world.owner.client)).status).toBe(200);
    // Its last connection cannot go while SSO is required: nobody but the break-glass owner could sign in.
    const removed = await world.owner.client.json<ErrorBody>(
      'DELETE',
      `/api/orgs/acme/sso/connections/${connectionId}`,
    );
    expect([removed.status, removed.body.error.code]).toEqual([409, 'sso_connection_required']);
    const denials = await reader.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'access.denied')
      .execute();
    expect(
      denials.filter((row) => row.details.includes('requires signing in through its identity provider')),
    ).toHaveLength(2);
  });

  it('records every break-glass sign-in as critical', async () => {
    world.clock.advance(30_000); // the next authenticator code: each is accepted once
    const client = new SessionClient(world.server.url);
    expect((await client.login(OWNER.email, OWNER.password)).status).toBe(200);
    const verified = await client.json('POST', '/api/auth/mfa/verify', { code: await codeNow() });
    expect(verified.status).toBe(200);
    expect((await reach(client)).status).toBe(200);
    const events = await reader.db
      .selectFrom('audit_events')
      .select(['details', 'actor_id'])
      .where('action', '=', 'auth.break_glass_sign_in')
      .execute();
    expect(events).toHaveLength(1);
    expect(events[0]!.actor_id).toBe(world.owner.id);
    expect(JSON.parse(events[0]!.details).severity).toBe('critical');
  });

  it('lets password members back in when no longer required, and audits each change as critical', async () => {
    const off = await enforce(world.owner.client, { ssoRequired: false, breakGlassUserId: null });
    expect(off.status).toBe(200);
    expect((await reach(member.client)).status).toBe(200);
    const changes = await reader.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'sso.enforcement_changed')
      .orderBy('seq')
      .execute();
    expect(changes.map((row) => JSON.parse(row.details).ssoRequired)).toEqual([
      { from: false, to: true },
      { from: true, to: false },
    ]);
  });
});
