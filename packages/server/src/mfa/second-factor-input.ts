import type { AuthenticationResponseJSON } from '@simplewebauthn/server';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ValidationError } from '../errors.js';
import type { SecondFactorProof } from './mfa.service.js';
import type { RelyingParty } from './passkeys.js';

/**
 * How a second factor arrives in a request body: `code` (an authenticator's six digits or a recovery
 * code) or `passkey` (the browser's answer to this session's challenge), never both. Shared by the
 * second step of sign-in and by re-authentication.
 */

/**
 * A code from an authenticator (6 digits) or a recovery code (24 characters, 29 with its dashes; spaces
 * and dashes allowed between them, so the bound leaves room for how people type it).
 */
export const SecondFactorCode = z.string().trim().min(6).max(64);

const Base64Url = (max: number) =>
  z
    .string()
    .max(max)
    .regex(/^[A-Za-z0-9_-]*$/, 'is base64url');

/**
 * The fields of the WebAuthn JSON forms (what PublicKeyCredential.toJSON() and @simplewebauthn/browser
 * give), nothing else. The bounds keep a hostile body small: real credential ids are at most 1023
 * bytes, signatures far less.
 */
const ClientExtensionResults = z.record(z.string(), z.unknown());
const AuthenticatorAttachment = z.enum(['platform', 'cross-platform']).optional();

export const PasskeyAssertion = z.strictObject({
  id: Base64Url(1400),
  rawId: Base64Url(1400),
  type: z.literal('public-key'),
  response: z.strictObject({
    clientDataJSON: Base64Url(8192),
    authenticatorData: Base64Url(8192),
    signature: Base64Url(2048),
    userHandle: Base64Url(1024).optional(),
  }),
  clientExtensionResults: ClientExtensionResults,
  authenticatorAttachment: AuthenticatorAttachment,
});

export const PasskeyRegistration = z.strictObject({
  id: Base64Url(1400),
  rawId: Base64Url(1400),
  type: z.literal('public-key'),
  response: z.strictObject({
    clientDataJSON: Base64Url(8192),
    attestationObject: Base64Url(32_768),
    transports: z.array(z.string().max(32)).max(8).optional(),
    // Conveniences of the JSON form; the server reads the same from the attestation object.
    authenticatorData: Base64Url(32_768).optional(),
    publicKey: Base64Url(8192).optional(),
    publicKeyAlgorithm: z.number().int().optional(),
  }),
  clientExtensionResults: ClientExtensionResults,
  authenticatorAttachment: AuthenticatorAttachment,
});

export const SecondFactorFields = {
  code: SecondFactorCode.optional(),
  passkey: PasskeyAssertion.optional(),
};

/**
 * The proof in a body, or undefined when there is none (re-authentication without a factor). The
 * relying party is resolved only for a passkey, so a code works on any host.
 */
export function secondFactorProofOf(
  body: { code?: string | undefined; passkey?: z.infer<typeof PasskeyAssertion> | undefined },
  sessionId: string,
  relyingPartyOf: () => RelyingParty,
): SecondFactorProof | undefined {
  if (body.code !== undefined && body.passkey !== undefined)
    throw new ValidationError([{ path: 'body.passkey', message: 'give a code or a passkey, not both' }]);
  if (body.code !== undefined) return { code: body.code };
  if (body.passkey !== undefined)
    return {
      passkey: body.passkey as AuthenticationResponseJSON,
      sessionId,
      relyingParty: relyingPartyOf(),
    };
  return undefined;
}

export type RelyingPartyOf = (request: FastifyRequest) => RelyingParty;
