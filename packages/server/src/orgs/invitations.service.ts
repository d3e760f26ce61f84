import { generateToken, isWellFormedToken, newId, tokenHash } from '@bulwark/protocol';
import { assertCanGrant } from '../access/access.service.js';
import { createAccessStore } from '../access/access.store.js';
import { type Caller, callerEvent } from '../access/caller.js';
import { isBuiltInRole } from '../access/permissions.js';
import type { AuditActor, AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import { DeniedError, type Transact } from '../audit/audited-transaction.js';
import { AppError, NotFoundError, ValidationError } from '../errors.js';
import type { BreachedPasswords } from '../identity/breached-passwords.js';
import type { CredentialSeals } from '../identity/credential-seals.js';
import { passwordProblem } from '../identity/password-policy.js';
import type { Passwords } from '../identity/passwords.js';
import { createUsersStore, type UserRow, type UsersStore } from '../identity/users.store.js';
import type { EmailOutbox } from '../notifications/email-outbox.js';
import { createInvitationsStore, type InvitationRow, type InvitationsStore } from './invitations.store.js';
import { createOrgsStore } from './orgs.store.js';

/**
 * Invitations (ACC-5): a `bwi_` token shown once to the inviter (to send as a link), stored only as
 * its SHA-256, valid 7 days, usable once. The role it grants is bounded by the inviter's own
 * permissions when it is created. Accepting either creates the invitee's account (the token proves
 * they read the invited mailbox) or, for an existing account, needs that account signed in.
 */

export const INVITATION_LIFETIME_MS = 7 * 86_400_000;

export class InvitationInvalidError extends AppError {
  constructor() {
    // One answer for unknown, used, revoked and expired tokens: the token holder learns nothing more.
    super(
      404,
      'invitation_invalid',
      'This invitation is not valid: it may have expired, been used or been revoked.',
    );
  }
}

export type InvitationStatus = 'pending' | 'expired' | 'accepted' | 'revoked';

export function invitationStatus(row: InvitationRow, now: number): InvitationStatus {
  if (row.accepted_at !== null) return 'accepted';
  if (row.revoked_at !== null) return 'revoked';
  return row.expires_at <= now ? 'expired' : 'pending';
}

export function createInvitationsService(deps: {
  invitations: InvitationsStore;
  users: UsersStore;
  passwords: Passwords;
  seals: CredentialSeals;
  transact: Transact;
  clock: () => number;
  /** The breached-password check (AUTH-1), when configured. */
  breached?: BreachedPasswords;
  /** Emails the invitee the link (NOTIFY-1), in the invitation's own transaction, when SMTP is configured. */
  email?: Pick<EmailOutbox, 'invitation'> | undefined;
  /** How many invitation emails an organization may send (config `invitationEmails`). */
  limits?: { perOrgPerDay: number; recipientCooldownMinutes: number };
}) {
  const { invitations, users, passwords, seals, transact, clock } = deps;

  function acceptedEvents(
    row: InvitationRow,
    user: { id: string; email: string },
    context: AuditRequestContext,
    newAccount: boolean,
  ): AuditInput[] {
    const actor: AuditActor = { type: 'user', id: user.id, display: user.email };
    return [
      {
        orgId: row.org_id,
        actor,
        action: 'invitation.accepted',
        target: { type: 'invitation', id: row.id },
        outcome: 'success',
        context,
        details: { role: row.role, newAccount },
      },
      {
        orgId: row.org_id,
        actor,
        action: 'member.joined',
        target: { type: 'user', id: user.id, display: user.email },
        outcome: 'success',
        context,
        details: { role: row.role, invitedBy: row.invited_by },
      },
    ];
  }

  /** Within the accepting transaction: single use is the guarded update, not the earlier lookup. */
  async function join(
    trx: Parameters<Parameters<Transact>[0]>[0],
    row: InvitationRow,
    userId: string,
    now: number,
  ) {
    const orgs = createOrgsStore(trx);
    if (await orgs.findMember(row.org_id, userId))
      throw new AppError(409, 'already_member', 'You are already a member of this organization.');
    if (!(await createInvitationsStore(trx).consume(row.id, userId, now))) throw new InvitationInvalidError();
    const roles = await createAccessStore(trx).customRoles(row.org_id);
    if (!isBuiltInRole(row.role) && !roles.has(row.role))
      throw new AppError(
        409,
        'role_gone',
        'The role this invitation grants no longer exists; ask for a new one.',
      );
    await orgs.insertMembership({ org_id: row.org_id, user_id: userId, role: row.role, created_at: now });
  }

  /**
   * `members:invite` (admins, API keys) must not make Bulwark a mail cannon aimed at any address:
   * an organization sends at most so many invitation emails a day, and one address gets one at most
   * every so often, revoked ones included (invite, revoke, invite would otherwise mail it at the
   * write rate limit). Under the organization's lock, so concurrent invitations count each other.
   */
  async function assertMayMail(
    trx: Parameters<Parameters<Transact>[0]>[0],
    orgId: string,
    email: string,
    now: number,
  ) {
    const limits = deps.limits ?? { perOrgPerDay: 100, recipientCooldownMinutes: 60 };
    await createAccessStore(trx).lockOrg(orgId);
    const store = createInvitationsStore(trx);
    if (
      limits.recipientCooldownMinutes > 0 &&
      (await store.invitedSince(orgId, email, now - limits.recipientCooldownMinutes * 60_000))
    )
      throw new AppError(
        429,
        'invitation_recently_sent',
        `This address was sent an invitation less than ${limits.recipientCooldownMinutes} minutes ago; try again later.`,
      );
    if ((await store.countSince(orgId, now - 86_400_000)) >= limits.perOrgPerDay)
      throw new AppError(
        429,
        'invitation_email_limit',
        `This organization has sent ${limits.perOrgPerDay} invitation emails in the last 24 hours; try again later.`,
      );
  }

  /**
   * Who the email says invited: a person. An API key's display carries its label, free text anyone
   * holding `apikeys:manage` wrote, which must not reach a stranger's mailbox: the key's owner instead.
   */
  async function inviterName(trx: Parameters<Parameters<Transact>[0]>[0], caller: Caller) {
    if (caller.actor.type === 'user') return caller.actor.display ?? 'A member';
    return (await createUsersStore(trx).findById(caller.userId))?.email ?? 'A member';
  }

  async function usable(token: string) {
    if (!isWellFormedToken(token, 'bwi')) throw new InvitationInvalidError();
    const row = await invitations.findUsable(tokenHash(token), clock());
    if (!row) throw new InvitationInvalidError();
    // An invitation the server did not issue (written into the database) admits nobody.
    if (!(await seals.holds('invitation', row, { id: row.id, orgId: row.org_id })))
      throw new InvitationInvalidError();
    return row;
  }

  return {
    async list(orgId: string) {
      const now = clock();
      return (await invitations.listOpen(orgId)).map((row) => ({
        ...row,
        status: invitationStatus(row, now),
      }));
    },

    create(
      caller: Caller,
      input: { email: string; role: string },
    ): Promise<{ invitation: InvitationRow; token: string }> {
      const email = input.email.trim().toLowerCase();
      return transact(async (trx, events) => {
        const now = clock();
        assertCanGrant(caller, 'invite', input.role, await createAccessStore(trx).customRoles(caller.org.id));
        const existing = await createUsersStore(trx).findByEmail(email);
        if (existing && (await createOrgsStore(trx).findMember(caller.org.id, existing.id)))
          throw new AppError(409, 'already_member', 'This person is already a member.');
        const store = createInvitationsStore(trx);
        if (await store.findPendingFor(caller.org.id, email, now))
          throw new AppError(
            409,
            'invitation_pending',
            'This person already has a pending invitation; revoke it first.',
          );
        if (deps.email) await assertMayMail(trx, caller.org.id, email, now);
        const token = generateToken('bwi');
        const invitation: InvitationRow = {
          id: newId('inv', now),
          org_id: caller.org.id,
          email,
          role: input.role,
          token_hash: tokenHash(token),
          invited_by: caller.userId,
          created_at: now,
          expires_at: now + INVITATION_LIFETIME_MS,
          accepted_at: null,
          accepted_by: null,
          revoked_at: null,
          seal: '',
        };
        invitation.seal = await seals.inTransaction(trx).seal('invitation', invitation);
        await store.insert(invitation);
        await deps.email?.invitation(trx, {
          email,
          orgName: caller.org.name,
          inviterName: await inviterName(trx, caller),
          role: input.role,
          token,
          expiresAt: invitation.expires_at,
        });
        events.push(
          callerEvent(
            caller,
            'invitation.created',
            { type: 'invitation', id: invitation.id, display: email },
            {
              role: input.role,
              expiresAt: invitation.expires_at,
            },
          ),
        );
        return { invitation, token };
      });
    },

    revoke(caller: Caller, invitationId: string): Promise<void> {
      return transact(async (trx, events) => {
        const store = createInvitationsStore(trx);
        const row = await store.find(caller.org.id, invitationId);
        if (!row) throw new NotFoundError('No such invitation.');
        if (!(await store.revoke(caller.org.id, invitationId, clock())))
          throw new AppError(409, 'invitation_closed', 'This invitation was already accepted or revoked.');
        events.push(
          callerEvent(caller, 'invitation.revoked', { type: 'invitation', id: row.id, display: row.email }),
        );
      });
    },

    /** Accepts with a new account for the invited email; the caller signs the new user in. */
    async acceptWithNewAccount(
      input: { token: string; displayName: string; password: string },
      context: AuditRequestContext,
    ): Promise<UserRow> {
      const row = await usable(input.token);
      if (await users.findByEmail(row.email))
        throw new AppError(409, 'sign_in_to_accept', 'An account with this email exists; sign in to accept.');
      const problem = await passwordProblem(
        input.password,
        { email: row.email, orgName: row.org_name, orgSlug: row.org_slug },
        deps.breached,
      );
      if (problem) throw new ValidationError([{ path: 'body.password', message: problem.message }]);
      const userId = newId('usr', clock());
      const passwordHash = await passwords.verifierFor(userId, input.password);
      return transact(async (trx, events) => {
        const now = clock();
        // CRYPTO-2: one acceptance at a time; the account is created only by the one that wins.
        if (!(await createInvitationsStore(trx).lockUsable(row.id, now))) throw new InvitationInvalidError();
        const user: UserRow = {
          id: userId,
          email: row.email,
          display_name: input.displayName,
          password_hash: passwordHash,
          status: 'active',
          password_change_required_at: null,
          password_changed_at: now,
          created_at: now,
          updated_at: now,
        };
        const store = createUsersStore(trx);
        if (await store.findByEmail(row.email))
          throw new AppError(
            409,
            'sign_in_to_accept',
            'An account with this email exists; sign in to accept.',
          );
        await store.insert(user);
        await join(trx, row, user.id, now);
        events.push(...acceptedEvents(row, user, context, true));
        return user;
      });
    },

    /** Accepts for the signed-in user, whose email must be the invited one. */
    async acceptAsUser(
      input: { token: string },
      user: { id: string; email: string },
      context: AuditRequestContext,
    ): Promise<{ orgId: string; slug: string; role: string }> {
      const row = await usable(input.token);
      return transact(async (trx, events) => {
        if (row.email !== user.email.toLowerCase()) {
          throw new DeniedError(
            403,
            'invitation_for_someone_else',
            'This invitation was sent to another email address.',
            {
              orgId: row.org_id,
              actor: { type: 'user', id: user.id, display: user.email },
              action: 'access.denied',
              target: { type: 'invitation', id: row.id },
              outcome: 'denied',
              context,
              details: { reason: 'invitation_for_someone_else' },
            },
          );
        }
        await join(trx, row, user.id, clock());
        events.push(...acceptedEvents(row, user, context, false));
        return { orgId: row.org_id, slug: row.org_slug, role: row.role };
      });
    },
  };
}

export type InvitationsService = ReturnType<typeof createInvitationsService>;
