import { createHash, createHmac, randomBytes } from 'node:crypto';
import { newId } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import type { DB, PiiKeysTable } from '../db/schema.js';
import type { MasterKeyProvider } from '../secrets/key-provider.js';
import { openUnder, SealedValueError, sealedKeyId, sealUnder } from '../secrets/keyring.js';
import type { AuditEventRow } from './audit.chain.js';

/**
 * Personal fields of audit events, sealed per person (DATA-1, DATA-2; docs/security/data.md).
 *
 * The audit log must outlive the people in it: it is hash-chained (AUD-3), so a field cannot be
 * blanked later without breaking every hash after it. So the personal fields of an event (who did it,
 * from which IP and browser, and a user it was done to) are sealed when the event is appended, each
 * under the PII key of the person it describes, and the chain hashes the sealed form. Erasing a person
 * deletes their PII key: their sealed fields then open nowhere (not in this database, not in a backup
 * taken afterwards), while `bulwark audit verify`, which needs no key at all, still verifies.
 *
 * - AES-256-GCM (keyring.ts `sealUnder`), a random nonce per value, the PII key's id (`pik_…`) in the
 *   ciphertext, and the event id and column bound as associated data: a sealed value moved to another
 *   event or column does not open (and moving it breaks that event's hash anyway).
 * - A PII key is made on first need, inside the append's own transaction, and stored wrapped by the
 *   master key (the key-encryption key, like the data keys).
 * - A user id that names no user (a target typed into a URL) gets a throwaway key, never stored: its
 *   fields read as erased from the start, and nobody can create keys for arbitrary ids.
 * - Agents, API keys, SCIM, the system and anonymous callers with no account named are not people we
 *   can erase: their events stay plain, with two exceptions that would otherwise name a person: an
 *   API key's display (`<name> (API key of <email>)`) is sealed under the key owner's PII key, and an
 *   invitation's display (the invited address, before it has an account) under a key for that
 *   address ({@link emailSubjectUnder}), which erasing the account with that address shreds too.
 *
 * Keys are cached for {@link CACHE_MS}: an erasure on this instance forgets its key at once; another
 * instance stops opening that person's fields within that time (it re-reads the key row and finds none).
 */

/** What reading shows in place of a field whose person was erased. */
export const ERASED = '(erased)';

const CACHE_MS = 60_000;
/** Key ids remembered for opening (erased ones included) before the memory is cleared and read again. */
const MAX_REMEMBERED = 10_000;
const SEALED_PREFIX = 'enc1.pik_';

const wrapContext = (row: Pick<PiiKeysTable, 'id' | 'user_id'>) => `audit_pii_keys/${row.id}/${row.user_id}`;
const fieldContext = (eventId: string, column: string) => `audit_events/${eventId}/${column}`;

type SealableColumn = 'actor_display' | 'ip' | 'user_agent' | 'target_display';
const SEALABLE: readonly SealableColumn[] = ['actor_display', 'ip', 'user_agent', 'target_display'];

/** Whether a stored audit field is a sealed personal value (rather than plain text of an older event). */
export function isSealedPii(value: string | null): value is string {
  return value?.startsWith(SEALED_PREFIX) === true;
}

type Unhashed = Omit<AuditEventRow, 'seq' | 'prev_hash' | 'hash'>;

/**
 * The key holder of an address that has no account yet (an invitation's, a sign-in attempt's): an
 * HMAC of the address under an instance key, so the key row neither spells the address nor lets a
 * reader of the database test whether some address was invited (an unsalted hash would). It is
 * deleted when the account with that address is erased.
 */
export function emailSubjectUnder(key: Buffer, email: string): string {
  return `email:${createHmac('sha256', key).update(email.trim().toLowerCase()).digest('hex')}`;
}

/** The purpose the subject key is derived for (from the instance's first data key: stable across rotations). */
export const EMAIL_SUBJECT_PURPOSE = 'audit-pii/email-subject';

/**
 * Whose key seals each personal column of an event, or none. The person is the user who acted; a
 * sign-in attempt by someone not signed in is about the account it tried (the typed identity, the IP
 * and browser of the attempt are that account's sign-in history). A user target's display is the
 * target's own.
 */
