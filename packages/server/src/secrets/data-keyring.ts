import { hkdfSync, randomBytes } from 'node:crypto';
import { newId } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.js';
import { createDataKeysStore, type DataKeyRow, type DataKeysStore } from './data-keys.store.js';
import type { MasterKeyProvider } from './key-provider.js';
import { openUnder, SealedValueError, sealedKeyId, sealUnder } from './keyring.js';

/**
 * Envelope encryption (SEC-1, SEC-2, DATA-1): every sensitive value at rest is sealed by a data key
 * of its scope (one per organization, one for the instance), and data keys are stored wrapped by the
 * master key. A value names its data key; the data key names its master key.
 *
 * - Rotating the master key re-wraps the data keys (a few rows), never the values, so it runs online.
 * - Rotating a scope's data key retires the old one; values sealed by it still open, and `open` says
 *   when a value should be sealed again under the active key, which the owner of the value does on
 *   its next write or read (lazy re-encryption).
 * - A data key opens only values of its own scope: a value copied from another organization's row
 *   fails, as does one moved to another row or purpose (the context is authenticated).
 */

export type KeyScope = 'instance' | `org:${string}`;

export const orgScope = (orgId: string): KeyScope => `org:${orgId}`;

const ACTIVE_KEY_RECHECK_MS = 60_000;

const wrapContext = (row: Pick<DataKeyRow, 'id' | 'scope'>) => `data_keys/${row.id}/${row.scope}`;

/** What a MAC under derived keys needs of the keyring (secrets/row-seal.ts). */
export interface DataKeyLookup {
  activeKeyId(scope: KeyScope): Promise<string>;
  deriveKeyFrom(scope: KeyScope, keyId: string, purpose: string): Promise<Buffer>;
}

export interface Opened {
  plaintext: Buffer;
  /** True when the value was sealed by a retired data key and should be sealed again. */
  stale: boolean;
}

