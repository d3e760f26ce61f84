import { newId } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput } from '../audit/audit.types.js';
import type { DB } from '../db/schema.js';
import { NotFoundError } from '../errors.js';
import { describeDevice, deviceKey } from '../identity/devices.js';
import { breakGlassEmail, noticeEmail } from './email-messages.js';
import type { EmailOutbox } from './email-outbox.js';
import type {
  InboxCursor,
  NotificationRow,
  NotificationsStore,
  NotificationsStoreIn,
} from './notifications.store.js';

/**
 * What people are told about their own account (NOTIFY-1, the console's inbox): a sign-in from a
 * device not seen before, a changed password or second factor, new recovery codes, a changed role,
 * an API key about to expire. Each is the person's chance to notice what they did not do.
 *
 * The account changes are read from the audit events of the change itself, inside its transaction
 * (see {@link withNotifications}): the events already name the person and what changed, every such
 * change has one (AUD-7), and the notice then commits with the change or not at all.
 */

export const NOTIFICATION_KINDS = [
  'new_device_sign_in',
  'password_changed',
  'authenticator_added',
  'authenticator_removed',
  'passkey_added',
  'passkey_removed',
  'recovery_codes_regenerated',
  'role_changed',
  'api_key_expiring',
] as const;
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number];

/** How long before an API key's end its owner is told (NOTIFY-1): a working week to rotate it. */
export const API_KEY_NOTICE_MS = 7 * 86_400_000;

/** A page of the inbox, unless the caller asks for another size. */
export const PAGE_SIZE = 20;

interface Notice {
  userId: string;
  kind: NotificationKind;
  title: string;
  body: string;
  dedupKey?: string;
}

const IF_NOT_YOU =
  'If this was not you, change your password and end the sessions you do not know in your profile.';

const quoted = (value: unknown) => (typeof value === 'string' && value ? ` “${value}”` : '');

export function encodeCursor(cursor: InboxCursor): string {
  return `${cursor.read ? 'r' : 'u'}.${cursor.before}`;
}

export function decodeCursor(text: string): InboxCursor {
  return { read: text.startsWith('r.'), before: text.slice(2) };
}

