import * as oidc from 'openid-client';
import { AppError } from '../errors.js';
import {
  type GuardedFetch,
  type GuardedRequestInit,
  OutboundBlockedError,
  OutboundError,
} from '../net/outbound.js';
import type { OidcConfig } from './sso-config.js';

/**
 * The OIDC relying party (SSO-1), on openid-client: authorization code with PKCE (S256), `state` and
 * `nonce`, and an ID token checked for issuer, audience, `azp`, expiry and nonce, with its signature
 * verified against the provider's JWKS (fetched again when a token names a key it does not know, so
 * a key rotated at the provider is picked up while Bulwark runs). Discovery is cached per connection
 * for a while; a provider that does not answer in time is an error in words, never a hang.
 */

/** The provider answered something Bulwark refuses, or did not answer: a sign-in that ends here. */
export class SsoError extends AppError {
  constructor(code: string, message: string) {
    super(400, code, message);
    this.name = 'SsoError';
  }
}

const DISCOVERY_TTL_MS = 60 * 60_000;

/** Host names of this very machine: a provider there may speak plain HTTP (a development IdP). */
export const isLoopbackHost = (hostname: string) => ['localhost', '127.0.0.1', '[::1]'].includes(hostname);

/** What went wrong, in words an identity-provider administrator can act on. */
function explain(error: unknown, timeoutSeconds: number): SsoError {
  if (error instanceof SsoError) return error;
  const outbound = outboundErrorIn(error);
  if (outbound instanceof OutboundBlockedError)
    return new SsoError(
      'sso_provider_blocked',
      `The identity provider's address is refused by the outbound policy (${outbound.reason}); an on-prem provider needs BULWARK_OUTBOUND_ALLOW_PRIVATE.`,
    );
  if (outbound?.reason === 'timeout')
    return new SsoError(
      'sso_provider_timeout',
      `The identity provider did not answer within ${timeoutSeconds} s.`,
    );
  if (outbound !== undefined)
    return new SsoError(
      'sso_provider_unreachable',
      `The identity provider could not be reached (${outbound.reason}).`,
    );
  const { code, message, cause } = error as { code?: unknown; message?: unknown; cause?: unknown };
  if (code === 'OAUTH_TIMEOUT' || code === 'OAUTH_ABORT')
    return new SsoError(
      'sso_provider_timeout',
      `The identity provider did not answer within ${timeoutSeconds} s.`,
    );
  const network = (cause as { cause?: { code?: unknown } } | undefined)?.cause?.code;
  if (cause instanceof TypeError || typeof network === 'string')
    return new SsoError(
      'sso_provider_unreachable',
      `The identity provider could not be reached${typeof network === 'string' ? ` (${network})` : ''}.`,
    );
  // openid-client names the claim or attribute that failed its check (iss, aud, azp, exp, nonce...).
  const claim = (cause as { claim?: unknown } | undefined)?.claim;
  return new SsoError(
    'sso_provider_refused',
    `The identity provider's answer was refused: ${String(message)}${typeof claim === 'string' ? ` (${claim})` : ''}.`,
  );
}

