import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OidcProvider, startOidcProvider } from '../test-support/oidc-provider.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { connectProvider, ssoBrowser, ssoRefusal } from '../test-support/sso-browser.js';
import { OIDC_CALLBACK_PREFIX } from './sso.routes.js';

/**
 * How strongly the provider authenticated someone (MFA-4, MFA-5). A connection may require methods
 * in the ID token's `amr` (RFC 8176) or an `acr`; a sign-in that proves less is refused. A sign-in
 * whose signed ID token says a second factor was proved at the provider (`amr` "mfa") satisfies an
 * organization's "MFA required" policy without a factor kept here; one that does not is sent to
 * enrol one, as a password sign-in would be.
 */

type ErrorBody = { error: { code: string } };

describe.each(BACKENDS)('the strength of an SSO sign-in on %s', (backend: Backend) => {
  let world: OrgWorld;
  let provider: OidcProvider;
  let plain: string;
  let strict: string;

  beforeAll(async () => {
    // The default of a real installation: every member needs a second factor.
    world = await startOrgWorld(
      { BULWARK_BOOTSTRAP_MFA_REQUIRED: 'true', BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1' },
      backend,
    );
    provider = await startOidcProvider(`${world.server.url}${OIDC_CALLBACK_PREFIX}`);
    const connect = (name: string, extra: Record<string, unknown>) =>
      connectProvider(world.owner.client, 'acme', provider, name, extra);
    const refused = await connect('Plain', {});
    expect(refused.status).toBe(403); // the owner has no factor yet: the policy holds for them too
    const started = await world.owner.client.json<{ factorId: string; secret: string }>(
      'POST',
      '/api/auth/mfa/totp',
      {
        name: 'phone',
      },
    );
    const { generate } = await import('otplib');
    const { NodeCryptoPlugin } = await import('@otplib/plugin-crypto-node');
    const code = await generate({
      secret: started.body.secret,
      crypto: new NodeCryptoPlugin(),
      epoch: Math.floor(world.clock.now() / 1000),
    });
    expect(
      (await world.owner.client.json('POST', `/api/auth/mfa/totp/${started.body.factorId}/confirm`, { code }))
        .status,
    ).toBe(200);
    plain = (await connect('Plain', {})).body.id;
    strict = (await connect('Strict', { requiredAmr: ['mfa'], acrValues: ['urn:acme:loa:2'] })).body.id;
  }, 60_000);

  afterAll(async () => {
    await provider?.stop();
    await world?.close();
  });

  const reach = async (session: string) =>
    (await ssoBrowser(world.server.url, provider).clientFor(session)).json<ErrorBody>(
      'GET',
      '/api/orgs/acme/agents',
    );

  it('refuses a sign-in weaker than the connection requires', async () => {
    const browser = ssoBrowser(world.server.url, provider);
    const passwordOnly = await browser.signIn(strict, {
      sub: 'ivy',
      email: 'ivy@acme.test',
      amr: ['pwd'],
      acr: 'urn:acme:loa:2',
    });
    expect(ssoRefusal(passwordOnly.location)).toBe('sso_strength_insufficient');
    const lowerLevel = await browser.signIn(strict, {
      sub: 'ivy',
      email: 'ivy@acme.test',
      amr: ['pwd', 'mfa'],
      acr: 'urn:acme:loa:1',
    });
    expect(ssoRefusal(lowerLevel.location)).toBe('sso_strength_insufficient');
    expect(passwordOnly.session ?? lowerLevel.session).toBeUndefined();
  });

  it('asks someone with a factor here for it after the provider, unless the provider proved a second factor', async () => {
    const browser = ssoBrowser(world.server.url, provider);
    const first = await browser.signIn(plain, { sub: 'liam', email: 'liam@acme.test', amr: ['pwd', 'mfa'] });
    const client = await browser.clientFor(first.session!);
    const started = await client.json<{ factorId: string; secret: string }>('POST', '/api/auth/mfa/totp', {
      name: 'phone',
    });
    const { generate } = await import('otplib');
    const { NodeCryptoPlugin } = await import('@otplib/plugin-crypto-node');
    const codeNow = () =>
      generate({
        secret: started.body.secret,
        crypto: new NodeCryptoPlugin(),
        epoch: Math.floor(world.clock.now() / 1000),
      });
    expect(
      (
        await client.json('POST', `/api/auth/mfa/totp/${started.body.factorId}/confirm`, {
          code: await codeNow(),
        })
      ).status,
    ).toBe(200);
    world.clock.advance(30_000); // the next code: each is accepted once

    // A password at the provider is one factor: the factor kept here is asked for, as after a password here.
    const again = await browser.signIn(plain, { sub: 'liam', email: 'liam@acme.test', amr: ['pwd'] });
    const pending = await browser.clientFor(again.session!);
    const view = await pending.json<{ secondFactorRequired: boolean }>('GET', '/api/auth/session');
    expect(view.body.secondFactorRequired).toBe(true);
    expect((await pending.json<ErrorBody>('GET', '/api/orgs/acme/agents')).body.error.code).toBe(
      'second_factor_required',
    );
    expect((await pending.json('POST', '/api/auth/mfa/verify', { code: await codeNow() })).status).toBe(200);
    expect((await pending.json('GET', '/api/orgs/acme/agents')).status).toBe(200);

    // The provider proved a second factor: nothing more is asked.
    const proved = await browser.signIn(plain, { sub: 'liam', email: 'liam@acme.test', amr: ['pwd', 'mfa'] });
    const provedView = await (await browser.clientFor(proved.session!)).json<{
      secondFactorRequired: boolean;
    }>('GET', '/api/auth/session');
    expect(provedView.body.secondFactorRequired).toBe(false);
  });

  it("counts a second factor proved at the provider for the organization's MFA policy, and nothing less", async () => {
    const browser = ssoBrowser(world.server.url, provider);
    const strong = await browser.signIn(strict, {
      sub: 'jack',
      email: 'jack@acme.test',
      amr: ['pwd', 'mfa'],
      acr: 'urn:acme:loa:2',
    });
    expect(strong.location).toBe('/agents');
    expect((await reach(strong.session!)).status).toBe(200);

    // Through a connection that asks nothing, a password at the provider is a password: enrol a factor here.
    const weak = await browser.signIn(plain, { sub: 'kate', email: 'kate@acme.test', amr: ['pwd'] });
    expect(weak.location).toBe('/agents');
    const refused = await reach(weak.session!);
    expect([refused.status, refused.body.error.code]).toEqual([403, 'mfa_enrolment_required']);
    // The same connection with a second factor proved at the provider: that counts.
    const proved = await browser.signIn(plain, {
      sub: 'kate',
      email: 'kate@acme.test',
      amr: ['pwd', 'otp', 'mfa'],
    });
    expect((await reach(proved.session!)).status).toBe(200);
  });
});