export function createNotificationsService(deps: {
  store: NotificationsStore;
  clock: () => number;
  /** Email (NOTIFY-1's email half): set when SMTP is configured; each new notice is also emailed. */
  email?: EmailOutbox | undefined;
}) {
  const { store, clock, email } = deps;

  async function add(tx: NotificationsStoreIn, notice: Notice): Promise<boolean> {
    const added = await addToInbox(tx, notice);
    // The email is written in the same transaction as the notice: both or neither.
    if (added && email) {
      const to = await tx.contact(notice.userId);
      if (to)
        await email.enqueue(tx.on, {
          userId: notice.userId,
          kind: notice.kind,
          to: to.email,
          name: to.display_name,
          email: noticeEmail(notice, email.consoleUrl),
        });
    }
    return added;
  }

  /**
   * AUTH-8: a break-glass sign-in alerts the organization's other owners by email, who can tell an
   * agreed emergency from a stolen password and factor. (The event is also critical in the audit log
   * and on the dashboard; email reaches them when they are not looking at either.)
   */
  async function breakGlass(tx: NotificationsStoreIn, event: AuditInput) {
    if (!email || !event.orgId || !event.actor.id) return;
    const orgName = (await tx.orgName(event.orgId)) ?? 'an organization';
    const message = breakGlassEmail({
      orgName,
      who: event.actor.display ?? 'The break-glass owner',
      at: clock(),
      ip: event.context?.ip ?? undefined,
      consoleUrl: email.consoleUrl,
    });
    for (const owner of await tx.otherOwners(event.orgId, event.actor.id))
      await email.enqueue(tx.on, {
        userId: owner.id,
        kind: 'break_glass_sign_in',
        to: owner.email,
        name: owner.display_name,
        email: message,
      });
  }

  async function addToInbox(tx: NotificationsStoreIn, notice: Notice): Promise<boolean> {
    const now = clock();
    return tx.insert({
      id: newId('ntf', now),
      user_id: notice.userId,
      kind: notice.kind,
      title: notice.title,
      body: notice.body,
      dedup_key: notice.dedupKey ?? null,
      created_at: now,
      read_at: null,
    });
  }

  /** A sign-in: told when its device (browser, OS, kind) is new for the person, except at the very first. */
  async function signedIn(tx: NotificationsStoreIn, event: AuditInput) {
    const userId = event.actor.id;
    if (!userId) return;
    const userAgent = event.context?.userAgent ?? null;
    const hadDevices = await tx.knowsAnyDevice(userId);
    const isNew = await tx.rememberDevice(userId, deviceKey(userAgent), clock());
    if (!isNew || !hadDevices) return;
    const device = describeDevice(userAgent);
    const named = device.browser
      ? `${device.browser}${device.os ? ` on ${device.os}` : ''}`
      : (device.os ?? 'a device not seen before');
    const pending = event.details?.secondFactorRequired === true;
    await add(tx, {
      userId,
      kind: 'new_device_sign_in',
      title: `New sign-in from ${named}`,
      body: `${pending ? 'Your password was used to sign in' : 'Someone signed in to your account'} from ${named}${
        event.context?.ip ? ` at address ${event.context.ip}` : ''
      }. ${IF_NOT_YOU}`,
    });
  }

  /** The notices one audited change makes (events of other kinds make none). */
  async function fromEvent(tx: NotificationsStoreIn, event: AuditInput, all: AuditInput[]) {
    if (event.outcome !== 'success') return;
    const self = event.actor.type === 'user' ? event.actor.id : undefined;
    const targetUser = event.target?.type === 'user' ? event.target.id : undefined;
    const isPasskey = event.details?.type === 'webauthn';
    switch (event.action) {
      case 'auth.login_succeeded':
        return signedIn(tx, event);
      case 'auth.break_glass_sign_in':
        return breakGlass(tx, event);
      case 'auth.password_changed':
      case 'user.password_reset':
        if (!targetUser) return;
        await add(tx, {
          userId: targetUser,
          kind: 'password_changed',
          title:
            event.action === 'user.password_reset'
              ? 'Your password was reset by an administrator'
              : 'Your password was changed',
          body: `Your other sessions were ended. ${IF_NOT_YOU}`,
        });
        return;
      case 'mfa.factor_added':
        if (!self) return;
        await add(tx, {
          userId: self,
          kind: isPasskey ? 'passkey_added' : 'authenticator_added',
          title: `${isPasskey ? 'A passkey' : 'An authenticator app'} was added${quoted(event.target?.display)}`,
          body: `It can now prove it is you when you sign in. ${IF_NOT_YOU}`,
        });
        return;
      case 'mfa.factor_removed':
        if (!self) return;
        await add(tx, {
          userId: self,
          kind: isPasskey ? 'passkey_removed' : 'authenticator_removed',
          title: `${isPasskey ? 'A passkey' : 'A second factor'} was removed${quoted(event.target?.display)}`,
          body: `It no longer signs you in. ${IF_NOT_YOU}`,
        });
        return;
      case 'mfa.recovery_codes_generated':
        // A first factor comes with its codes: the one notice about the factor says enough.
        if (!self || all.some((other) => other.action === 'mfa.factor_added')) return;
        await add(tx, {
          userId: self,
          kind: 'recovery_codes_regenerated',
          title: 'New recovery codes were made',
          body: `Your earlier recovery codes no longer work. ${IF_NOT_YOU}`,
        });
        return;
      case 'member.role_changed': {
        if (!targetUser || !event.orgId) return;
        const org = (await tx.orgName(event.orgId)) ?? 'an organization';
        const { from, to } = event.details ?? {};
        await add(tx, {
          userId: targetUser,
          kind: 'role_changed',
          title: `Your role in ${org} changed`,
          body:
            typeof from === 'string' && typeof to === 'string'
              ? `It was ${from}; it is now ${to}.`
              : 'What you may do there has changed.',
        });
        return;
      }
      default:
        return;
    }
  }

  return {
    /** Makes the notices of a change's audit events, in the change's own transaction. */
    async fromEvents(trx: Kysely<DB>, events: readonly AuditInput[]): Promise<void> {
      let tx: NotificationsStoreIn | undefined;
      for (const event of events) {
        if (!NOTIFYING_ACTIONS.has(event.action)) continue;
        tx ??= store.inTransaction(trx);
        await fromEvent(tx, event, [...events]);
      }
    },

    /** One page of the person's inbox, unread first; `unread` counts all their unread ones. */
    async list(userId: string, cursor?: string, limit = PAGE_SIZE) {
      const rows = await store.page(userId, cursor ? decodeCursor(cursor) : undefined, limit);
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return {
        notifications: page,
        nextCursor:
          rows.length > limit && last ? encodeCursor({ read: last.read_at !== null, before: last.id }) : null,
        unread: await store.unreadCount(userId),
      };
    },

    unreadCount: (userId: string) => store.unreadCount(userId),

    /** Marks one of the person's notifications read; another person's is not found (404, never 403). */
    async markRead(userId: string, id: string): Promise<void> {
      if (!(await store.markRead(userId, id, clock()))) throw new NotFoundError('No such notification.');
    },

    markAllRead: (userId: string) => store.markAllRead(userId, clock()),

    /**
     * Tells owners of API keys ending within {@link API_KEY_NOTICE_MS}, once per key (its dedup key),
     * however often and on however many instances the sweep runs. Returns how many were told.
     */
    async noticeExpiringApiKeys(): Promise<number> {
      const now = clock();
      let told = 0;
      for (const key of await store.expiringApiKeys(now, now + API_KEY_NOTICE_MS)) {
        // Each notice with its email in one transaction: the dedup key that stops a second notice
        // then also stops a second email.
        const added = await store.transaction((tx) =>
          add(tx, {
            userId: key.user_id,
            kind: 'api_key_expiring',
            title: `Your API key “${key.name}” in ${key.org_name} expires soon`,
            body: `It stops working at ${new Date(key.expires_at).toISOString()}. Create a new key and move to it before then.`,
            dedupKey: `api_key_expiring:${key.id}`,
          }),
        );
        if (added) told += 1;
      }
      return told;
    },
  };
}

const NOTIFYING_ACTIONS: ReadonlySet<string> = new Set<AuditInput['action']>([
  'auth.login_succeeded',
  'auth.password_changed',
  'user.password_reset',
  'mfa.factor_added',
  'mfa.factor_removed',
  'mfa.recovery_codes_generated',
  'member.role_changed',
  'auth.break_glass_sign_in',
]);

export type NotificationsService = ReturnType<typeof createNotificationsService>;
export type NotificationView = NotificationRow;

/**
 * The audit service, telling people about changes to their account as the changes commit: each
 * transaction's events are read for notices before the transaction ends, so a rolled-back change
 * leaves no notice and a committed one always has its notice.
 */
export function withNotifications(
  audit: AuditService,
  notifications: Pick<NotificationsService, 'fromEvents'>,
): AuditService {
  return {
    ...audit,
    withEvents: (work, options) =>
      audit.withEvents(async (tx, events) => {
        const result = await work(tx, events);
        await notifications.fromEvents(tx, events);
        return result;
      }, options),
  };
}
