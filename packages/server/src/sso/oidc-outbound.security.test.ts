import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGuardedFetch } from '../net/outbound.js';
import { createExternalTokensService } from './external-tokens.service.js';
import { createOidcRelyingParty, SsoError } from './oidc.js';
import type { OidcConfig } from './sso-config.js';
import type { OpenedOidcConnection } from './sso-connections.service.js';

/**
 * SSRF through an identity provider (NET-3, SSO-1, SSO-6). Attack: an org admin allowed to point a
 * connection at their own IdP (here an on-prem one on 127.0.0.1, explicitly allowed) serves a
 * discovery document whose `jwks_uri` and `introspection_endpoint` name an internal service the
 * server must not reach (here a real HTTP server on 127.0.0.2 that counts its requests). The
 * follow-up requests openid-client and jose make from that document must go through the same guard
 * as discovery: refused before connecting, with `sso_provider_blocked` where a person would see it.
 */

describe('OIDC requests after discovery go through the SSRF guard', () => {
  let idp: Server;
  let internal: Server;
  let issuer: string;
  const internalSeen: string[] = [];

  beforeAll(async () => {
    idp = createServer((req, res) => {
      if (req.url !== '/.well-known/openid-configuration') {
        res.writeHead(404).end();
        return;
      }
      const internalBase = `http://127.0.0.2:${(idp.address() as AddressInfo).port}`;
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          issuer,
          authorization_endpoint: `${issuer}/auth`,
          token_endpoint: `${internalBase}/token`,
          jwks_uri: `${internalBase}/jwks`,
          introspection_endpoint: `${internalBase}/introspect`,
          response_types_supported: ['code'],
          subject_types_supported: ['public'],
          id_token_signing_alg_values_supported: ['RS256'],
        }),
      );
    });
    idp.listen(0, '127.0.0.1');
    await once(idp, 'listening');
    const port = (idp.address() as AddressInfo).port;
    issuer = `http://127.0.0.1:${port}`;
    internal = createServer((req, res) => {
      internalSeen.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[],"active":true}');
    });
    internal.listen(port, '127.0.0.2');
    await once(internal, 'listening');
  });

  afterAll(async () => {
    for (const server of [idp, internal]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  beforeEach(() => {
    internalSeen.length = 0;
  });

  const connection = (config: Partial<OidcConfig>): OpenedOidcConnection => ({
    kind: 'oidc',
    id: 'sso_test',
    orgId: 'org_test',
    name: 'On-prem IdP',
    enabled: true,
    version: 1,
    config: {
      issuer,
      clientId: 'bulwark',
      clientSecret: 'client-secret-for-the-test',
      scopes: ['email'],
      groupsClaim: 'groups',
      acrValues: [],
      requiredAmr: [],
      defaultRole: 'viewer',
      jitProvisioning: false,
      allowedEmailDomains: [],
      groupRoles: [],
      apiAudience: 'https://bulwark.test/api',
      ...config,
    },
  });

  const setUp = () => {
    const fetch = createGuardedFetch({ allowlist: [], allowPrivate: ['127.0.0.1/32'], dnsServers: [] });
    const relyingParty = createOidcRelyingParty({ timeoutSeconds: 5, clock: Date.now, fetch });
    const tokens = (opened: OpenedOidcConnection) =>
      createExternalTokensService({
        connections: { offeredBy: async () => [opened] as never, forSignIn: async () => opened },
        relyingParty,
        // Never reached: no proof comes back from a blocked key set or introspection.
        store: {} as never,
        users: {} as never,
        seals: {} as never,
        mfa: {} as never,
        clock: Date.now,
        timeoutSeconds: 5,
        fetch,
      });
    return { relyingParty, tokens };
  };

  it('discovery at the allowed IdP works; its introspection endpoint on a blocked address is refused', async () => {
    const { relyingParty } = setUp();
    const opened = connection({ introspectTokens: true });
    expect((await relyingParty.serverMetadata(opened)).issuer).toBe(issuer);
    const error = await relyingParty.introspect(opened, 'opaque-token').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SsoError);
    expect((error as SsoError).code).toBe('sso_provider_blocked');
    expect(internalSeen).toEqual([]);
  });

  it('an API token is not checked against keys fetched from a blocked jwks_uri', async () => {
    const { tokens } = setUp();
    const header = Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'k1', typ: 'at+jwt' })).toString(
      'base64url',
    );
    const payload = Buffer.from(
      JSON.stringify({ iss: issuer, sub: 'someone', aud: 'https://bulwark.test/api', exp: 4_102_444_800 }),
    ).toString('base64url');
    const caller = await tokens(connection({})).authenticate('acme', `${header}.${payload}.c2ln`);
    expect(caller).toBeUndefined();
    expect(internalSeen).toEqual([]);
  });
});
