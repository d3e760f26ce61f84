import {
  type AuthenticationResponseJSON,
  generateAuthenticationOptions,
  generateRegistrationOptions,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import { AppError } from '../errors.js';
import type { CredentialSeals } from '../identity/credential-seals.js';
import type { MfaFactorRow, MfaStore } from './mfa.store.js';

/**
 * The WebAuthn ceremonies (MFA-2), through @simplewebauthn/server. A challenge is issued per session
 * and purpose, kept server-side (any instance can finish the ceremony) and taken exactly once, so a
 * captured response cannot be replayed. An assertion must come from one of the user's own passkeys,
 * for this relying party and origin, and carry a signature counter above the stored one unless the
 * authenticator keeps none (always 0): a counter that does not rise means a copy of the key is in use.
 */

/** Who the passkey is for: the host name it is bound to and the origin the browser must report. */
export interface RelyingParty {
  id: string;
  origin: string;
  name: string;
}

/** How long a browser has to finish a ceremony; the authenticator prompt itself times out sooner. */
const CHALLENGE_LIFETIME_MS = 5 * 60_000;
const PROMPT_TIMEOUT_MS = 2 * 60_000;

export type PasskeyFailure =
  | 'no_challenge'
  | 'unknown_passkey'
  | 'passkey_integrity'
  | 'invalid_assertion'
  | 'counter_not_increased';

export type PasskeyCheck = { ok: true } | { ok: false; reason: PasskeyFailure };

const transportsOf = (factor: MfaFactorRow) => (factor.transports ? factor.transports.split(',') : undefined);

const passkeysOf = (factors: MfaFactorRow[]) =>
  factors.filter((factor) => factor.type === 'webauthn' && factor.credential_id !== null);

/** The credentials a browser may offer, with the transports they named as hints. */
const descriptorsOf = (factors: MfaFactorRow[]) =>
  passkeysOf(factors).map((factor) => ({
    id: factor.credential_id!,
    ...(factor.transports ? { transports: transportsOf(factor)! } : {}),
  }));

export function createPasskeyCeremonies(
  store: MfaStore,
  seals: Pick<CredentialSeals, 'holds'>,
  clock: () => number,
) {
  async function takeChallenge(sessionId: string, purpose: 'register' | 'authenticate') {
    const row = await store.takeChallenge(sessionId, purpose);
    return row && row.expires_at > clock() ? row.challenge : undefined;
  }

  const keepChallenge = (sessionId: string, purpose: 'register' | 'authenticate', challenge: string) =>
    store.putChallenge({
      session_id: sessionId,
      purpose,
      challenge,
      expires_at: clock() + CHALLENGE_LIFETIME_MS,
    });

  return {
    /** Options for navigator.credentials.create(); the user's existing passkeys are excluded. */
    async registrationOptions(
      owner: { userId: string; email: string; displayName: string },
      sessionId: string,
      relyingParty: RelyingParty,
    ): Promise<PublicKeyCredentialCreationOptionsJSON> {
      const options = await generateRegistrationOptions({
        rpName: relyingParty.name,
        rpID: relyingParty.id,
        userName: owner.email,
        userDisplayName: owner.displayName,
        userID: new TextEncoder().encode(owner.userId),
        timeout: PROMPT_TIMEOUT_MS,
        attestationType: 'none',
        excludeCredentials: descriptorsOf(await store.factorsOf(owner.userId)),
        authenticatorSelection: { residentKey: 'preferred', userVerification: 'preferred' },
      });
      await keepChallenge(sessionId, 'register', options.challenge);
      return options;
    },

    /**
     * Checks a registration response against the challenge of this session. Returns the credential to
     * store, or throws 422 naming what is wrong (the browser's answer, not the user's password).
     */
    async verifyRegistration(
      sessionId: string,
      response: RegistrationResponseJSON,
      relyingParty: RelyingParty,
    ) {
      const challenge = await takeChallenge(sessionId, 'register');
      if (!challenge) throw ceremonyExpired();
      const verification = await verifyRegistrationResponse({
        response,
        expectedChallenge: challenge,
        expectedOrigin: relyingParty.origin,
        expectedRPID: relyingParty.id,
        // A passkey here is a second factor after the password: presence is required, a PIN is not.
        requireUserVerification: false,
      }).catch(() => ({ verified: false as const }));
      if (!verification.verified)
        throw new AppError(422, 'passkey_not_verified', 'The passkey could not be verified; try again.');
      const { credential } = verification.registrationInfo;
      return {
        credentialId: credential.id,
        publicKey: Buffer.from(credential.publicKey).toString('base64url'),
        signCount: credential.counter,
        transports: credential.transports?.join(',') ?? null,
      };
    },

    /** Options for navigator.credentials.get(), offering the user's passkeys only. */
    async authenticationOptions(userId: string, sessionId: string, relyingParty: RelyingParty) {
      const allowCredentials = descriptorsOf(await store.factorsOf(userId));
      if (allowCredentials.length === 0)
        throw new AppError(409, 'no_passkeys', 'You have no passkey; use a code instead.');
      const options: PublicKeyCredentialRequestOptionsJSON = await generateAuthenticationOptions({
        rpID: relyingParty.id,
        allowCredentials,
        timeout: PROMPT_TIMEOUT_MS,
        userVerification: 'preferred',
      });
      await keepChallenge(sessionId, 'authenticate', options.challenge);
      return options;
    },

    /** Checks an assertion; once it gets here, the challenge is spent whatever the outcome. */
    async verifyAssertion(
      userId: string,
      sessionId: string,
      response: AuthenticationResponseJSON,
      relyingParty: RelyingParty,
    ): Promise<PasskeyCheck> {
      const challenge = await takeChallenge(sessionId, 'authenticate');
      if (!challenge) return { ok: false, reason: 'no_challenge' };
      // Another user's credential id is as unknown as a made-up one.
      const factor = passkeysOf(await store.factorsOf(userId)).find((f) => f.credential_id === response.id);
      if (!factor) return { ok: false, reason: 'unknown_passkey' };
      // A public key put in the database by someone who can write it is not the user's passkey.
      if (!(await seals.holds('mfa-factor', factor, { id: factor.id, userId })))
        return { ok: false, reason: 'passkey_integrity' };
      const stored = factor.sign_count ?? 0;
      const verification = await verifyAuthenticationResponse({
        response,
        expectedChallenge: challenge,
        expectedOrigin: relyingParty.origin,
        expectedRPID: relyingParty.id,
        // The counter rule is applied below, where a failure can be told apart and audited.
        credential: {
          id: factor.credential_id!,
          publicKey: Buffer.from(factor.public_key!, 'base64url'),
          counter: 0,
          ...(factor.transports ? { transports: transportsOf(factor)! } : {}),
        },
        requireUserVerification: false,
      }).catch(() => undefined);
      if (!verification?.verified) return { ok: false, reason: 'invalid_assertion' };
      const { newCounter } = verification.authenticationInfo;
      if ((newCounter > 0 || stored > 0) && newCounter <= stored)
        return { ok: false, reason: 'counter_not_increased' };
      // Guarded on the counter read above: of two assertions racing, one wins.
      if (!(await store.usePasskey(factor.id, stored, newCounter, clock())))
        return { ok: false, reason: 'counter_not_increased' };
      return { ok: true };
    },
  };
}

export type PasskeyCeremonies = ReturnType<typeof createPasskeyCeremonies>;

const ceremonyExpired = () =>
  new AppError(
    409,
    'passkey_ceremony_expired',
    'That passkey request expired or was already used; start again.',
  );
