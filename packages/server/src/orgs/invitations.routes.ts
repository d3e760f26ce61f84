import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import {
  DisplayText,
  Done,
  done,
  Email,
  InvitationId,
  iso,
  OrgSlug,
  RoleRef,
  Timestamp,
} from '../http/schemas.js';
import { Password, SessionView } from '../identity/auth.schemas.js';
import type { AuthService } from '../identity/auth.service.js';
import { SELF_PERMISSION, sessionOf, setSessionCookie } from '../identity/session-guard.js';
import type { InvitationsService } from './invitations.service.js';

const InvitationView = z.object({
  id: z.string(),
  email: z.string(),
  role: z.string(),
  status: z.enum(['pending', 'expired', 'accepted', 'revoked']),
  invitedBy: z.string(),
  createdAt: Timestamp,
  expiresAt: Timestamp,
});

// The token itself is never part of a view: it exists in clear only in the creation response.
const invitationView = (row: {
  id: string;
  email: string;
  role: string;
  status: 'pending' | 'expired' | 'accepted' | 'revoked';
  invited_by: string;
  created_at: number;
  expires_at: number;
}) => ({
  id: row.id,
  email: row.email,
  role: row.role,
  status: row.status,
  invitedBy: row.invited_by,
  createdAt: iso(row.created_at),
  expiresAt: iso(row.expires_at),
});

const InvitationToken = z.string().trim().min(10).max(100);

export function invitationsRoutes(deps: {
  invitations: InvitationsService;
  auth: AuthService;
}): RouteDefinition[] {
  const { invitations, auth } = deps;
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/invitations',
      operationId: 'listInvitations',
      summary: 'Invitations not yet accepted or revoked',
      tags: ['members'],
      access: { permission: 'members:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ invitations: z.array(InvitationView) }) },
      handler: async ({ principal }) => ({
        invitations: (await invitations.list(principal!.org!.id)).map(invitationView),
      }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/invitations',
      operationId: 'createInvitation',
      summary:
        'Invite someone with a role no stronger than your own; the token is shown once, valid 7 days, single use',
      tags: ['members'],
      access: { permission: 'members:invite' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({ email: Email, role: RoleRef }),
      response: {
        201: z.object({
          invitation: InvitationView,
          token: z.string().describe('Shown only now: send it to the invitee'),
          acceptPath: z.string(),
        }),
      },
      handler: async ({ principal, request, body }) => {
        const { invitation, token } = await invitations.create(callerOf(principal, request), body);
        return {
          invitation: invitationView({ ...invitation, status: 'pending' }),
          token,
          // In the fragment, so the token never reaches a server log or a Referer header.
          acceptPath: `/invitations/accept#${token}`,
        };
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/invitations/:invitation',
      operationId: 'revokeInvitation',
      summary: 'Revoke a pending invitation',
      tags: ['members'],
      access: { permission: 'members:invite' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, invitation: InvitationId }),
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await invitations.revoke(callerOf(principal, request), params.invitation);
        return done;
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/invitations/accept',
      operationId: 'acceptInvitationWithNewAccount',
      summary: 'Accept an invitation by creating the account for the invited email; signs you in',
      tags: ['members'],
      access: {
        public: 'the invitation token is the credential: hashed, single use, expiring, and rate limited',
      },
      rateLimit: 'auth',
      body: z.strictObject({ token: InvitationToken, displayName: DisplayText(100), password: Password }),
      response: { 200: SessionView },
      handler: async ({ body, request, reply }) => {
        const context = auditContextOf(request);
        const user = await invitations.acceptWithNewAccount(body, context);
        const { token, view } = await auth.signIn(user, context, 'invitation');
        setSessionCookie(reply, token);
        return view;
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/invitations/accept-signed-in',
      operationId: 'acceptInvitation',
      summary: 'Accept an invitation sent to the email of the account you are signed in with',
      tags: ['members'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'auth',
      body: z.strictObject({ token: InvitationToken }),
      response: { 200: z.object({ orgId: z.string(), slug: z.string(), role: z.string() }) },
      handler: ({ body, principal, request }) => {
        const session = sessionOf(principal);
        return invitations.acceptAsUser(
          body,
          { id: session.userId, email: session.email },
          auditContextOf(request),
        );
      },
    }),
  ];
}