export function createDataKeyring(deps: {
  store: DataKeysStore;
  provider: MasterKeyProvider;
  clock: () => number;
}) {
  const { store, provider, clock } = deps;
  // Unwrapped keys by id, for the life of the process; a data key never changes once made.
  const unwrapped = new Map<string, { key: Buffer; scope: string }>();
  // The active key id per scope. Re-read now and then: another process (`bulwark keys rotate-data`,
  // another instance) may have rotated it.
  const active = new Map<string, { id: Promise<string>; loadedAt: number }>();

  function unwrap(row: DataKeyRow): Buffer {
    let entry = unwrapped.get(row.id);
    if (!entry) {
      try {
        entry = { key: provider.unwrap(row.wrapped_key, wrapContext(row)), scope: row.scope };
      } catch (error) {
        throw new SealedValueError(`data key ${row.id} (${row.scope}): ${(error as Error).message}`);
      }
      unwrapped.set(row.id, entry);
    }
    return entry.key;
  }

  function newKeyRow(scope: KeyScope): DataKeyRow {
    const id = newId('dek', clock());
    const key = randomBytes(32);
    const row: DataKeyRow = {
      id,
      scope,
      status: 'active',
      wrapped_key: provider.wrap(key, wrapContext({ id, scope })),
      master_key_id: provider.currentKeyId(),
      created_at: clock(),
      retired_at: null,
    };
    unwrapped.set(id, { key, scope });
    return row;
  }

  async function loadActive(scope: KeyScope): Promise<string> {
    const existing = await store.activeOf(scope);
    if (existing) return existing.id;
    const candidate = newKeyRow(scope);
    if (await store.insertActive(candidate)) return candidate.id;
    unwrapped.delete(candidate.id);
    const winner = await store.activeOf(scope);
    if (!winner) throw new SealedValueError(`no active data key for ${scope} after creating one`);
    return winner.id;
  }

  // The active key ids already read, for `within`: a read still under way may be waiting for the
  // very connection a transaction holds.
  const knownActive = new Map<string, string>();

  function activeKeyId(scope: KeyScope): Promise<string> {
    const cached = active.get(scope);
    if (cached && clock() - cached.loadedAt < ACTIVE_KEY_RECHECK_MS) return cached.id;
    const id = loadActive(scope);
    active.set(scope, { id, loadedAt: clock() });
    id.then(
      (known) => knownActive.set(scope, known),
      () => active.delete(scope),
    );
    return id;
  }

  async function keyById(id: string, scope: KeyScope, from: DataKeysStore = store): Promise<Buffer> {
    const cached = unwrapped.get(id);
    if (cached) {
      if (cached.scope !== scope) throw new SealedValueError(`data key ${id} belongs to another scope`);
      return cached.key;
    }
    const row = await from.byId(id);
    if (!row) throw new SealedValueError(`sealed by unknown data key ${id}`);
    if (row.scope !== scope) throw new SealedValueError(`data key ${id} belongs to another scope`);
    return unwrap(row);
  }

  return {
    async seal(scope: KeyScope, plaintext: Buffer | string, context: string): Promise<string> {
      const id = await activeKeyId(scope);
      return sealUnder(await keyById(id, scope), id, plaintext, context);
    },

    async open(scope: KeyScope, sealed: string, context: string): Promise<Opened> {
      const id = sealedKeyId(sealed);
      const plaintext = openUnder(await keyById(id, scope), sealed, context);
      return { plaintext, stale: id !== (await activeKeyId(scope)) };
    },

    /**
     * A 256-bit key for one purpose within a scope (HKDF-SHA-256 of its data key at the time), for
     * keys that must survive a master-key rotation, such as the CSRF token key.
     */
    async deriveKey(scope: KeyScope, purpose: string): Promise<Buffer> {
      const key = await keyById(await activeKeyId(scope), scope);
      return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `bulwark/${purpose}`, 32));
    },

    /**
     * {@link deriveKey} from a named data key of the scope, retired or not: for a MAC that must still
     * check after the data key rotates, stored beside the id of the key it was made with.
     */
    async deriveKeyFrom(scope: KeyScope, keyId: string, purpose: string): Promise<Buffer> {
      const key = await keyById(keyId, scope);
      return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `bulwark/${purpose}`, 32));
    },

    /** The id of the scope's active data key. */
    activeKeyId,

    /**
     * Key lookups for work inside `trx`: what is not in memory is read through the transaction, never
     * beside it (on SQLite's one connection a read beside an open transaction would wait for it
     * forever). Nothing read here is remembered as the active key, as the transaction may roll back;
     * a scope without an active key is refused rather than given one here.
     */
    within(trx: Kysely<DB>): DataKeyLookup {
      const through = createDataKeysStore(trx);
      return {
        async activeKeyId(scope: KeyScope): Promise<string> {
          const known = knownActive.get(scope);
          if (known) return known;
          const row = await through.activeOf(scope);
          if (!row) throw new SealedValueError(`no active data key for ${scope}`);
          return row.id;
        },
        async deriveKeyFrom(scope: KeyScope, keyId: string, purpose: string): Promise<Buffer> {
          const key = await keyById(keyId, scope, through);
          return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `bulwark/${purpose}`, 32));
        },
      };
    },

    /**
     * Retires the scope's active data key and makes a new one (SEC-2); what it sealed still opens.
     * Given `trx`, the change is made in it (to commit with its audit event) and the active key is
     * read again once needed, as the transaction may yet roll back.
     */
    async rotate(scope: KeyScope, trx?: Kysely<DB>): Promise<string> {
      const next = newKeyRow(scope);
      if (trx) {
        await createDataKeysStore(trx).retireAndInsert(scope, next, clock());
        active.delete(scope);
        knownActive.delete(scope);
      } else {
        await store.replaceActive(scope, next, clock());
        active.set(scope, { id: Promise.resolve(next.id), loadedAt: clock() });
        knownActive.set(scope, next.id);
      }
      return next.id;
    },

    /**
     * Wraps every data key not yet under the current master key again (SEC-2). Safe while servers
     * run: a row changes only if nobody changed it meanwhile, and a server holds its unwrapped keys.
     * Given `trx`, the rows are changed in it.
     */
    async rewrapAll(trx?: Kysely<DB>): Promise<{ rewrapped: number; alreadyCurrent: number }> {
      const target = trx ? createDataKeysStore(trx) : store;
      let rewrapped = 0;
      let alreadyCurrent = 0;
      for (const row of await target.list()) {
        if (sealedKeyId(row.wrapped_key) === provider.currentKeyId()) {
          alreadyCurrent++;
          continue;
        }
        const key = unwrap(row);
        const wrapped_key = provider.wrap(key, wrapContext(row));
        const changed = await target.rewrap(row.id, row.wrapped_key, {
          wrapped_key,
          master_key_id: sealedKeyId(wrapped_key),
        });
        if (changed) rewrapped++;
        else alreadyCurrent++;
      }
      return { rewrapped, alreadyCurrent };
    },

    /** Every data key with its scope, status and master key: for `bulwark keys status`. */
    list: () => store.list(),
  };
}

export type DataKeyring = ReturnType<typeof createDataKeyring>;