function ownersOf(
  row: Unhashed,
  apiKeyOwner: string | undefined,
  emailSubject: (email: string) => string,
): Partial<Record<SealableColumn, string>> {
  const actorUser = row.actor_type === 'user' && row.actor_id ? row.actor_id : null;
  const targetUser = row.target_type === 'user' && row.target_id ? row.target_id : null;
  // A failed sign-in against an address with no account: the typed address, the IP and browser are
  // still a person's (whoever holds that mailbox), kept under the address's key holder.
  const typedAddress =
    row.actor_type === 'anonymous' && !targetUser && row.actor_display?.includes('@')
      ? emailSubject(row.actor_display)
      : null;
  // An API key acts for its owner: the key's display names them, and the IP and browser are theirs.
  const person =
    actorUser ?? apiKeyOwner ?? (row.actor_type === 'anonymous' ? (targetUser ?? typedAddress) : null);
  const owners: Partial<Record<SealableColumn, string>> = {};
  if (person) {
    if (row.actor_display !== null) owners.actor_display = person;
    if (row.ip !== null) owners.ip = person;
    if (row.user_agent !== null) owners.user_agent = person;
  }
  if (targetUser && row.target_display !== null) owners.target_display = targetUser;
  if (row.target_type === 'invitation' && row.target_display !== null)
    owners.target_display = emailSubject(row.target_display);
  return owners;
}

/**
 * Whether a stored field of an event was sealed, by the same rule {@link ownersOf} seals by (read from
 * the plain columns), never by its text alone: a plain value that merely starts like a sealed one (a
 * crafted User-Agent on an agent's or SCIM's request) is shown as typed, not as "(erased)".
 */
function sealedByRule(row: AuditEventRow, column: SealableColumn): boolean {
  if (!isSealedPii(row[column])) return false;
  const targetUser = row.target_type === 'user' && row.target_id !== null;
  if (column === 'target_display') return targetUser || row.target_type === 'invitation';
  if ((row.actor_type === 'user' || row.actor_type === 'api_key') && row.actor_id) return true;
  // Anonymous: about the account tried, or (no account) the typed address, itself sealed then.
  return row.actor_type === 'anonymous' && (targetUser || isSealedPii(row.actor_display));
}

interface CachedKey {
  keyId: string;
  key: Buffer;
  loadedAt: number;
}

