import type { RegistrationResponseJSON } from '@simplewebauthn/server';
import { z } from 'zod';
import { ValidationError } from '../errors.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { DisplayText, idOf, iso, Timestamp } from '../http/schemas.js';
import { SessionView } from '../identity/auth.schemas.js';
import type { AuthService } from '../identity/auth.service.js';
import { SELF_PERMISSION, sessionOf, setSessionCookie } from '../identity/session-guard.js';
import type { LiveSession } from '../identity/sessions.service.js';
import type { MfaService } from './mfa.service.js';
import type { MfaFactorRow } from './mfa.store.js';
import {
  PasskeyRegistration,
  type RelyingPartyOf,
  SecondFactorFields,
  secondFactorProofOf,
} from './second-factor-input.js';

/**
 * Your own second factors (MFA-1 to MFA-3, MFA-5) and the second step of signing in. Adding or
 * removing a factor and new recovery codes are privileged: they need a recent re-authentication,
 * itself with the second factor once there is one.
 */

const FactorView = z.object({
  id: z.string(),
  type: z.enum(['totp', 'webauthn']),
  name: z.string(),
  createdAt: Timestamp,
  lastUsedAt: Timestamp.nullable(),
});

const factorView = (row: MfaFactorRow) => ({
  id: row.id,
  type: row.type,
  name: row.name,
  createdAt: iso(row.created_at),
  lastUsedAt: row.last_used_at === null ? null : iso(row.last_used_at),
});

/** AUTH-5: a changed factor is the moment to end sessions signed in elsewhere; the console offers it. */
const OtherSessions = z
  .number()
  .int()
  .describe('Your other live sessions; end them with DELETE /api/auth/sessions');

const RecoveryCodes = z
  .array(z.string())
  .describe('Ten single-use codes, shown this once: each stands in for the authenticator one time');

/** A factor confirmed: the first one comes with recovery codes. */
const FactorAdded = z.object({
  factor: FactorView,
  recoveryCodes: RecoveryCodes.optional(),
  otherSessions: OtherSessions,
});

const CredentialDescriptor = z.object({
  id: z.string(),
  type: z.literal('public-key'),
  transports: z.array(z.string()).optional(),
});

/** What navigator.credentials.get() needs, as JSON (the console decodes it with @simplewebauthn/browser). */
const PasskeyRequestOptions = z.object({
  challenge: z.string(),
  rpId: z.string().optional(),
  allowCredentials: z.array(CredentialDescriptor).optional(),
  timeout: z.number().optional(),
  userVerification: z.enum(['required', 'preferred', 'discouraged']).optional(),
});

/** What navigator.credentials.create() needs, as JSON. */
const PasskeyCreationOptions = z.object({
  challenge: z.string(),
  rp: z.object({ id: z.string().optional(), name: z.string() }),
  user: z.object({ id: z.string(), name: z.string(), displayName: z.string() }),
  pubKeyCredParams: z.array(z.object({ alg: z.number(), type: z.literal('public-key') })),
  timeout: z.number().optional(),
  attestation: z.enum(['none', 'indirect', 'direct', 'enterprise']).optional(),
  excludeCredentials: z.array(CredentialDescriptor).optional(),
  authenticatorSelection: z
    .object({
      authenticatorAttachment: z.enum(['platform', 'cross-platform']).optional(),
      residentKey: z.enum(['discouraged', 'preferred', 'required']).optional(),
      requireResidentKey: z.boolean().optional(),
      userVerification: z.enum(['required', 'preferred', 'discouraged']).optional(),
    })
    .optional(),
  extensions: z.object({ credProps: z.boolean().optional() }).optional(),
  hints: z.array(z.string()).optional(),
});

