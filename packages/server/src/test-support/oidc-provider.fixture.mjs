// A real OpenID provider (oidc-provider) in its own process, for the SSO tests. It signs in whoever
// the test names next (POST /_test/next-account), and can be told to answer the token request the way
// a broken or hostile provider would (POST /_test/tamper): its ID token forged, unsigned, expired,
// for another audience or another nonce, or no answer at all.
//
// argv: <port> <redirect uri prefix> <keys file>; prints `listening <issuer>` once it accepts
// connections. Bulwark has one callback per connection: any redirect URI under the prefix is allowed.
import { createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const [port, redirectPrefix, keysFile] = process.argv.slice(2);
const { keys, forger } = JSON.parse(readFileSync(keysFile, 'utf8'));
const CLIENT = { id: 'bulwark', secret: 'bulwark-client-secret-for-tests' };

let nextAccount = { sub: 'alice', email: 'alice@idp.test', email_verified: true, name: 'Alice', groups: [] };
let tamper = 'none';
const accounts = new Map();

const server = http.createServer();
server.listen(Number(port), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT.id,
        client_secret: CLIENT.secret,
        redirect_uris: [`${redirectPrefix}registered/callback`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: keys.map((key) => key.private) },
    findAccount: (_ctx, id) => {
      const claims = accounts.get(id);
      return claims && { accountId: id, claims: () => claims };
    },
    claims: {
      acr: null,
      amr: null,
      auth_time: null,
      // How the person authenticated goes in every ID token, as Okta and Entra ID send it.
      openid: ['sub', 'amr'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'api'],
    acrValues: ['urn:acme:loa:1', 'urn:acme:loa:2'],
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      // Access tokens for an API (SSO-6): a resource named …/opaque gets opaque tokens (introspected),
      // any other a JWT signed with the provider's keys.
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resourceIndicator) => ({
          scope: 'api',
          audience: resourceIndicator,
          accessTokenTTL: 300,
          accessTokenFormat: resourceIndicator.endsWith('/opaque') ? 'opaque' : 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    pkce: { required: () => true },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    loadExistingGrant: async (ctx) => {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      // Everything asked is granted at once; an API client asking for an API (SSO-6) gets its scope.
      grant.addOIDCScope('openid email profile groups api');
      const resource = ctx.oidc.params?.resource;
      for (const indicator of Array.isArray(resource) ? resource : resource ? [resource] : [])
        grant.addResourceScope(indicator, 'api');
      await grant.save();
      return grant;
    },
    cookies: { keys: ['oidc-fixture-cookie-key'] },
  });
  provider.Client.prototype.redirectUriAllowed = (uri) => uri.startsWith(redirectPrefix);
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    try {
      if (req.url === '/_test/next-account' && req.method === 'POST') {
        nextAccount = JSON.parse(await body(req));
        return res.end('ok');
      }
      if (req.url === '/_test/tamper' && req.method === 'POST') {
        tamper = JSON.parse(await body(req)).mode;
        return res.end('ok');
      }
      if (req.url?.startsWith('/interaction/')) {
        accounts.set(nextAccount.sub, nextAccount);
        const { sub, amr, acr } = nextAccount;
        return await provider.interactionFinished(req, res, {
          login: { accountId: sub, ...(amr ? { amr } : {}), ...(acr ? { acr } : {}) },
        });
      }
      if (req.url === '/token' && tamper !== 'none') return tamperedToken(req, res, callback);
      return callback(req, res);
    } catch (error) {
      res.statusCode = 500;
      res.end(String(error));
    }
  });
  process.stdout.write(`listening ${issuer}\n`);

  /** Lets the provider answer, then changes its ID token as the chosen hostile provider would. */
  function tamperedToken(req, res, handle) {
    if (tamper === 'silent') return; // accepts the request and never answers
    const chunks = [];
    const end = res.end.bind(res);
    res.write = (chunk) => chunks.push(Buffer.from(chunk));
    res.end = (chunk) => {
      if (chunk) chunks.push(Buffer.from(chunk));
      const answer = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      if (answer.id_token) answer.id_token = rewritten(answer.id_token);
      const text = JSON.stringify(answer);
      res.setHeader('content-length', Buffer.byteLength(text));
      return end(text);
    };
    return handle(req, res);
  }

  function rewritten(idToken) {
    const [header, payload] = idToken
      .split('.')
      .slice(0, 2)
      .map((part) => JSON.parse(Buffer.from(part, 'base64url')));
    const now = Math.floor(Date.now() / 1000);
    const key = keys[0];
    switch (tamper) {
      case 'forge':
        // The provider's key id, signed with a key that is not the provider's.
        return signed(
          header,
          { ...payload, sub: 'someone-else' },
          createPrivateKey({ key: forger, format: 'jwk' }),
        );
      case 'alg-none':
        return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...payload, sub: 'someone-else' })}.`;
      case 'expired':
        return signed(
          header,
          { ...payload, iat: now - 7200, exp: now - 3600 },
          createPrivateKey({ key: key.private, format: 'jwk' }),
        );
      case 'wrong-audience':
        return signed(
          header,
          { ...payload, aud: 'another-client', azp: 'another-client' },
          createPrivateKey({ key: key.private, format: 'jwk' }),
        );
      case 'stale-auth-time':
        // A provider that did not ask for the credentials again, whatever max_age said.
        return signed(
          header,
          { ...payload, auth_time: 1_600_000_000 },
          createPrivateKey({ key: key.private, format: 'jwk' }),
        );
      case 'other-nonce':
        return signed(
          header,
          { ...payload, nonce: 'a-nonce-from-another-sign-in' },
          createPrivateKey({ key: key.private, format: 'jwk' }),
        );
      default:
        return idToken;
    }
  }
});

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

function signed(header, payload, privateKey) {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

function body(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.on('data', (chunk) => {
      text += chunk;
    });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}
