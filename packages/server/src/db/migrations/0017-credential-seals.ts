import type { Kysely, Migration } from 'kysely';
import {
  CREDENTIAL_KINDS,
  type CredentialKind,
  createCredentialSeals,
} from '../../identity/credential-seals.js';
import { passwordContext } from '../../identity/passwords.js';
import { createDataKeyring } from '../../secrets/data-keyring.js';
import { createDataKeysStore } from '../../secrets/data-keys.store.js';
import type { MasterKeyProvider } from '../../secrets/key-provider.js';
import type { DB } from '../schema.js';

/** What sealing the credentials an upgrade finds needs: the master key, which only a start has. */
export interface CredentialSealingContext {
  masterKeys: MasterKeyProvider;
  clock: () => number;
  /** Told how many of each were sealed, so the start can record it. */
  onSealed?: (counts: Record<string, number>) => void;
}

const TABLE_OF: Record<CredentialKind, keyof DB> = {
  session: 'sessions',
  'api-key': 'api_keys',
  'live-ticket': 'live_tickets',
  'recovery-code': 'recovery_codes',
  'mfa-factor': 'mfa_factors',
  invitation: 'invitations',
  'registration-token': 'registration_tokens',
};

/**
 * Credential verifiers under the keyring (identity/credential-seals.ts, identity/passwords.ts): a seal
 * column on every table of credentials, and password hashes sealed to their users.
 *
 * The rows already here are sealed now, in this migration's transaction, so that nobody is signed
 * out and no key or password stops working at the upgrade. That vouches for what the database holds
 * at this moment, once: the columns this migration adds make it fail if it were ever run again, so a
 * row written later is never sealed by it. (Live tickets last seconds: they are dropped instead.)
 */
export function credentialSealsMigration(context: CredentialSealingContext | undefined): Migration {
  return {
    async up(untyped: Kysely<unknown>): Promise<void> {
      const db = untyped as Kysely<DB>;
      for (const table of Object.values(TABLE_OF))
        await db.schema
          .alterTable(table)
          .addColumn('seal', 'text', (c) => c.notNull().defaultTo(''))
          .execute();
      await db.deleteFrom('live_tickets').execute();

      const rows = {
        passwords: await db
          .selectFrom('users')
          .select(['id', 'password_hash'])
          .where('password_hash', 'is not', null)
          .execute(),
        session: await db.selectFrom('sessions').selectAll().where('revoked_at', 'is', null).execute(),
        'api-key': await db.selectFrom('api_keys').selectAll().where('revoked_at', 'is', null).execute(),
        'recovery-code': await db.selectFrom('recovery_codes').selectAll().execute(),
        'mfa-factor': await db.selectFrom('mfa_factors').selectAll().execute(),
        invitation: await db.selectFrom('invitations').selectAll().execute(),
        'registration-token': await db.selectFrom('registration_tokens').selectAll().execute(),
      };
      const total = Object.values(rows).reduce((sum, list) => sum + list.length, 0);
      if (total === 0) return;
      if (!context)
        throw new Error(
          'this database holds credentials to seal under the master key: start the server to upgrade it',
        );
      const dataKeys = createDataKeyring({
        store: createDataKeysStore(db),
        provider: context.masterKeys,
        clock: context.clock,
      });
      const seals = createCredentialSeals({ dataKeys });

      for (const user of rows.passwords) {
        const sealed = await dataKeys.seal('instance', user.password_hash!, passwordContext(user.id));
        await db.updateTable('users').set({ password_hash: sealed }).where('id', '=', user.id).execute();
      }
      for (const row of rows.session)
        await db
          .updateTable('sessions')
          .set({ seal: await seals.seal('session', row) })
          .where('id', '=', row.id)
          .execute();
      for (const row of rows['api-key'])
        await db
          .updateTable('api_keys')
          .set({ seal: await seals.seal('api-key', row) })
          .where('id', '=', row.id)
          .execute();
      for (const row of rows['recovery-code'])
        await db
          .updateTable('recovery_codes')
          .set({ seal: await seals.seal('recovery-code', row) })
          .where('user_id', '=', row.user_id)
          .where('code_hash', '=', row.code_hash)
          .execute();
      for (const row of rows['mfa-factor'])
        await db
          .updateTable('mfa_factors')
          .set({ seal: await seals.seal('mfa-factor', row) })
          .where('id', '=', row.id)
          .execute();
      for (const row of rows.invitation)
        await db
          .updateTable('invitations')
          .set({ seal: await seals.seal('invitation', row) })
          .where('id', '=', row.id)
          .execute();
      for (const row of rows['registration-token'])
        await db
          .updateTable('registration_tokens')
          .set({ seal: await seals.seal('registration-token', row) })
          .where('id', '=', row.id)
          .execute();
      context.onSealed?.(Object.fromEntries(Object.entries(rows).map(([kind, list]) => [kind, list.length])));
    },

    async down(untyped: Kysely<unknown>): Promise<void> {
      for (const table of Object.values(TABLE_OF))
        await untyped.schema.alterTable(table).dropColumn('seal').execute();
    },
  };
}

/** Every kind has its table here: a kind added without one fails to compile above. */
export const SEALED_TABLES = CREDENTIAL_KINDS.map((kind) => TABLE_OF[kind]);