export function mfaRoutes(
  mfa: MfaService,
  auth: AuthService,
  relyingPartyOf: RelyingPartyOf,
): RouteDefinition[] {
  const FactorParams = z.strictObject({ factor: idOf('mfa') });
  /** The answer to a new factor: it, the recovery codes when it is the first, and the sessions elsewhere. */
  const factorAdded = async (
    added: { factor: MfaFactorRow; recoveryCodes: string[] | undefined },
    session: LiveSession,
  ) => ({
    factor: factorView(added.factor),
    otherSessions: await auth.otherSessionsOf(session),
    ...(added.recoveryCodes ? { recoveryCodes: added.recoveryCodes } : {}),
  });
  return [
    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/verify',
      operationId: 'verifySecondFactor',
      summary:
        'Finish signing in with a code from your authenticator, a recovery code or a passkey; renews the session id',
      tags: ['auth', 'mfa'],
      access: { permission: SELF_PERMISSION, beforeSecondFactor: true },
      rateLimit: 'auth',
      body: z.strictObject(SecondFactorFields),
      response: { 200: SessionView },
      handler: async ({ principal, body, request, reply }) => {
        const session = sessionOf(principal);
        const proof = secondFactorProofOf(body, session.id, () => relyingPartyOf(request));
        if (!proof) throw new ValidationError([{ path: 'body.code', message: 'give a code or a passkey' }]);
        const { token, view } = await auth.completeSecondFactor(session, proof, auditContextOf(request));
        setSessionCookie(reply, token);
        return view;
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/passkey-challenge',
      operationId: 'startPasskeyProof',
      summary:
        'A challenge for one of your passkeys, to finish signing in or to re-authenticate; valid once, for five minutes',
      tags: ['auth', 'mfa'],
      access: { permission: SELF_PERMISSION, beforeSecondFactor: true },
      rateLimit: 'auth',
      response: { 200: PasskeyRequestOptions },
      handler: ({ principal, request }) => {
        const session = sessionOf(principal);
        return mfa.passkeyChallenge(session.userId, session.id, relyingPartyOf(request));
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/passkeys/options',
      operationId: 'startPasskeyEnrolment',
      summary: 'Start adding a passkey (re-authentication first): options for the browser, valid once',
      tags: ['mfa'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'write',
      response: { 200: PasskeyCreationOptions },
      handler: ({ principal, request }) => {
        const session = sessionOf(principal);
        return mfa.startPasskey(session, session.id, relyingPartyOf(request));
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/passkeys',
      operationId: 'addPasskey',
      summary:
        "Finish adding a passkey with the browser's answer (re-authentication first); your first factor comes with recovery codes",
      tags: ['mfa'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'write',
      body: z.strictObject({ name: DisplayText(64).default('Passkey'), response: PasskeyRegistration }),
      response: {
        201: FactorAdded,
      },
      handler: async ({ principal, body, request, reply }) => {
        const session = sessionOf(principal);
        const added = await mfa.finishPasskey(
          session,
          {
            sessionId: session.id,
            name: body.name,
            response: body.response as RegistrationResponseJSON,
            relyingParty: relyingPartyOf(request),
          },
          auditContextOf(request),
        );
        reply.code(201);
        return factorAdded(added, session);
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/auth/mfa',
      operationId: 'getMyFactors',
      summary: 'Your second factors and how many recovery codes are left',
      tags: ['mfa'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'read',
      response: { 200: z.object({ factors: z.array(FactorView), recoveryCodesLeft: z.number().int() }) },
      handler: async ({ principal }) => {
        const status = await mfa.status(sessionOf(principal).userId);
        return { factors: status.factors.map(factorView), recoveryCodesLeft: status.recoveryCodesLeft };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/totp',
      operationId: 'startTotpEnrolment',
      summary: 'Start adding an authenticator app: a new secret and its otpauth:// URI for the QR code',
      tags: ['mfa'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'write',
      body: z.strictObject({ name: DisplayText(64).default('Authenticator app') }),
      response: {
        201: z.object({
          factorId: z.string(),
          secret: z.string().describe('Base32, for typing into the app when the QR code cannot be scanned'),
          uri: z.string(),
        }),
      },
      handler: ({ principal, body }) => mfa.startTotp(sessionOf(principal), body.name),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/totp/:factor/confirm',
      operationId: 'confirmTotpEnrolment',
      summary:
        'Finish adding an authenticator with its current code; your first factor comes with recovery codes',
      tags: ['mfa'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'auth',
      params: FactorParams,
      body: z.strictObject({
        code: z
          .string()
          .trim()
          .regex(/^\d{6}$/, 'is six digits'),
      }),
      response: {
        200: FactorAdded,
      },
      handler: async ({ principal, params, body, request }) => {
        const session = sessionOf(principal);
        return factorAdded(
          await mfa.confirmTotp(session, params.factor, body.code, auditContextOf(request)),
          session,
        );
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/auth/mfa/factors/:factor',
      operationId: 'removeMyFactor',
      summary:
        'Remove one of your factors (re-authentication first); with the last one, recovery codes go too',
      tags: ['mfa'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'write',
      params: FactorParams,
      response: { 200: z.object({ factorsLeft: z.number().int(), otherSessions: OtherSessions }) },
      handler: async ({ principal, params, request }) => {
        const session = sessionOf(principal);
        const removed = await mfa.removeFactor(session, params.factor, auditContextOf(request));
        return { ...removed, otherSessions: await auth.otherSessionsOf(session) };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/recovery-codes',
      operationId: 'regenerateRecoveryCodes',
      summary: 'Ten new recovery codes (re-authentication first); the old ones stop working',
      tags: ['mfa'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'write',
      response: { 200: z.object({ recoveryCodes: RecoveryCodes }) },
      handler: async ({ principal, request }) => ({
        recoveryCodes: await mfa.regenerateRecoveryCodes(sessionOf(principal), auditContextOf(request)),
      }),
    }),
  ];
}
