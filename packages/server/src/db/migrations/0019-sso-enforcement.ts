import type { Kysely } from 'kysely';

/**
 * "SSO required" per organization (SSO-4) with a break-glass owner (AUTH-8), and, on each session,
 * the connection it was signed in through: an organization that requires SSO admits only sessions
 * from one of its own connections, and its break-glass owner with a password and a second factor.
 * A sign-in under way may be a step-up of an existing session at the provider (MFA-5).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('orgs')
    .addColumn('sso_required', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('orgs').addColumn('break_glass_user_id', 'text').execute();
  await db.schema.alterTable('sessions').addColumn('sso_connection_id', 'text').execute();
  // The provider's signed ID token said the person proved a second factor there (amr "mfa").
  await db.schema
    .alterTable('sessions')
    .addColumn('second_factor_at_provider', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('sso_sign_ins').addColumn('step_up_session_id', 'text').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('sessions').dropColumn('second_factor_at_provider').execute();
  await db.schema.alterTable('sso_sign_ins').dropColumn('step_up_session_id').execute();
  await db.schema.alterTable('sessions').dropColumn('sso_connection_id').execute();
  await db.schema.alterTable('orgs').dropColumn('break_glass_user_id').execute();
  await db.schema.alterTable('orgs').dropColumn('sso_required').execute();
}
