import type { Kysely } from 'kysely';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor } from '../audit/audit.types.js';
import type { AuditPii } from '../audit/audit-pii.js';
import type { Database } from '../db/database.js';
import type { DB } from '../db/schema.js';
import { type DataKeyring, type KeyScope, orgScope } from './data-keyring.js';
import { SealedValueError } from './keyring.js';
import { generateMasterKey, loadMasterKeys, writeMasterKeyFile } from './master-key.js';

/**
 * `bulwark keys …` (SEC-2), run on the server's host while servers run. Each step is audited on the
 * instance chain with the key ids involved, never a key.
 */

export class KeyRotationError extends Error {}

/**
 * Puts a new master key at the top of the key file; the previous ones stay below it, because data
 * keys, PII keys (and backups) may still be wrapped by them. Run `rewrapDataKeys` after it.
 */
export function addMasterKey(options: { fromEnv: Buffer | undefined; file: string }): void {
  if (options.fromEnv)
    throw new KeyRotationError(
      'the master key comes from BULWARK_MASTER_KEY, so this command cannot rotate it: unset it to use the key file, or rotate it where it is kept',
    );
  const { keys } = loadMasterKeys(options);
  writeMasterKeyFile(options.file, {
    current: generateMasterKey(),
    previous: [keys.current, ...keys.previous],
  });
}

/** PII keys re-wrapped per transaction: a rotation never holds the database's write lock for long. */
export const PII_KEYS_PER_BATCH = 500;

/**
 * Wraps every data key, and every person's PII key (audit-pii.ts), not yet under the current master
 * key again (SEC-2, DATA-2): afterwards only the current master key is needed to open them, as
 * `piiKeys.left` (0) tells. The data keys and the first batch of PII keys are re-wrapped in one
 * transaction with one `keys.data_keys_rewrapped` event; each further batch in its own, with its own
 * event (AUD-7). The events hold counts, never a key. Interrupted, it is resumed by running it again:
 * only keys still under an older master key are taken. An erased person's key is never brought back.
 */
export async function rewrapDataKeys(deps: {
  dataKeys: DataKeyring;
  pii: AuditPii;
  audit: AuditService;
  actor: AuditActor;
  /** PII keys per transaction; {@link PII_KEYS_PER_BATCH} unless a test wants several batches. */
  batchSize?: number;
}) {
  const limit = deps.batchSize ?? PII_KEYS_PER_BATCH;
  const event = (details: Record<string, number>) => ({
    actor: deps.actor,
    action: 'keys.data_keys_rewrapped' as const,
    target: { type: 'instance', id: 'keyring' },
    outcome: 'success' as const,
    details,
  });
  const first = await deps.audit.withEvents(async (trx, events) => {
    const dataKeys = await deps.dataKeys.rewrapAll(trx);
    const piiKeys = await rewrapPiiBatch(deps.pii, trx, '', limit);
    events.push(event({ ...dataKeys, piiKeysRewrapped: piiKeys.rewrapped }));
    return { dataKeys, piiKeys };
  });
  let piiRewrapped = first.piiKeys.rewrapped;
  let next = first.piiKeys.next;
  while (next !== undefined) {
    const after = next;
    const batch = await deps.audit.withEvents(async (trx, events) => {
      const result = await rewrapPiiBatch(deps.pii, trx, after, limit);
      if (result.rewrapped > 0) events.push(event({ piiKeysRewrapped: result.rewrapped }));
      return result;
    });
    piiRewrapped += batch.rewrapped;
    next = batch.next;
  }
  return {
    ...first.dataKeys,
    piiKeys: { rewrapped: piiRewrapped, left: await deps.pii.countUnderOlderMasterKeys() },
  };
}

/** One batch of PII keys; a key under a master key the key file no longer holds is named, with what to do. */
async function rewrapPiiBatch(pii: AuditPii, trx: Kysely<DB>, after: string, limit: number) {
  try {
    return await pii.rewrapKeys(trx, { after, limit });
  } catch (error) {
    if (!(error instanceof SealedValueError)) throw error;
    throw new KeyRotationError(error.message);
  }
}

/** The scopes `--org <slug>` or `--all` name: each organization's, and the instance's for `--all`. */
export async function scopesOf(
  db: Database['db'],
  selection: { org?: string; all?: boolean },
): Promise<KeyScope[]> {
  if (selection.org) {
    const org = await db.selectFrom('orgs').select('id').where('slug', '=', selection.org).executeTakeFirst();
    if (!org) throw new KeyRotationError(`no organization "${selection.org}"`);
    return [orgScope(org.id)];
  }
  if (!selection.all) throw new KeyRotationError('name an organization with --org <slug>, or use --all');
  const orgs = await db.selectFrom('orgs').select('id').orderBy('created_at').execute();
  return ['instance', ...orgs.map((org) => orgScope(org.id))];
}

export async function rotateDataKeys(deps: {
  dataKeys: DataKeyring;
  audit: AuditService;
  actor: AuditActor;
  scopes: KeyScope[];
}) {
  const rotated: Array<{ scope: KeyScope; keyId: string }> = [];
  for (const scope of deps.scopes) {
    const keyId = await deps.audit.withEvents(async (trx, events) => {
      const id = await deps.dataKeys.rotate(scope, trx);
      events.push({
        orgId: scope === 'instance' ? null : scope.slice('org:'.length),
        actor: deps.actor,
        action: 'keys.data_key_rotated',
        target: { type: 'data_key', id },
        outcome: 'success',
        details: { scope },
      });
      return id;
    });
    rotated.push({ scope, keyId });
  }
  return rotated;
}
