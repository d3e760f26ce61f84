import { tokenHash } from '@bulwark/protocol';
import { createRemoteJWKSet, customFetch, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import type { CredentialSeals } from '../identity/credential-seals.js';
import type { UsersStore } from '../identity/users.store.js';
import type { MfaService } from '../mfa/mfa.service.js';
import type { GuardedFetch } from '../net/outbound.js';
import type { OidcRelyingParty } from './oidc.js';
import type { SsoStore } from './sso.store.js';
import type { OpenedOidcConnection, SsoConnectionsService } from './sso-connections.service.js';

/** How long an introspection's answer is reused: a token revoked at the provider stops within it. */
export const INTROSPECTION_CACHE_MS = 30_000;
const CACHE_ENTRIES = 10_000;
const CLOCK_SKEW_SECONDS = 60;
/** Asymmetric algorithms only: a shared-secret (HS*) token could be made by anyone holding the secret. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];

export interface ExternalCaller {
  userId: string;
  email: string;
  connectionId: string;
  /** The member has a second factor here, or the token says one was proved at the provider. */
  mfaEnrolled: boolean;
}

interface Proof {
  issuer: string;
  subject: string;
  amr: string[];
}

const looksLikeJwt = (token: string) => /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token);

/**
 * SSO-6: access tokens from an organization's identity provider, accepted by the API as the person
 * they were issued for. A connection names the audience its tokens must carry (`apiAudience`); a JWT
 * is checked against the provider's published keys (fetched again for a key it does not know, so a
 * rotation is followed) for issuer, audience, expiry and signature; an opaque token is asked of the
 * provider's introspection endpoint (RFC 7662) and the answer kept for `INTROSPECTION_CACHE_MS`. The
 * person is whoever the (issuer, subject) is linked to, never an email. A token opens only the
 * organization of its connection.
 */
export function createExternalTokensService(deps: {
  connections: Pick<SsoConnectionsService, 'offeredBy' | 'forSignIn'>;
  relyingParty: Pick<OidcRelyingParty, 'serverMetadata' | 'introspect'>;
  store: Pick<SsoStore, 'identity'>;
  users: Pick<UsersStore, 'findById'>;
  seals: CredentialSeals;
  mfa: Pick<MfaService, 'isEnrolled'>;
  clock: () => number;
  timeoutSeconds: number;
  /** The SSRF-guarded fetch (NET-3): a provider's jwks_uri is as untrusted as its issuer URL. */
  fetch: GuardedFetch;
}) {
  const { connections, relyingParty, store, users, seals, clock } = deps;
  const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  const introspected = new Map<string, { proof: Proof | undefined; until: number }>();

  function keySetOf(uri: string) {
    let keys = keySets.get(uri);
    if (!keys) {
      keys = createRemoteJWKSet(new URL(uri), {
        timeoutDuration: deps.timeoutSeconds * 1000,
        cooldownDuration: 30_000,
        [customFetch]: deps.fetch,
      });
      keySets.set(uri, keys);
    }
    return keys;
  }

  async function verifyJwt(connection: OpenedOidcConnection, token: string): Promise<Proof | undefined> {
    const metadata = await relyingParty.serverMetadata(connection);
    if (!metadata.jwks_uri) return undefined;
    try {
      const typ = decodeProtectedHeader(token).typ?.toLowerCase();
      // An ID token is for the client that signed someone in, not a key to the API.
      if (typ !== undefined && !['at+jwt', 'application/at+jwt', 'jwt'].includes(typ)) return undefined;
      const { payload } = await jwtVerify(token, keySetOf(metadata.jwks_uri), {
        issuer: connection.config.issuer,
        audience: connection.config.apiAudience!,
        algorithms: ALGORITHMS,
        currentDate: new Date(clock()),
        clockTolerance: CLOCK_SKEW_SECONDS,
        requiredClaims: ['exp', 'sub'],
      });
      if (payload.nonce !== undefined) return undefined;
      const amr = Array.isArray(payload.amr)
        ? payload.amr.filter((m): m is string => typeof m === 'string')
        : [];
      return { issuer: connection.config.issuer, subject: payload.sub!, amr };
    } catch {
      return undefined;
    }
  }

  async function introspect(connection: OpenedOidcConnection, token: string): Promise<Proof | undefined> {
    const key = `${connection.id} ${tokenHash(token)}`;
    const now = clock();
    const cached = introspected.get(key);
    if (cached && cached.until > now) return cached.proof;
    const answer = await relyingParty.introspect(connection, token).catch(() => undefined);
    const audiences = Array.isArray(answer?.aud) ? answer.aud : answer?.aud ? [answer.aud] : [];
    const valid =
      answer?.active === true &&
      typeof answer.sub === 'string' &&
      audiences.includes(connection.config.apiAudience!) &&
      (answer.iss === undefined || answer.iss === connection.config.issuer) &&
      (typeof answer.exp !== 'number' || answer.exp * 1000 > now - CLOCK_SKEW_SECONDS * 1000);
    const proof = valid ? { issuer: connection.config.issuer, subject: answer.sub!, amr: [] } : undefined;
    if (introspected.size >= CACHE_ENTRIES) introspected.delete(introspected.keys().next().value!);
    const expiresAt = typeof answer?.exp === 'number' ? answer.exp * 1000 : Number.POSITIVE_INFINITY;
    introspected.set(key, { proof, until: Math.min(now + INTROSPECTION_CACHE_MS, expiresAt) });
    return proof;
  }

  return {
    /** The member an access token stands for in the organization `orgSlug`, or undefined. */
    async authenticate(orgSlug: string, token: string): Promise<ExternalCaller | undefined> {
      const offered = (await connections.offeredBy(orgSlug)).filter((c) => c.kind === 'oidc');
      const opened = await Promise.all(offered.map((c) => connections.forSignIn(c.id)));
      const candidates = opened.filter(
        (c): c is OpenedOidcConnection => c?.kind === 'oidc' && Boolean(c.config.apiAudience),
      );
      if (candidates.length === 0) return undefined;
      let proof: Proof | undefined;
      let connection: OpenedOidcConnection | undefined;
      if (looksLikeJwt(token)) {
        let issuer: unknown;
        try {
          issuer = decodeJwt(token).iss;
        } catch {
          issuer = undefined;
        }
        connection = candidates.find((c) => !c.config.introspectTokens && c.config.issuer === issuer);
        if (connection) proof = await verifyJwt(connection, token);
      }
      for (const candidate of candidates.filter((c) => c.config.introspectTokens)) {
        if (proof) break;
        proof = await introspect(candidate, token);
        connection = candidate;
      }
      if (!proof || !connection) return undefined;
      const identity = await store.identity(proof.issuer, proof.subject);
      if (!identity) return undefined;
      if (!(await seals.holds('sso-identity', identity, { id: identity.id, userId: identity.user_id })))
        return undefined;
      const user = await users.findById(identity.user_id);
      if (user?.status !== 'active') return undefined;
      return {
        userId: user.id,
        email: user.email,
        connectionId: connection.id,
        mfaEnrolled: proof.amr.includes('mfa') || (await deps.mfa.isEnrolled(user.id)),
      };
    },
  };
}

export type ExternalTokensService = ReturnType<typeof createExternalTokensService>;