/** openid-client passes the guard's errors through, sometimes wrapped as a `cause`. */
function outboundErrorIn(error: unknown): OutboundError | undefined {
  let current = error;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    if (current instanceof OutboundError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

export interface OidcStart {
  url: string;
  state: string;
  nonce: string;
  verifier: string;
}

export function createOidcRelyingParty(options: {
  timeoutSeconds: number;
  clock: () => number;
  /** The SSRF-guarded fetch (NET-3): discovery, JWKS, token, userinfo and introspection go through it. */
  fetch: GuardedFetch;
}) {
  const { timeoutSeconds, clock } = options;
  const discovered = new Map<string, { config: Promise<oidc.Configuration>; loadedAt: number }>();

  /** Reads the provider's metadata now. */
  function discover(config: OidcConfig): Promise<oidc.Configuration> {
    const issuer = new URL(config.issuer);
    return oidc
      .discovery(issuer, config.clientId, config.clientSecret, oidc.ClientSecretBasic(config.clientSecret), {
        timeout: timeoutSeconds,
        // Kept by the Configuration, so every later request to the provider uses it too.
        // openid-client's body type includes any Uint8Array; undici takes it as RequestInit's body.
        [oidc.customFetch]: (url, init) => options.fetch(url, init as GuardedRequestInit),
        execute: [
          ...(isLoopbackHost(issuer.hostname) ? [oidc.allowInsecureRequests] : []),
          // The ID token's signature is checked against the provider's keys, not only its claims.
          oidc.enableNonRepudiationChecks,
        ],
      })
      .catch((error: unknown) => {
        throw explain(error, timeoutSeconds);
      });
  }

  /** The provider's metadata for a connection (as last changed at `version`), from cache or discovery. */
  function configurationOf(connectionId: string, version: number, config: OidcConfig) {
    const key = `${connectionId}@${version}`;
    const cached = discovered.get(key);
    if (cached && clock() - cached.loadedAt < DISCOVERY_TTL_MS) return cached.config;
    for (const old of discovered.keys()) if (old.startsWith(`${connectionId}@`)) discovered.delete(old);
    const loading = discover(config);
    loading.catch(() => discovered.delete(key));
    discovered.set(key, { config: loading, loadedAt: clock() });
    return loading;
  }

  return {
    discover,

    /** The provider's metadata (cached like a sign-in's). */
    async serverMetadata(connection: { id: string; version: number; config: OidcConfig }) {
      return (await configurationOf(connection.id, connection.version, connection.config)).serverMetadata();
    },

    /** RFC 7662: what the provider says of a token now, authenticated as the connection's client. */
    async introspect(connection: { id: string; version: number; config: OidcConfig }, token: string) {
      const configuration = await configurationOf(connection.id, connection.version, connection.config);
      try {
        return await oidc.tokenIntrospection(configuration, token);
      } catch (error) {
        throw explain(error, timeoutSeconds);
      }
    },

    /** Where to send the browser, and what its callback must bring back. */
    async start(
      connection: { id: string; version: number; config: OidcConfig },
      redirectUri: string,
      stepUp = false,
    ): Promise<OidcStart> {
      const configuration = await configurationOf(connection.id, connection.version, connection.config);
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const nonce = oidc.randomNonce();
      const url = oidc.buildAuthorizationUrl(configuration, {
        redirect_uri: redirectUri,
        scope: ['openid', ...connection.config.scopes.filter((scope) => scope !== 'openid')].join(' '),
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        nonce,
        // MFA-5: a step-up is a fresh sign-in at the provider, not its session cookie.
        ...(stepUp ? { max_age: '0', prompt: 'login' } : {}),
        ...(connection.config.acrValues.length > 0
          ? { acr_values: connection.config.acrValues.join(' ') }
          : {}),
      });
      return { url: url.href, state, nonce, verifier };
    },

    /** Exchanges the callback's code and checks the ID token; the claims it vouches for. */
    async finish(
      connection: { id: string; version: number; config: OidcConfig },
      callbackUrl: URL,
      expected: { state: string; nonce: string; verifier: string; redirectUri: string },
    ): Promise<{ issuer: string; subject: string; claims: Record<string, unknown> }> {
      const configuration = await configurationOf(connection.id, connection.version, connection.config);
      try {
        const tokens = await oidc.authorizationCodeGrant(
          configuration,
          callbackUrl,
          {
            pkceCodeVerifier: expected.verifier,
            expectedState: expected.state,
            expectedNonce: expected.nonce,
            idTokenExpected: true,
          },
          { redirect_uri: expected.redirectUri },
        );
        const claims = tokens.claims();
        if (!claims) throw new SsoError('sso_no_id_token', 'The identity provider sent no ID token.');
        return { issuer: claims.iss, subject: claims.sub, claims: claims as Record<string, unknown> };
      } catch (error) {
        throw explain(error, timeoutSeconds);
      }
    },
  };
}

export type OidcRelyingParty = ReturnType<typeof createOidcRelyingParty>;
