import type { Kysely, Migration } from 'kysely';
import { type CredentialKind, createCredentialSeals } from '../../identity/credential-seals.js';
import { passwordContext } from '../../identity/passwords.js';
import { createDataKeyring } from '../../secrets/data-keyring.js';
import { createDataKeysStore } from '../../secrets/data-keys.store.js';
import type { MasterKeyProvider } from '../../secrets/key-provider.js';
import type { DB } from '../schema.js';

/** What sealing the credentials an upgrade finds needs: the master key, which only a start has. */
export interface CredentialSealingContext {
  masterKeys: MasterKeyProvider;
  clock: () => number;
}

/** The tables this migration seals: every kind of credential that existed when it was written. */
const TABLE_OF: Record<Exclude<CredentialKind, 'sso-identity' | 'scim-token'>, keyof DB> = {
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
 * The live rows already here are sealed now, in this migration's transaction, so that nobody is
 * signed out and no key or password stops working at the upgrade; spent ones (used codes, accepted
 * invitations, revoked keys) are left unsealed, so clearing a field cannot revive them. That vouches
 * for what the database holds at this moment, once: the columns this migration adds make it fail if
 * it were ever run again, so a row written later is never sealed by it. (Live tickets last seconds:
 * they are dropped instead.) What was sealed is left in `upgrade_notes`, in the same transaction,
 * for the next start to record in the audit log (db/upgrade-notes.ts).
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
      await db.schema
        .createTable('upgrade_notes')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('details', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('recorded_at', 'bigint')
        .execute();

      const rows = {
        // Users whose password verifier is sealed.
        'user-password': await db
          .selectFrom('users')
          .select(['id', 'password_hash'])
          .where('password_hash', 'is not', null)
          .execute(),
        session: await db.selectFrom('sessions').selectAll().where('revoked_at', 'is', null).execute(),
        'api-key': await db.selectFrom('api_keys').selectAll().where('revoked_at', 'is', null).execute(),
        'recovery-code': await db
          .selectFrom('recovery_codes')
          .selectAll()
          .where('used_at', 'is', null)
          .execute(),
        'mfa-factor': await db.selectFrom('mfa_factors').selectAll().execute(),
        invitation: await db
          .selectFrom('invitations')
          .selectAll()
          .where('accepted_at', 'is', null)
          .where('revoked_at', 'is', null)
          .execute(),
        'registration-token': await db
          .selectFrom('registration_tokens')
          .selectAll()
          .where('revoked_at', 'is', null)
          .whereRef('uses', '<', 'uses_allowed')
          .execute(),
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

      for (const user of rows['user-password']) {
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
      // By table, as values: the audit guard rightly redacts keys that name a key, code or password.
      const tableOf = (kind: string) =>
        kind === 'user-password' ? 'users' : TABLE_OF[kind as keyof typeof TABLE_OF];
      const sealed = Object.entries(rows).map(([kind, list]) => ({
        table: tableOf(kind),
        rows: list.length,
      }));
      await db
        .insertInto('upgrade_notes')
        .values({
          id: '0017-credential-seals',
          details: JSON.stringify({ sealed }),
          created_at: context.clock(),
          recorded_at: null,
        })
        .execute();
    },

    async down(): Promise<void> {
      // Password verifiers are sealed now: without the seals, nobody could sign in.
      throw new Error('0017-credential-seals cannot be undone; restore a backup from before it instead');
    },
  };
}
