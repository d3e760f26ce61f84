import { newId } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import { createAccessStore } from '../access/access.store.js';
import { isBuiltInRole } from '../access/permissions.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor, AuditInput } from '../audit/audit.types.js';
import type { DB } from '../db/schema.js';
import { createOrgsStore } from '../orgs/orgs.store.js';
import { EMAIL_SHAPE, SLUG_SHAPE } from '../shapes.js';
import { oneTimePassword, slugify } from './bootstrap.js';
import type { Passwords } from './passwords.js';
import { createSessionsStore } from './sessions.store.js';
import { createUsersStore, type UserRow } from './users.store.js';

/**
 * Local recovery for an instance administrator (`bulwark admin …`, run on the server host with access
 * to its database and master key): create a user or an organization, reset a password, disable or
 * re-enable an account, end sessions. Generated passwords are returned to be printed once and must be
 * changed at the next sign-in. Every operation is audited with the operating-system user as actor.
 */

export class AdminError extends Error {}

export function createAdminService(deps: {
  db: Kysely<DB>;
  passwords: Passwords;
  audit: AuditService;
  actor: AuditActor;
  clock?: () => number;
}) {
  const { db, passwords, audit, actor } = deps;
  const clock = deps.clock ?? Date.now;
  const users = createUsersStore(db);
  const orgs = createOrgsStore(db);

  async function userByEmail(email: string): Promise<UserRow> {
    const user = await users.findByEmail(email.trim().toLowerCase());
    if (!user) throw new AdminError(`no user with email ${email}`);
    return user;
  }

  async function orgBySlug(slug: string) {
    const org = await orgs.findOrgBySlug(slug);
    if (!org) throw new AdminError(`no organization with slug ${slug}`);
    return org;
  }

  const eventOf = (
    action: AuditInput['action'],
    user: UserRow,
    details = {},
    orgId?: string,
  ): AuditInput => ({
    orgId: orgId ?? null,
    actor,
    action,
    target: { type: 'user', id: user.id, display: user.email },
    outcome: 'success',
    details,
  });

  return {
    async createUser(input: { email: string; displayName?: string; org?: string; role?: string }) {
      const email = input.email.trim().toLowerCase();
      if (!EMAIL_SHAPE.test(email)) throw new AdminError(`${input.email} is not an email address`);
      if (await users.findByEmail(email)) throw new AdminError(`a user with email ${email} exists`);
      const org = input.org ? await orgBySlug(input.org) : undefined;
      const role = input.role ?? 'viewer';
      if (org && !isBuiltInRole(role) && !(await createAccessStore(db).customRoles(org.id)).has(role))
        throw new AdminError(`${role} is not a role of ${org.slug}`);
      const password = oneTimePassword();
      const now = clock();
      const id = newId('usr', now);
      const user: UserRow = {
        id,
        email,
        display_name: input.displayName ?? email.split('@')[0]!,
        password_hash: await passwords.verifierFor(id, password),
        status: 'active',
        password_change_required_at: now,
        password_changed_at: now,
        created_at: now,
        updated_at: now,
      };
      await audit.withEvents(async (trx, events) => {
        await createUsersStore(trx).insert(user);
        if (org)
          await createOrgsStore(trx).insertMembership({
            org_id: org.id,
            user_id: user.id,
            role,
            created_at: now,
          });
        events.push(eventOf('user.created', user, org ? { org: org.slug, role } : {}, org?.id));
      });
      return { user, password };
    },

    async createOrg(input: { name: string; slug?: string; ownerEmail: string; mfaRequired?: boolean }) {
      const owner = await userByEmail(input.ownerEmail);
      const slug = input.slug ?? slugify(input.name);
      if (!SLUG_SHAPE.test(slug)) throw new AdminError(`${slug} is not a valid slug`);
      if (await orgs.findOrgBySlug(slug)) throw new AdminError(`an organization with slug ${slug} exists`);
      const now = clock();
      const org = {
        id: newId('org', now),
        slug,
        name: input.name,
        created_at: now,
        mfa_required: input.mfaRequired === false ? 0 : 1,
      };
      await audit.withEvents(async (trx, events) => {
        await createOrgsStore(trx).insertOrg(org);
        await createOrgsStore(trx).insertMembership({
          org_id: org.id,
          user_id: owner.id,
          role: 'owner',
          created_at: now,
        });
        events.push(
          eventOf(
            'member.joined',
            owner,
            { role: 'owner', createdOrganization: slug, mfaRequired: org.mfa_required === 1 },
            org.id,
          ),
        );
      });
      return org;
    },

    /** A new one-time password; every session of the user ends (AUTH-5). */
    async resetPassword(email: string) {
      const user = await userByEmail(email);
      const password = oneTimePassword();
      const now = clock();
      const passwordHash = await passwords.verifierFor(user.id, password);
      const sessionsEnded = await audit.withEvents(async (trx, events) => {
        await createUsersStore(trx).setPassword(user.id, passwordHash, now, true);
        const ended = await createSessionsStore(trx).revokeAllOf(
          user.id,
          now,
          'password reset by an administrator',
        );
        events.push(eventOf('user.password_reset', user, { sessionsEnded: ended }));
        return ended;
      });
      return { password, sessionsEnded };
    },

    /** Disabling ends every session at once; the next request of any of them is refused (AUTH-5). */
    async setStatus(email: string, status: 'active' | 'disabled') {
      const user = await userByEmail(email);
      const now = clock();
      const sessionsEnded = await audit.withEvents(async (trx, events) => {
        await createUsersStore(trx).setStatus(user.id, status, now);
        const ended =
          status === 'disabled'
            ? await createSessionsStore(trx).revokeAllOf(user.id, now, 'account disabled')
            : 0;
        events.push(
          eventOf(status === 'disabled' ? 'user.disabled' : 'user.enabled', user, { sessionsEnded: ended }),
        );
        return ended;
      });
      return { sessionsEnded };
    },

    async endSessions(target: { email: string } | { everyone: true }) {
      const now = clock();
      if ('everyone' in target) {
        return audit.withEvents(async (trx, events) => {
          const sessionsEnded = await createSessionsStore(trx).revokeEveryone(
            now,
            'ended by an administrator',
          );
          events.push({
            actor,
            action: 'user.sessions_ended',
            target: { type: 'instance', id: 'all-users' },
            outcome: 'success',
            details: { sessionsEnded },
          });
          return sessionsEnded;
        });
      }
      const user = await userByEmail(target.email);
      return audit.withEvents(async (trx, events) => {
        const sessionsEnded = await createSessionsStore(trx).revokeAllOf(
          user.id,
          now,
          'ended by an administrator',
        );
        events.push(eventOf('user.sessions_ended', user, { sessionsEnded }));
        return sessionsEnded;
      });
    },
  };
}
