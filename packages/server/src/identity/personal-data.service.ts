import type { JsonValue } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import { assertCanGrant } from '../access/access.service.js';
import { createAccessStore } from '../access/access.store.js';
import type { Caller } from '../access/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor, AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import type { AuditPii } from '../audit/audit-pii.js';
import { DeniedError } from '../audit/audited-transaction.js';
import { acrossOrgs } from '../db/org-scope.js';
import type { DB } from '../db/schema.js';
import { AppError, NotFoundError } from '../errors.js';
import { describeDevice } from './devices.js';
import { createPersonalDataStore } from './personal-data.store.js';

/**
 * A person's data (DATA-2; docs/security/data.md): exported as JSON, and erased.
 *
 * Export: the person themselves (a privileged route: fresh re-authentication, since the export holds
 * every address and browser they used) gets everything the instance holds about them; an owner of an
 * organization gets only what that organization holds about a member (profile as the members list
 * shows it, membership, teams, API keys there, and the org's audit events about them), never their
 * sessions, factors, notifications or other organizations.
 *
 * Erasure: the account and every row about the person are deleted and their PII key is shredded, so
 * what the audit log sealed about them opens nowhere again; the audit log itself stays whole and
 * verifiable. Only an instance administrator (`bulwark admin erase-user`) may erase anyone; an owner
 * may erase a member who belongs to their organization alone (a contractor account made for it), never
 * a person another organization also holds, nor themselves. People do not erase themselves: erasure
 * cannot be undone, and a stolen session must not be able to destroy an account and its history.
 */

/** Newest audit events in an export; older ones are in the audit export of the chain. */
export const EXPORT_EVENT_LIMIT = 10_000;

export class PersonalDataError extends AppError {}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

const membershipView = (m: {
  org_id: string;
  slug: string;
  name: string;
  role: string;
  created_at: number;
}) => ({
  orgId: m.org_id,
  org: m.slug,
  orgName: m.name,
  role: m.role,
  joinedAt: iso(m.created_at)!,
});

const teamView = (t: { id: string; org_id: string; name: string; created_at: number }) => ({
  id: t.id,
  orgId: t.org_id,
  name: t.name,
  joinedAt: iso(t.created_at)!,
});

function parseJson(text: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return text;
  }
}

interface Erasure {
  userId: string;
  actor: AuditActor;
  context?: AuditRequestContext;
  /** Set when an owner erases: the organization they act in. */
  byOwnerOf?: { orgId: string; callerId: string; caller: Caller };
}

