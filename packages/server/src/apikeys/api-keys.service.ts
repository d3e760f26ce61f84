import { generateToken, isWellFormedToken, newId, tokenHash } from '@bulwark/protocol';
import type { Kysely, Transaction } from 'kysely';
import { createAccessStore } from '../access/access.store.js';
import { decide } from '../access/authorize.js';
import { type Acting, type Caller, callerEvent } from '../access/caller.js';
import { parseSelector } from '../access/label-selector.js';
import { AGENT_SCOPED_PERMISSIONS, type CataloguePermission } from '../access/permissions.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import { DeniedError, type Transact } from '../audit/audited-transaction.js';
import type { DB } from '../db/schema.js';
import {
  AppError,
  NotFoundError,
  UnauthenticatedError,
  unlessStorageFull,
  ValidationError,
} from '../errors.js';
import type { CredentialSeals } from '../identity/credential-seals.js';
import { createOrgsStore } from '../orgs/orgs.store.js';
import { type ApiKeyRow, type ApiKeyWithOwner, createApiKeysStore } from './api-keys.store.js';

/**
 * Organization API keys (KEY-1) for the CLI and scripts. A key acts for the member who created it and
 * never holds more than they do: its permissions are a subset of theirs when it is made, and every
 * request intersects them with the member's access of that moment, so a member who loses a role loses
 * it for their keys too. A key made by a key holds no more than that key (its permissions, its
 * expiry); revoking a key revokes the keys it made.
 */

export const DEFAULT_EXPIRY_DAYS = 90;
export const MAX_EXPIRY_DAYS = 365;
const DAY_MS = 86_400_000;
/** Writing last-used on every request would turn every read into a write; once a minute is enough. */
const TOUCH_EVERY_MS = 60_000;
/** `bwk_` and 8 characters of the random body: enough to tell keys apart, nothing to guess with. */
const HINT_CHARS = 12;

export interface NewApiKey {
  name: string;
  permissions: CataloguePermission[];
  selector?: string | undefined;
  expiresInDays: number;
}

export const apiKeyTarget = (key: Pick<ApiKeyRow, 'id' | 'name'>) => ({
  type: 'api_key',
  id: key.id,
  display: key.name,
});

/** How an audit event and a denial name a key acting for its member. */
export const apiKeyActor = (key: Pick<ApiKeyRow, 'id' | 'name'> & { email: string }) => ({
  type: 'api_key' as const,
  id: key.id,
  display: `${key.name} (API key of ${key.email})`,
});

function exceedsTheCreator(caller: Caller, name: string, reason: string, missing: string[] = []) {
  return new DeniedError(
    403,
    'exceeds_your_permissions',
    reason,
    callerEvent(
      caller,
      'access.denied',
      { type: 'api_key', id: name },
      { reason: 'exceeds_your_permissions', operation: 'create API key', missing },
      'denied',
    ),
  );
}

/** Revokes a key and, transitively, every open key it made; pushes one audit event per key. */
async function revokeWithDescendants(
  trx: Transaction<DB>,
  events: AuditInput[],
  caller: Caller,
  first: Pick<ApiKeyRow, 'id' | 'name'>,
  at: number,
  reason: string,
): Promise<number> {
  const store = createApiKeysStore(trx);
  let revoked = 0;
  const queue: Array<{ key: Pick<ApiKeyRow, 'id' | 'name'>; reason: string }> = [{ key: first, reason }];
  for (let next = queue.shift(); next; next = queue.shift()) {
    if (!(await store.revoke(next.key.id, at, next.reason))) continue;
    revoked++;
    events.push(callerEvent(caller, 'apikey.revoked', apiKeyTarget(next.key), { reason: next.reason }));
    for (const child of await store.openChildrenOf(next.key.id))
      queue.push({ key: child, reason: `the key that created it (${next.key.id}) was revoked` });
  }
  return revoked;
}

/**
 * Revokes a member's keys in an organization, in the transaction that removes them (KEY-1: revoking
 * the creator's membership revokes the creator's keys). Keys made by these keys act for the same
 * member, so they are among them.
 */
export async function revokeKeysOfMember(
  trx: Transaction<DB>,
  events: AuditInput[],
  caller: Acting,
  userId: string,
  at: number,
): Promise<number> {
  const store = createApiKeysStore(trx);
  const reason = 'its member left the organization';
  let revoked = 0;
  for (const key of await store.openOfMember(caller.org.id, userId)) {
    if (!(await store.revoke(key.id, at, reason))) continue;
    revoked++;
    events.push(callerEvent(caller, 'apikey.revoked', apiKeyTarget(key), { reason }));
  }
  return revoked;
}