export function createAuditPii(deps: {
  db: Kysely<DB>;
  provider: MasterKeyProvider;
  clock: () => number;
  /**
   * The instance key addresses are HMACed under ({@link emailSubjectUnder}); main.ts derives it from the
   * keyring. Absent only in test harnesses without a keyring: a key of this process then.
   */
  subjectKey?: Buffer;
}) {
  const { db, provider, clock } = deps;
  const subjectKey = deps.subjectKey ?? randomBytes(32);
  const emailSubject = (email: string) => emailSubjectUnder(subjectKey, email);
  const byUser = new Map<string, CachedKey>();
  // Keys by id for opening; `null`: no such key (erased), remembered as briefly as a key.
  const byId = new Map<string, { key: Buffer | null; loadedAt: number }>();
  const fresh = (loadedAt: number) => clock() - loadedAt < CACHE_MS;

  function unwrap(row: PiiKeysTable): Buffer {
    return provider.unwrap(row.wrapped_key, wrapContext(row));
  }

  function remember(row: PiiKeysTable): CachedKey {
    const entry = { keyId: row.id, key: unwrap(row), loadedAt: clock() };
    byUser.set(row.user_id, entry);
    byId.set(row.id, { key: entry.key, loadedAt: entry.loadedAt });
    return entry;
  }

  /**
   * The keys of `userIds` for sealing inside `tx`, made where missing. Keys made here are not cached:
   * the transaction may yet roll back, and a cached key whose row never committed would seal values
   * nobody could open. They are read (and cached) on their next use, once committed.
   */
  async function keysFor(
    tx: Kysely<DB>,
    userIds: string[],
  ): Promise<Map<string, { keyId: string; key: Buffer }>> {
    const keys = new Map<string, { keyId: string; key: Buffer }>();
    const missing: string[] = [];
    for (const userId of new Set(userIds)) {
      const cached = byUser.get(userId);
      if (cached && fresh(cached.loadedAt)) keys.set(userId, cached);
      else missing.push(userId);
    }
    if (missing.length === 0) return keys;
    for (const row of await tx
      .selectFrom('audit_pii_keys')
      .selectAll()
      .where('user_id', 'in', missing)
      .execute())
      keys.set(row.user_id, remember(row));
    const absent = missing.filter((userId) => !keys.has(userId));
    if (absent.length === 0) return keys;
    const existing = new Set(
      (await tx.selectFrom('users').select('id').where('id', 'in', absent).execute()).map((row) => row.id),
    );
    for (const subject of absent) if (subject.startsWith('email:')) existing.add(subject);
    for (const userId of absent) {
      const key = randomBytes(32);
      const keyId = newId('pik', clock());
      if (!existing.has(userId)) {
        // No such person: sealed under a key nobody keeps.
        keys.set(userId, { keyId, key });
        continue;
      }
      const row: PiiKeysTable = {
        user_id: userId,
        id: keyId,
        wrapped_key: provider.wrap(key, wrapContext({ id: keyId, user_id: userId })),
        master_key_id: provider.currentKeyId(),
        created_at: clock(),
      };
      const inserted = await tx
        .insertInto('audit_pii_keys')
        .values(row)
        .onConflict((oc) => oc.column('user_id').doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 1) {
        keys.set(userId, { keyId, key });
      } else {
        // Another instance made this person's key first: use theirs.
        const winner = await tx
          .selectFrom('audit_pii_keys')
          .selectAll()
          .where('user_id', '=', userId)
          .executeTakeFirstOrThrow();
        keys.set(userId, remember(winner));
      }
    }
    return keys;
  }

  /** The keys named by sealed values, by id; `null` for a key that no longer exists (erased). */
  async function keysById(ids: string[]): Promise<Map<string, Buffer | null>> {
    const keys = new Map<string, Buffer | null>();
    const missing: string[] = [];
    for (const id of new Set(ids)) {
      const cached = byId.get(id);
      if (cached && fresh(cached.loadedAt)) keys.set(id, cached.key);
      else missing.push(id);
    }
    if (missing.length > 0) {
      if (byId.size > MAX_REMEMBERED) byId.clear();
      for (const row of await db
        .selectFrom('audit_pii_keys')
        .selectAll()
        .where('id', 'in', missing)
        .execute())
        keys.set(row.id, remember(row).key);
      for (const id of missing) {
        if (!keys.has(id)) {
          keys.set(id, null);
          byId.set(id, { key: null, loadedAt: clock() });
        }
      }
    }
    return keys;
  }

  function forget(userId: string, keyId?: string): void {
    const cached = byUser.get(userId);
    byUser.delete(userId);
    for (const id of [cached?.keyId, keyId]) if (id) byId.set(id, { key: null, loadedAt: clock() });
  }

  function keyIdOf(value: string): string | undefined {
    try {
      return sealedKeyId(value);
    } catch {
      return undefined;
    }
  }

  return {
    /**
     * Seals the personal fields of events about to be hashed and appended in `tx` (the append's own
     * transaction: a key made here commits with the events it sealed, or not at all).
     */
    async sealRows<R extends Unhashed>(tx: Kysely<DB>, rows: R[]): Promise<R[]> {
      const keyIds = rows.flatMap((row) =>
        row.actor_type === 'api_key' && row.actor_id ? [row.actor_id] : [],
      );
      const apiKeyOwners = new Map(
        keyIds.length === 0
          ? []
          : (
              await tx
                .selectFrom('api_keys')
                .select(['id', 'user_id'])
                .where('id', 'in', [...new Set(keyIds)])
                .execute()
            ).map((key) => [key.id, key.user_id]),
      );
      const owners = rows.map((row) =>
        ownersOf(
          row,
          row.actor_type === 'api_key' && row.actor_id ? apiKeyOwners.get(row.actor_id) : undefined,
          emailSubject,
        ),
      );
      const userIds = owners.flatMap((o) => Object.values(o));
      if (userIds.length === 0) return rows;
      const keys = await keysFor(tx, userIds);
      return rows.map((row, i) => {
        const sealed = { ...row };
        for (const column of SEALABLE) {
          const owner = owners[i]![column];
          const value = row[column];
          if (!owner || value === null) continue;
          const { keyId, key } = keys.get(owner)!;
          sealed[column] = sealUnder(key, keyId, value, fieldContext(row.id, column));
        }
        return sealed;
      });
    },

    /**
     * The events as people read them (API, console, exports): sealed fields opened while their
     * person's key exists, {@link ERASED} once it does not. Plain fields (older events, events with no
     * person) are shown as stored.
     */
    async openRows(rows: AuditEventRow[]): Promise<AuditEventRow[]> {
      const ids = rows.flatMap((row) =>
        SEALABLE.flatMap((column) =>
          sealedByRule(row, column) ? [keyIdOf(row[column] as string) ?? ''] : [],
        ),
      );
      if (ids.length === 0) return rows;
      const keys = await keysById(ids);
      return rows.map((row) => {
        const opened = { ...row };
        for (const column of SEALABLE) {
          const value = row[column];
          if (!sealedByRule(row, column) || value === null) continue;
          const key = keys.get(keyIdOf(value) ?? '');
          try {
            opened[column] = key
              ? openUnder(key, value, fieldContext(row.id, column)).toString('utf8')
              : ERASED;
          } catch (error) {
            // Tampered or moved: shown as gone, never as someone else's data; the chain reports the edit.
            if (!(error instanceof SealedValueError)) throw error;
            opened[column] = ERASED;
          }
        }
        return opened;
      });
    },

    /** Whether this person has a PII key (what erasure deletes). */
    async hasKey(userId: string, from: Kysely<DB> = db): Promise<boolean> {
      return (
        (await from
          .selectFrom('audit_pii_keys')
          .select('id')
          .where('user_id', '=', userId)
          .executeTakeFirst()) !== undefined
      );
    },

    /**
     * Crypto-shreds a person's PII keys (their account's, and their address's from before they had
     * one) inside the erasure's transaction; forgotten here at once. Returns how many were deleted.
     */
    async shred(tx: Kysely<DB>, person: { userId: string; email: string }): Promise<number> {
      // The unsalted SHA-256 holder of keys made before the HMAC one: still shredded with the account.
      const legacy = `email:${createHash('sha256').update(person.email.trim().toLowerCase()).digest('hex')}`;
      const subjects = [person.userId, emailSubject(person.email), legacy];
      const rows = await tx
        .selectFrom('audit_pii_keys')
        .select(['id', 'user_id'])
        .where('user_id', 'in', subjects)
        .execute();
      await tx.deleteFrom('audit_pii_keys').where('user_id', 'in', subjects).execute();
      for (const subject of subjects) forget(subject, rows.find((row) => row.user_id === subject)?.id);
      return rows.length;
    },

    forget,

    /**
     * Wraps again, under the current master key, up to `limit` PII keys that another master key wraps,
     * taking them in id order after `after` (SEC-2: `bulwark keys rotate`/`rewrap`). Without this, once
     * an operator removes an old master key from the key file every person's sealed fields would open
     * nowhere: an erasure of everyone. A row changes only if it still holds the wrapped key read here,
     * so a key erased meanwhile stays deleted (an update of a missing row writes nothing). The key
     * material is unchanged, so caches stay valid. Returns the id to continue after, or none when done.
     */
    async rewrapKeys(
      tx: Kysely<DB>,
      options: { after: string; limit: number },
    ): Promise<{ rewrapped: number; unopenable: string[]; next: string | undefined }> {
      const rows = await tx
        .selectFrom('audit_pii_keys')
        .selectAll()
        .where('master_key_id', '<>', provider.currentKeyId())
        .where('id', '>', options.after)
        .orderBy('id')
        .limit(options.limit)
        .execute();
      let rewrapped = 0;
      // A key no master key in the key file opens is passed over (and named), not a stop: one bad row
      // must not leave every key after it under the old master key.
      const unopenable: string[] = [];
      for (const row of rows) {
        let key: Buffer;
        try {
          key = unwrap(row);
        } catch (error) {
          if (!(error instanceof SealedValueError)) throw error;
          unopenable.push(row.id);
          continue;
        }
        const wrapped_key = provider.wrap(key, wrapContext(row));
        const updated = await tx
          .updateTable('audit_pii_keys')
          .set({ wrapped_key, master_key_id: sealedKeyId(wrapped_key) })
          .where('id', '=', row.id)
          .where('wrapped_key', '=', row.wrapped_key)
          .executeTakeFirst();
        rewrapped += Number(updated.numUpdatedRows);
      }
      return { rewrapped, unopenable, next: rows.length < options.limit ? undefined : rows.at(-1)!.id };
    },

    /** How many PII keys another master key than the current one still wraps (0: it alone is needed). */
    async countUnderOlderMasterKeys(): Promise<number> {
      const row = await db
        .selectFrom('audit_pii_keys')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('master_key_id', '<>', provider.currentKeyId())
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },

    /** The key holder of an address without an account (what erasing that address's account shreds). */
    emailSubject,
  };
}

export type AuditPii = ReturnType<typeof createAuditPii>;
