import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor } from '../audit/audit.types.js';
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
 * keys (and backups) may still be wrapped by them. Run `rewrapDataKeys` after it.
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

export async function rewrapDataKeys(deps: {
  dataKeys: DataKeyring;
  audit: AuditService;
  actor: AuditActor;
}) {
  // Re-wrapped and recorded together (AUD-7).
  return deps.audit.withEvents(async (trx, events) => {
    const result = await deps.dataKeys.rewrapAll(trx);
    events.push({
      actor: deps.actor,
      action: 'keys.data_keys_rewrapped',
      target: { type: 'instance', id: 'keyring' },
      outcome: 'success',
      details: result,
    });
    return result;
  });
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
