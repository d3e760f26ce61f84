import { z } from 'zod';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { Done, done, iso, SessionId, Timestamp } from '../http/schemas.js';
import { type RelyingPartyOf, SecondFactorFields, secondFactorProofOf } from '../mfa/second-factor-input.js';
import { Password, SessionView } from './auth.schemas.js';
import type { AuthService } from './auth.service.js';
import { describeDevice } from './devices.js';
import {
  SELF_PERMISSION,
  SESSION_COOKIE,
  sessionCookieOf,
  sessionOf,
  setSessionCookie,
} from './session-guard.js';

export function authRoutes(auth: AuthService, relyingPartyOf: RelyingPartyOf): RouteDefinition[] {
  return [
    defineRoute({
      method: 'POST',
      url: '/api/auth/login',
      operationId: 'login',
      summary: 'Sign in with email and password; starts a session (cookie) and returns the CSRF token',
      tags: ['auth'],
      access: {
        public: 'signing in is how a caller gets credentials; failures are uniform and rate limited',
      },
      rateLimit: 'auth',
      admit: () => auth.assertCanVerifyPasswords(),
      body: z.strictObject({ email: z.string().trim().min(3).max(254), password: Password }),
      response: { 200: SessionView },
      handler: async ({ body, request, reply }) => {
        const { token, view } = await auth.login(body, auditContextOf(request));
        setSessionCookie(reply, token);
        return view;
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/auth/session',
      operationId: 'getSession',
      summary: 'The signed-in user, their organizations and the CSRF token for this session',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION, beforeSecondFactor: true },
      rateLimit: 'read',
      response: { 200: SessionView },
      handler: ({ principal }) => auth.view(sessionOf(principal)),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/auth/status',
      operationId: 'getSignInStatus',
      summary:
        'Whether this browser is signed in, and if so the same view as GET /api/auth/session; never 401, so the console can ask at startup',
      tags: ['auth'],
      access: {
        public:
          'answers "not signed in" to anyone; the session view needs the live session cookie, like GET /api/auth/session',
      },
      rateLimit: 'read',
      response: {
        200: z.discriminatedUnion('signedIn', [
          z.object({ signedIn: z.literal(false) }),
          z.object({ signedIn: z.literal(true), session: SessionView }),
        ]),
      },
      handler: async ({ request }) => {
        const session = await auth.liveSession(sessionCookieOf(request));
        return session
          ? { signedIn: true as const, session: await auth.view(session) }
          : { signedIn: false as const };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/logout',
      operationId: 'logout',
      summary: 'End this session and tell the browser to forget it',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION, beforeSecondFactor: true },
      rateLimit: 'write',
      response: { 200: z.object({ status: z.literal('signed_out') }) },
      handler: async ({ principal, request, reply }) => {
        await auth.logout(sessionOf(principal), auditContextOf(request));
        reply.clearCookie(SESSION_COOKIE, { path: '/', httpOnly: true, secure: true, sameSite: 'lax' });
        reply.header('clear-site-data', '"cookies", "storage"');
        return { status: 'signed_out' as const };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/password',
      operationId: 'changePassword',
      summary: 'Change your password; ends your other sessions and renews this one',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'auth',
      body: z.strictObject({ currentPassword: Password, newPassword: Password }),
      response: { 200: SessionView },
      handler: async ({ principal, body, request, reply }) => {
        const { token, view } = await auth.changePassword(
          sessionOf(principal),
          body,
          auditContextOf(request),
        );
        setSessionCookie(reply, token);
        return view;
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/reauth',
      operationId: 'reauthenticate',
      summary:
        'Re-enter your password, and a code or passkey once you have a second factor, before a privileged operation (step-up); renews the session id',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'auth',
      admit: () => auth.assertCanVerifyPasswords(),
      body: z.strictObject({ password: Password, ...SecondFactorFields }),
      response: { 200: SessionView },
      handler: async ({ principal, body, request, reply }) => {
        const session = sessionOf(principal);
        const { token, view } = await auth.reauthenticate(
          session,
          {
            password: body.password,
            secondFactor: secondFactorProofOf(body, session.id, () => relyingPartyOf(request)),
          },
          auditContextOf(request),
        );
        setSessionCookie(reply, token);
        return view;
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/auth/sessions',
      operationId: 'listMySessions',
      summary: 'Your signed-in sessions: device, address, last use',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'read',
      response: {
        200: z.object({
          sessions: z.array(
            z.object({
              id: z.string(),
              current: z.boolean(),
              ip: z.string().nullable(),
              userAgent: z.string().nullable(),
              device: z.object({
                browser: z.string().nullable(),
                os: z.string().nullable(),
                type: z.string(),
              }),
              createdAt: Timestamp,
              lastSeenAt: Timestamp,
              expiresAt: Timestamp,
            }),
          ),
        }),
      },
      handler: async ({ principal }) => {
        const current = sessionOf(principal);
        return {
          sessions: (await auth.listSessions(current.userId)).map((row) => ({
            id: row.id,
            current: row.id === current.id,
            ip: row.ip,
            userAgent: row.user_agent,
            device: describeDevice(row.user_agent),
            createdAt: iso(row.created_at),
            lastSeenAt: iso(row.last_seen_at),
            expiresAt: iso(row.expires_at),
          })),
        };
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/auth/sessions',
      operationId: 'revokeMyOtherSessions',
      summary:
        'End every one of your sessions but this one (re-authentication first), say after changing a factor',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'write',
      response: { 200: z.object({ ended: z.number().int() }) },
      handler: async ({ principal, request }) => ({
        ended: await auth.revokeOtherSessions(sessionOf(principal), auditContextOf(request)),
      }),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/auth/sessions/:session',
      operationId: 'revokeMySession',
      summary: 'End one of your sessions (re-authentication first)',
      tags: ['auth'],
      access: { permission: SELF_PERMISSION, privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ session: SessionId }),
      response: { 200: Done },
      handler: async ({ principal, params, request }) => {
        await auth.revokeSession(sessionOf(principal), params.session, auditContextOf(request));
        return done;
      },
    }),
  ];
}
