import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor } from '../audit/audit.types.js';
import type { AuditPii } from '../audit/audit-pii.js';
import type { Database } from '../db/database.js';
import { type DataKeyring, type KeyScope, orgScope } from './data-keyring.js';
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
 * `piiKeys.left` (0) tells. The data keys are re-wrapped in one transaction with one
 * `keys.data_keys_rewrapped` event, then the PII keys in batches, each in its own transaction with its
 * own event (AUD-7). The events hold counts, never a key. A PII key no master key in the file opens is
 * passed over and named in `piiKeys.unopenable`. Interrupted, it is resumed by running it again: only
 * keys still under an older master key are taken. An erased person's key is never brought back.
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
  // The data keys first, on their own: a PII key that will not open cannot hold them back.
  const dataKeys = await deps.audit.withEvents(async (trx, events) => {
    const result = await deps.dataKeys.rewrapAll(trx);
    events.push(event({ ...result }));
    return result;
  });
  let rewrapped = 0;
  const unopenable: string[] = [];
  let after: string | undefined = '';
  while (after !== undefined) {
    const from: string = after;
    const batch = await deps.audit.withEvents(async (trx, events) => {
      const result = await deps.pii.rewrapKeys(trx, { after: from, limit });
      if (result.rewrapped > 0 || result.unopenable.length > 0)
        events.push(
          event({ piiKeysRewrapped: result.rewrapped, piiKeysUnopenable: result.unopenable.length }),
        );
      return result;
    });
    rewrapped += batch.rewrapped;
    unopenable.push(...batch.unopenable);
    after = batch.next;
  }
  return {
    ...dataKeys,
    piiKeys: { rewrapped, unopenable, left: await deps.pii.countUnderOlderMasterKeys() },
  };
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
