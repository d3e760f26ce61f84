import type { Kysely } from 'kysely';

/**
 * Passkeys (MFA-2): a WebAuthn credential is a second factor beside TOTP authenticators, with its
 * public key and sign counter; each ceremony's challenge is kept server-side, per session and
 * purpose, until it is used once or expires.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('mfa_factors').addColumn('credential_id', 'text').execute();
  await db.schema.alterTable('mfa_factors').addColumn('public_key', 'text').execute();
  await db.schema.alterTable('mfa_factors').addColumn('sign_count', 'bigint').execute();
  await db.schema.alterTable('mfa_factors').addColumn('transports', 'text').execute();
  // One credential belongs to one factor of one user: registering it twice is refused.
  await db.schema
    .createIndex('mfa_factors_credential')
    .on('mfa_factors')
    .column('credential_id')
    .unique()
    .execute();
  await db.schema
    .createTable('webauthn_challenges')
    .addColumn('session_id', 'text', (c) => c.notNull().references('sessions.id').onDelete('cascade'))
    .addColumn('purpose', 'text', (c) => c.notNull())
    .addColumn('challenge', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('webauthn_challenges_pk', ['session_id', 'purpose'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('webauthn_challenges').execute();
  await db.schema.dropIndex('mfa_factors_credential').execute();
  for (const column of ['transports', 'sign_count', 'public_key', 'credential_id'])
    await db.schema.alterTable('mfa_factors').dropColumn(column).execute();
}
