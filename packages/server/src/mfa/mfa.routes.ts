import { z } from 'zod';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { DisplayText, idOf, iso, Timestamp } from '../http/schemas.js';
import { SecondFactorCode, SessionView, sessionOf, setSessionCookie } from '../identity/auth.routes.js';
import type { AuthService } from '../identity/auth.service.js';
import { SELF_PERMISSION } from '../identity/session-guard.js';
import type { MfaService } from './mfa.service.js';
import type { MfaFactorRow } from './mfa.store.js';

/**
 * Your own second factors (MFA-1, MFA-3, MFA-5) and the second step of signing in. Adding or removing
 * a factor and new recovery codes are privileged: they need a recent re-authentication, itself with
 * the second factor once there is one.
 */

const FactorView = z.object({
  id: z.string(),
  type: z.enum(['totp']),
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

const RecoveryCodes = z
  .array(z.string())
  .describe('Ten single-use codes, shown this once: each stands in for the authenticator one time');

export function mfaRoutes(mfa: MfaService, auth: AuthService): RouteDefinition[] {
  const FactorParams = z.strictObject({ factor: idOf('mfa') });
  return [
    defineRoute({
      method: 'POST',
      url: '/api/auth/mfa/verify',
      operationId: 'verifySecondFactor',
      summary:
        'Finish signing in with a code from your authenticator or a recovery code; renews the session id',
      tags: ['auth', 'mfa'],
      access: { permission: SELF_PERMISSION, beforeSecondFactor: true },
      rateLimit: 'auth',
      body: z.strictObject({ code: SecondFactorCode }),
      response: { 200: SessionView },
      handler: async ({ principal, body, request, reply }) => {
        const { token, view } = await auth.completeSecondFactor(
          sessionOf(principal),
          body.code,
          auditContextOf(request),
        );
        setSessionCookie(reply, token);
        return view;
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
      response: { 200: z.object({ factor: FactorView, recoveryCodes: RecoveryCodes.optional() }) },
      handler: async ({ principal, params, body, request }) => {
        const confirmed = await mfa.confirmTotp(
          sessionOf(principal),
          params.factor,
          body.code,
          auditContextOf(request),
        );
        return {
          factor: factorView(confirmed.factor),
          ...(confirmed.recoveryCodes ? { recoveryCodes: confirmed.recoveryCodes } : {}),
        };
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
      response: { 200: z.object({ factorsLeft: z.number().int() }) },
      handler: ({ principal, params, request }) =>
        mfa.removeFactor(sessionOf(principal), params.factor, auditContextOf(request)),
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