export function createApiKeysService(deps: {
  db: Kysely<DB>;
  transact: Transact;
  seals: CredentialSeals;
  audit: AuditService;
  clock: () => number;
}) {
  const { db, transact, seals, audit, clock } = deps;
  const store = createApiKeysStore(db);

  /**
   * The key's selector, checked, and the key that creates it, if one does. A creating key needs
   * `apikeys:manage`, which no selector-limited key can hold, so a child never escapes a parent's
   * selector; it must not outlive its parent.
   */
  async function checkedLimits(caller: Caller, input: NewApiKey, expiresAt: number) {
    const selector = input.selector ?? null;
    if (selector !== null) {
      const parsed = parseSelector(selector);
      if ('problem' in parsed)
        throw new ValidationError([{ path: 'body.selector', message: parsed.problem }]);
      const orgWide = input.permissions.filter((p) => !AGENT_SCOPED_PERMISSIONS.has(p));
      if (orgWide.length > 0)
        throw new ValidationError([
          {
            path: 'body.permissions',
            message: `a key limited to a selector holds only agent permissions, not ${orgWide.join(', ')}`,
          },
        ]);
    }
    const parentId = caller.actor.type === 'api_key' ? caller.actor.id : undefined;
    const parent = parentId ? await store.find(caller.org.id, parentId) : undefined;
    if (parent && expiresAt > parent.expires_at)
      throw exceedsTheCreator(
        caller,
        input.name,
        `A key cannot outlive the key that creates it (it expires at ${new Date(parent.expires_at).toISOString()}).`,
      );
    return { parentKeyId: parent?.id ?? null, selector };
  }

  return {
    list: (orgId: string) => store.list(orgId),

    /** Creates a key; the token is returned here, once, and never again. */
    async create(
      caller: Caller,
      input: NewApiKey,
    ): Promise<{ key: ApiKeyRow & { email: string }; token: string }> {
      const now = clock();
      const expiresAt = now + input.expiresInDays * DAY_MS;
      // Held somewhere by the caller (and, for a key, listed by it): the key never exceeds them.
      const missing = input.permissions.filter(
        (permission) => !decide(caller.org.access, permission, { kind: 'any' }).allowed,
      );
      if (missing.length > 0)
        throw exceedsTheCreator(
          caller,
          input.name,
          `A key cannot hold permissions you do not hold yourself: ${missing.join(', ')}.`,
          missing,
        );
      const { parentKeyId, selector } = await checkedLimits(caller, input, expiresAt);
      const token = generateToken('bwk');
      const key: ApiKeyRow = {
        id: newId('apk', now),
        org_id: caller.org.id,
        user_id: caller.userId,
        parent_key_id: parentKeyId,
        name: input.name,
        token_hash: tokenHash(token),
        token_hint: token.slice(0, HINT_CHARS),
        permissions: JSON.stringify([...new Set(input.permissions)].sort()),
        selector,
        created_at: now,
        expires_at: expiresAt,
        last_used_at: null,
        last_used_ip: null,
        revoked_at: null,
        revoked_reason: null,
        seal: '',
      };
      // Sealed before the transaction: the seal's key may need reading, on a connection of its own.
      key.seal = await seals.seal('api-key', key);
      return transact(async (trx, events) => {
        // Serialized with member removal and key revocation (both lock the organization): a member
        // removed, or a parent key revoked, meanwhile leaves no new key behind that nothing revokes.
        await createAccessStore(trx).lockOrg(caller.org.id);
        const store = createApiKeysStore(trx);
        const parent = parentKeyId ? await store.find(caller.org.id, parentKeyId) : undefined;
        if (!(await createOrgsStore(trx).findMember(caller.org.id, caller.userId)) || parent?.revoked_at)
          throw new UnauthenticatedError('Your access ended while the key was being created.');
        await store.insert(key);
        events.push(
          callerEvent(caller, 'apikey.created', apiKeyTarget(key), {
            permissions: JSON.parse(key.permissions) as string[],
            selector,
            expiresAt: new Date(expiresAt).toISOString(),
            ...(parentKeyId ? { createdByKey: parentKeyId } : {}),
          }),
        );
        return { key: (await store.find(key.org_id, key.id))!, token };
      });
    },

    /** Revokes a key and every key it made. */
    revoke(caller: Caller, id: string): Promise<number> {
      return transact(async (trx, events) => {
        await createAccessStore(trx).lockOrg(caller.org.id);
        const key = await createApiKeysStore(trx).find(caller.org.id, id);
        if (!key) throw new NotFoundError('No such API key.');
        if (key.revoked_at !== null)
          throw new AppError(409, 'already_revoked', 'This key is already revoked.');
        return revokeWithDescendants(
          trx,
          events,
          caller,
          key,
          clock(),
          `revoked by ${caller.actor.display ?? caller.userId}`,
        );
      });
    },

    /**
     * The live key a bearer token names, or undefined. A revoked or expired key, or one whose member
     * is disabled, is refused and the attempt audited: a leaked key being tried is worth knowing about.
     */
    async authenticate(
      token: string,
      hash: string,
      context: AuditRequestContext,
    ): Promise<ApiKeyWithOwner | undefined> {
      if (!isWellFormedToken(token, 'bwk')) return undefined;
      const key = await store.findByTokenHash(hash);
      if (!key) return undefined;
      // A key row the server did not issue (written into the database) opens nothing.
      if (!(await seals.holds('api-key', key, { id: key.id, userId: key.user_id, orgId: key.org_id })))
        return undefined;
      const now = clock();
      const problem =
        key.revoked_at !== null
          ? 'revoked'
          : key.expires_at <= now
            ? 'expired'
            : key.user_status !== 'active'
              ? 'member_disabled'
              : undefined;
      if (problem) {
        await audit.record({
          orgId: key.org_id,
          actor: apiKeyActor(key),
          action: 'auth.api_key_rejected',
          target: apiKeyTarget(key),
          outcome: 'denied',
          context,
          details: { reason: problem },
        });
        return undefined;
      }
      if (key.last_used_at === null || now - key.last_used_at >= TOUCH_EVERY_MS)
        // A full disk must not stop reads: a missed touch only leaves last use older than it is.
        await store.touch(key.id, now, context.ip ?? null).catch(unlessStorageFull);
      return key;
    },
  };
}

export type ApiKeysService = ReturnType<typeof createApiKeysService>;
