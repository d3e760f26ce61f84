import { newId } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import type { DB } from '../db/schema.js';
import { AppError, NotFoundError } from '../errors.js';
import { type DataKeyring, orgScope } from './data-keyring.js';
import { createSecretsStore, type SecretRow } from './secrets.store.js';

/**
 * Organization secrets (SEC-3). Values are write-only to people: they are sealed by the
 * organization's data key before anything is stored, and no method here returns one. Each value is a
 * new version; the audit trail names the secret and the version, never the value.
 */

const secretTarget = (secret: Pick<SecretRow, 'id' | 'name'>) => ({
  type: 'secret',
  id: secret.id,
  display: secret.name,
});

/** Binds a sealed value to its organization, secret and version: moved anywhere else, it does not open. */
export const secretValueContext = (orgId: string, secretId: string, version: number) =>
  `secrets/${orgId}/${secretId}/v${version}`;

/** A secret version granted to a command: what the command row keeps instead of a value. */
export interface SecretGrant {
  name: string;
  secretId: string;
  version: number;
}

const nameTaken = () => new AppError(409, 'secret_exists', 'A secret with this name exists.');
const notFound = () => new NotFoundError('No such secret.');

export function createSecretsService(deps: {
  db: Kysely<DB>;
  transact: Transact;
  dataKeys: DataKeyring;
  clock: () => number;
}) {
  const { db, transact, dataKeys, clock } = deps;
  const seal = (orgId: string, secretId: string, version: number, value: string) =>
    dataKeys.seal(orgScope(orgId), value, secretValueContext(orgId, secretId, version));

  return {
    list: (orgId: string) => createSecretsStore(db).list(orgId),

    async create(
      caller: Caller,
      input: { name: string; description: string; value: string },
    ): Promise<SecretRow> {
      const now = clock();
      const id = newId('sec', now);
      // Sealed before the transaction: the data key may need creating, on a connection of its own.
      const value_sealed = await seal(caller.org.id, id, 1, input.value);
      const created = transact(async (trx, events) => {
        const store = createSecretsStore(trx);
        if (await store.findByName(caller.org.id, input.name)) throw nameTaken();
        const row: SecretRow = {
          id,
          org_id: caller.org.id,
          name: input.name,
          description: input.description,
          current_version: 1,
          created_by: caller.userId,
          created_at: now,
          updated_by: caller.userId,
          updated_at: now,
        };
        await store.insert(row, {
          secret_id: id,
          org_id: caller.org.id,
          version: 1,
          value_sealed,
          created_by: caller.userId,
          created_at: now,
        });
        events.push(callerEvent(caller, 'secret.created', secretTarget(row), { version: 1 }));
        return row;
      });
      return created.catch(async (error: unknown) => {
        // Two requests for one name at once (PostgreSQL runs both transactions): the unique index
        // lets one in, and the other gets the same answer as if it had come second.
        if (
          !(error instanceof AppError) &&
          (await createSecretsStore(db).findByName(caller.org.id, input.name))
        )
          throw nameTaken();
        throw error;
      });
    },

    /** Stores a new value as the next version; earlier versions stay, for commands already signed with them. */
    async addVersion(caller: Caller, secretId: string, value: string): Promise<SecretRow> {
      const current = await createSecretsStore(db).find(caller.org.id, secretId);
      if (!current) throw notFound();
      const now = clock();
      const version = current.current_version + 1;
      const value_sealed = await seal(caller.org.id, secretId, version, value);
      return transact(async (trx, events) => {
        const stored = await createSecretsStore(trx).addVersion(current, {
          secret_id: secretId,
          org_id: caller.org.id,
          version,
          value_sealed,
          created_by: caller.userId,
          created_at: now,
        });
        if (!stored)
          throw new AppError(
            409,
            'secret_changed',
            'The secret changed meanwhile; send the new value again.',
          );
        const updated = {
          ...current,
          current_version: version,
          updated_by: caller.userId,
          updated_at: now,
        };
        events.push(callerEvent(caller, 'secret.updated', secretTarget(updated), { version }));
        return updated;
      });
    },

    /** The current versions of the secrets `names` names, or 409 naming those the organization lacks. */
    async grants(orgId: string, names: readonly string[]): Promise<SecretGrant[]> {
      const byName = new Map((await createSecretsStore(db).list(orgId)).map((s) => [s.name, s]));
      const missing = names.filter((name) => !byName.has(name));
      if (missing.length > 0)
        throw new AppError(
          409,
          'secret_missing',
          `The action needs ${missing.length === 1 ? 'a secret' : 'secrets'} this organization does not have: ${missing.join(', ')}.`,
        );
      return names.map((name) => {
        const secret = byName.get(name)!;
        return { name, secretId: secret.id, version: secret.current_version };
      });
    },

    /**
     * The values of granted versions, by name, for sealing to an agent; undefined when one has been
     * deleted since. A value still sealed under a retired data key is sealed again on the way.
     */
    async valuesOf(
      orgId: string,
      grants: readonly SecretGrant[],
    ): Promise<Record<string, string> | undefined> {
      const store = createSecretsStore(db);
      const values: Record<string, string> = {};
      for (const grant of grants) {
        const row = await store.version(grant.secretId, grant.version);
        if (!row) return undefined;
        const context = secretValueContext(orgId, grant.secretId, grant.version);
        const opened = await dataKeys.open(orgScope(orgId), row.value_sealed, context);
        if (opened.stale)
          await store.reseal(row, await dataKeys.seal(orgScope(orgId), opened.plaintext, context));
        values[grant.name] = opened.plaintext.toString('utf8');
      }
      return values;
    },

    delete(caller: Caller, secretId: string): Promise<void> {
      return transact(async (trx, events) => {
        const store = createSecretsStore(trx);
        const secret = await store.find(caller.org.id, secretId);
        if (!secret) throw notFound();
        await store.delete(secretId);
        events.push(
          callerEvent(caller, 'secret.deleted', secretTarget(secret), { versions: secret.current_version }),
        );
      });
    },
  };
}

export type SecretsService = ReturnType<typeof createSecretsService>;
