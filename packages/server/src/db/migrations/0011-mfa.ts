import type { Kysely } from 'kysely';

/**
 * Multi-factor authentication (MFA-1 to MFA-4): factors (TOTP seeds sealed by the instance data key),
 * recovery codes (hashes only), the state of a sign-in waiting for its second factor, and each
 * organization's "MFA required" policy, on by default.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('mfa_factors')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('secret_sealed', 'text')
    .addColumn('last_used_step', 'bigint')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('confirmed_at', 'bigint')
    .addColumn('last_used_at', 'bigint')
    .execute();
  await db.schema
    .createIndex('mfa_factors_user')
    .on('mfa_factors')
    .columns(['user_id', 'confirmed_at'])
    .execute();
  await db.schema
    .createTable('recovery_codes')
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('code_hash', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('used_at', 'bigint')
    .addPrimaryKeyConstraint('recovery_codes_pk', ['user_id', 'code_hash'])
    .execute();
  await db.schema
    .alterTable('sessions')
    .addColumn('second_factor_pending', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema
    .alterTable('orgs')
    .addColumn('mfa_required', 'integer', (c) => c.notNull().defaultTo(1))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('orgs').dropColumn('mfa_required').execute();
  await db.schema.alterTable('sessions').dropColumn('second_factor_pending').execute();
  await db.schema.dropTable('recovery_codes').execute();
  await db.schema.dropTable('mfa_factors').execute();
}