export function createPersonalDataService(deps: {
  db: Kysely<DB>;
  audit: AuditService;
  pii: AuditPii;
  clock: () => number;
}) {
  const { db, audit, pii, clock } = deps;
  const store = createPersonalDataStore(db);

  /**
   * `own`: the person's own export. An event someone else did to them (an admin changing their role)
   * is theirs to see, but the actor's address, browser and name are that other person's data, not
   * theirs: left out. An attempt by someone not signed in against their account stays whole (it is
   * their sign-in history, sealed under their key).
   */
  async function auditEventsOf(userId: string, orgId?: string, own = false) {
    const rows = await store.auditEvents(userId, EXPORT_EVENT_LIMIT + 1, orgId);
    const opened = (await pii.openRows(rows.slice(0, EXPORT_EVENT_LIMIT))).map((row) =>
      own && row.actor_type !== 'anonymous' && !(row.actor_type === 'user' && row.actor_id === userId)
        ? { ...row, ip: null, user_agent: null, actor_display: null }
        : row,
    );
    return {
      truncated: rows.length > EXPORT_EVENT_LIMIT,
      events: opened.map((row) => ({
        id: row.id,
        chain: row.chain_id,
        time: iso(row.ts)!,
        action: row.action,
        outcome: row.outcome,
        actor: { type: row.actor_type, id: row.actor_id, display: row.actor_display },
        ip: row.ip,
        userAgent: row.user_agent,
        target:
          row.target_type === null
            ? null
            : { type: row.target_type, id: row.target_id, display: row.target_display },
        details: parseJson(row.details),
      })),
    };
  }

  async function apiKeysOf(userId: string, orgId?: string) {
    return (await store.apiKeys(userId, orgId)).map((key) => ({
      id: key.id,
      orgId: key.org_id,
      name: key.name,
      permissions: parseJson(key.permissions),
      createdAt: iso(key.created_at)!,
      expiresAt: iso(key.expires_at)!,
      lastUsedAt: iso(key.last_used_at),
      lastUsedIp: key.last_used_ip,
      revokedAt: iso(key.revoked_at),
    }));
  }

  const profileOf = (user: NonNullable<Awaited<ReturnType<typeof store.user>>>) => ({
    id: user.id,
    email: user.email,
    displayName: user.display_name,
    status: user.status,
    createdAt: iso(user.created_at)!,
    updatedAt: iso(user.updated_at)!,
    passwordChangedAt: iso(user.password_changed_at),
  });

  /** The export is recorded before it is handed out, and refused if that record cannot be written. */
  async function recordExport(
    actor: AuditActor,
    context: AuditRequestContext,
    userId: string,
    orgId: string | null,
  ) {
    await audit.record({
      orgId,
      actor,
      action: 'personal_data.exported',
      // The id only: the event itself adds nothing personal to the log.
      target: { type: 'user', id: userId },
      outcome: 'success',
      context,
      details: { scope: orgId ? 'organization' : 'instance' },
    });
  }

  /**
   * An erasure reaches every organization the person belongs to: their memberships, keys and events
   * in each chain. So it runs across organizations (db/org-scope.ts), even when an owner asks from
   * within theirs; what limits an owner to people no other organization holds is the check below,
   * which could not see those other organizations otherwise.
   */
  function erase(
    request: Erasure,
  ): Promise<{ memberships: number; sessionsEnded: number; shredded: number }> {
    return acrossOrgs(() => eraseEverywhere(request));
  }

  async function eraseEverywhere(
    request: Erasure,
  ): Promise<{ memberships: number; sessionsEnded: number; shredded: number }> {
    const { userId, actor, byOwnerOf } = request;
    const context = request.context ?? {};
    const user = await store.user(userId);
    const orgs = user ? await store.orgsOf(userId) : [];
    // Cross-org answers are the 404 of an id that exists nowhere: an owner learns nothing about people
    // outside their organization.
    if (!user || (byOwnerOf && !orgs.some((org) => org.orgId === byOwnerOf.orgId)))
      throw new NotFoundError(byOwnerOf ? 'No such member.' : 'No such user.');
    if (byOwnerOf) {
      if (userId === byOwnerOf.callerId)
        throw new PersonalDataError(
          409,
          'cannot_erase_yourself',
          'Ask an instance administrator to erase your account.',
        );
      if (orgs.some((org) => org.orgId !== byOwnerOf.orgId)) {
        // Recorded before it is answered: an owner reaching for a person beyond their organization.
        await audit.record({
          orgId: byOwnerOf.orgId,
          actor,
          action: 'user.erased',
          target: { type: 'user', id: userId },
          outcome: 'denied',
          context,
          details: { reason: 'member of other organizations' },
        });
        throw new PersonalDataError(
          403,
          'member_of_other_orgs',
          'This person also belongs to another organization; only an instance administrator can erase them.',
        );
      }
    }
    const result = await audit
      .withEvents(async (trx, events) => {
        const tx = createPersonalDataStore(trx);
        const access = createAccessStore(trx);
        // Each organization locked as member removal locks it (orgs/members.service.ts), in id order so two
        // erasures never wait on each other in a cycle: two owners erasing each other at once are then
        // serialized, and the second sees the first gone. The checks below read what the locks hold still.
        const locked = [...new Set(orgs.map((org) => org.orgId))].sort();
        for (const orgId of locked) await access.lockOrg(orgId);
        const orgsNow = await tx.orgsOf(userId);
        // The person may have joined another organization meanwhile (one not locked above).
        if (orgsNow.some((org) => !locked.includes(org.orgId)))
          throw new PersonalDataError(
            409,
            'memberships_changed',
            'This person’s memberships changed; try again.',
          );
        if (byOwnerOf) {
          // Erasing someone is at least removing them: it needs reach over their role (an `members:erase`
          // custom role does not reach an owner).
          const role = orgsNow.find((org) => org.orgId === byOwnerOf.orgId)?.role;
          if (role === undefined) throw new NotFoundError('No such member.');
          assertCanGrant(byOwnerOf.caller, 'erase member', role, await access.customRoles(byOwnerOf.orgId));
        }
        const soleOwnerOf = orgsNow.filter((org) => org.soleOwner);
        if (soleOwnerOf.length > 0) {
          throw new PersonalDataError(
            409,
            'last_owner',
            `This person is the only owner of ${soleOwnerOf.map((org) => org.slug).join(', ')}; make someone else owner first.`,
          );
        }
        // Keys acting for the person are deleted with them: each recorded as revoked, by id only (its
        // label is free text the person wrote).
        for (const key of await tx.openApiKeys(userId))
          events.push({
            orgId: key.org_id,
            actor,
            action: 'apikey.revoked',
            target: { type: 'api_key', id: key.id },
            outcome: 'success',
            context,
            details: { reason: 'its owner was erased' },
          });
        const erased = await tx.erase(userId, user.email);
        const shredded = await pii.shred(trx, { userId, email: user.email });
        // Each organization's chain shows the member leaving; the events name the user by id only.
        for (const org of orgsNow) {
          events.push({
            orgId: org.orgId,
            actor,
            action: 'member.removed',
            target: { type: 'user', id: userId },
            outcome: 'success',
            context,
            details: { erased: true },
          } satisfies AuditInput);
        }
        events.push({
          orgId: byOwnerOf?.orgId ?? null,
          actor,
          action: 'user.erased',
          target: { type: 'user', id: userId },
          outcome: 'success',
          context,
          details: { memberships: erased.memberships, sessionsEnded: erased.sessionsEnded, shredded },
        });
        return { ...erased, shredded };
      })
      .catch(async (error: unknown) => {
        // A refusal over rank is recorded on its own (the transaction rolled back).
        if (error instanceof DeniedError) await audit.record(error.event);
        throw error;
      });
    // Again after commit: an append that read the key meanwhile must not keep it.
    pii.forget(userId);
    pii.forget(pii.emailSubject(user.email));
    return result;
  }

  return {
    /** Everything the instance holds about the signed-in person. */
    async exportOwn(userId: string, actor: AuditActor, context: AuditRequestContext) {
      const user = await store.user(userId);
      if (!user) throw new NotFoundError('No such user.');
      await recordExport(actor, context, userId, null);
      const [memberships, teams, factors, recovery, sessions, devices, apiKeys, sso, notifications, audited] =
        await Promise.all([
          store.memberships(userId),
          store.teams(userId),
          store.factors(userId),
          store.recoveryCodes(userId),
          store.sessions(userId),
          store.devices(userId),
          apiKeysOf(userId),
          store.ssoIdentities(userId),
          store.notifications(userId),
          auditEventsOf(userId, undefined, true),
        ]);
      return {
        exportedAt: iso(clock())!,
        scope: 'instance' as const,
        profile: profileOf(user),
        memberships: memberships.map(membershipView),
        teams: teams.map(teamView),
        factors: factors.map((f) => ({
          id: f.id,
          type: f.type,
          name: f.name,
          createdAt: iso(f.created_at)!,
          confirmedAt: iso(f.confirmed_at),
          lastUsedAt: iso(f.last_used_at),
        })),
        recoveryCodes: { total: recovery.length, used: recovery.filter((r) => r.used_at !== null).length },
        sessions: sessions.map((s) => ({
          id: s.id,
          ip: s.ip,
          userAgent: s.user_agent,
          device: describeDevice(s.user_agent),
          createdAt: iso(s.created_at)!,
          lastSeenAt: iso(s.last_seen_at)!,
          expiresAt: iso(s.expires_at)!,
          endedAt: iso(s.revoked_at),
        })),
        devices: devices.map((d) => ({ device: d.device_key, firstSeenAt: iso(d.first_seen_at)! })),
        apiKeys,
        ssoIdentities: sso.map((s) => ({
          issuer: s.issuer,
          subject: s.subject,
          linkedAt: iso(s.created_at)!,
          lastSignInAt: iso(s.last_sign_in_at),
        })),
        notifications: notifications.map((n) => ({
          kind: n.kind,
          title: n.title,
          body: n.body,
          createdAt: iso(n.created_at)!,
          readAt: iso(n.read_at),
        })),
        auditEvents: audited.events,
        auditEventsTruncated: audited.truncated,
      };
    },

    /** What the caller's organization holds about one of its members (an owner's export). */
    async exportMember(caller: Caller, userId: string) {
      const orgId = caller.org.id;
      const [user, memberships] = await Promise.all([store.user(userId), store.memberships(userId, orgId)]);
      if (!user || memberships.length === 0) throw new NotFoundError('No such member.');
      await recordExport(caller.actor, caller.context, userId, orgId);
      const [teams, apiKeys, audited] = await Promise.all([
        store.teams(userId, orgId),
        apiKeysOf(userId, orgId),
        auditEventsOf(userId, orgId),
      ]);
      return {
        exportedAt: iso(clock())!,
        scope: 'organization' as const,
        profile: { id: user.id, email: user.email, displayName: user.display_name, status: user.status },
        memberships: memberships.map(membershipView),
        teams: teams.map(teamView),
        apiKeys,
        auditEvents: audited.events,
        auditEventsTruncated: audited.truncated,
      };
    },

    erase,

    /** An owner erasing a member their organization alone holds. */
    eraseMember: (caller: Caller, userId: string) =>
      erase({
        userId,
        actor: caller.actor,
        context: caller.context,
        byOwnerOf: { orgId: caller.org.id, callerId: caller.userId, caller },
      }),

    /** An instance administrator erasing anyone, by email (`bulwark admin erase-user`). */
    async eraseByEmail(email: string, actor: AuditActor) {
      const user = await db
        .selectFrom('users')
        .select('id')
        .where('email', '=', email.trim().toLowerCase())
        .executeTakeFirst();
      if (!user) throw new NotFoundError(`No user with email ${email}.`);
      return { userId: user.id, ...(await erase({ userId: user.id, actor })) };
    },
  };
}

export type PersonalDataService = ReturnType<typeof createPersonalDataService>;
