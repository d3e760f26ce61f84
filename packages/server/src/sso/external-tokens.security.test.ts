import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OidcProvider, startOidcProvider } from '../test-support/oidc-provider.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { connectProvider, ssoBrowser } from '../test-support/sso-browser.js';
import { OIDC_CALLBACK_PREFIX } from './sso.routes.js';

/**
 * The organization's identity provider's access tokens on the API (SSO-6), issued by a real
 * oidc-provider through a real authorization code flow: a JWT checked against the provider's keys,
 * and an opaque token asked of its introspection endpoint. The attacks: a token for another API
 * (audience), an expired one, one revoked at the provider, an unsigned one, one for a person the
 * organization never linked, one taken to another organization, and one used on a person's own
 * account or on a privileged route.
 */

const API = 'https://bulwark.example/api';
const OPAQUE_API = 'https://bulwark.example/opaque';
const ALICE = { sub: 'alice-ext', email: 'alice-ext@example.test', email_verified: true, name: 'Alice' };

describe.each(BACKENDS)('external access tokens on %s', (backend: Backend) => {
  let world: OrgWorld;
  let provider: OidcProvider;

  const call = (token: string, path = '/api/orgs/acme/agents', method = 'GET') =>
    fetch(`${world.server.url}${path}`, { method, headers: { authorization: `Bearer ${token}` } }).then(
      async (response) => ({
        status: response.status,
        code: ((await response.json()) as { error?: { code: string } }).error?.code,
      }),
    );

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1' }, backend);
    provider = await startOidcProvider(`${world.server.url}${OIDC_CALLBACK_PREFIX}`);
    const jwtConnection = await connectProvider(world.owner.client, 'acme', provider, 'Acme IdP', {
      apiAudience: API,
    });
    expect(jwtConnection.status).toBe(201);
    const opaque = await connectProvider(world.owner.client, 'acme', provider, 'Acme IdP (opaque tokens)', {
      apiAudience: OPAQUE_API,
      introspectTokens: true,
    });
    expect(opaque.status).toBe(201);
    // Alice signs in once through SSO: her provider account is linked, and she is a member.
    const landed = await ssoBrowser(world.server.url, provider).signIn(jwtConnection.body.id, ALICE);
    expect(landed.session).toBeDefined();
    await world.createOrg('Beta');
  }, 60_000);

  afterAll(async () => {
    await provider?.stop();
    await world?.close();
  });

  it('accepts a JWT access token for this API as the linked member, with her role', async () => {
    const token = await provider.accessToken(ALICE, API);
    expect(await call(token)).toEqual({ status: 200, code: undefined });
    // She is a viewer: what her role does not allow, her token does not either.
    expect((await call(token, '/api/orgs/acme/members/invitations', 'GET')).status).toBeGreaterThanOrEqual(
      403,
    );
  });

  it('refuses a token for another API, for nobody linked, taken elsewhere, or forged', async () => {
    expect((await call(await provider.accessToken(ALICE, 'https://other.example/api'))).status).toBe(401);
    // The provider vouches for bob, whom the organization never linked.
    const bob = await provider.accessToken({ sub: 'bob-ext', email: 'bob@example.test' }, API);
    expect((await call(bob)).status).toBe(401);
    // Alice's token at an organization that accepts no tokens from this provider.
    const token = await provider.accessToken(ALICE, API);
    expect((await call(token, '/api/orgs/beta/agents')).status).toBe(401);
    // The same claims without a signature.
    const [, payload] = token.split('.');
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${payload}.`;
    expect((await call(unsigned)).status).toBe(401);
    // A header that is no JSON, under claims naming the provider: refused, not a 500.
    const junkHeader = `${Buffer.from('notjson').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: provider.issuer })).toString('base64url')}.x`;
    expect((await call(junkHeader)).status).toBe(401);
    // A changed claim breaks the signature.
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>;
    const tampered = token.replace(
      payload!,
      Buffer.from(JSON.stringify({ ...claims, sub: 'someone' })).toString('base64url'),
    );
    expect((await call(tampered)).status).toBe(401);
  });

  it('gives a token nothing of the person’s own account and no privileged route', async () => {
    const token = await provider.accessToken(ALICE, API);
    expect(await call(token, '/api/auth/sessions')).toEqual({
      status: 403,
      code: 'external_token_not_allowed',
    });
  });

  it('refuses a connection whose API audience is its client ID (ID tokens would pass)', async () => {
    const refused = await connectProvider(world.owner.client, 'acme', provider, 'Mistaken', {
      apiAudience: 'bulwark',
    });
    expect([refused.status, (refused.body as unknown as { error: { code: string } }).error.code]).toEqual([
      422,
      'api_audience_is_client',
    ]);
  });

  it('asks the provider about an opaque token, and stops taking it soon after it is revoked', async () => {
    const token = await provider.accessToken(ALICE, OPAQUE_API);
    expect(token.split('.')).toHaveLength(1);
    expect((await call(token)).status).toBe(200);
    await provider.revoke(token);
    // Within the cache, the answer given stands; past it, the provider's new answer does.
    world.clock.advance(31_000);
    expect((await call(token)).status).toBe(401);
  });

  it('refuses a JWT once it has expired', async () => {
    const token = await provider.accessToken(ALICE, API);
    const { exp } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number };
    expect((await call(token)).status).toBe(200);
    world.clock.advance(exp * 1000 - world.clock.now() + 120_000);
    expect((await call(token)).status).toBe(401);
  });
});
