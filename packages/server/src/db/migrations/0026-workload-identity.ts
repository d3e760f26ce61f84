import type { Kysely } from 'kysely';

/**
 * Workload identity (SEC-4, CRYPTO-1). The issuer's signing keys get a table of their own, apart from
 * `server_keys` (one Ed25519 key per purpose): they are RS256, because the clouds' token services do
 * not accept EdDSA, and they rotate, so several live at once: the one signing, one published ahead
 * of signing, and ones kept in the JWKS after they stopped signing until tokens they signed expired.
 * `signs_from` is when a key starts signing; `retires_at` when it leaves the JWKS (null: not yet).
 *
 * A command whose action declares workload identity keeps the audience it was accepted for, sealed
 * with its request: the token minted at dispatch is for that audience, not one written in since.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('workload_identity_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('algorithm', 'text', (c) => c.notNull())
    .addColumn('public_key', 'text', (c) => c.notNull())
    .addColumn('private_key_sealed', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('signs_from', 'bigint', (c) => c.notNull())
    .addColumn('retires_at', 'bigint')
    .execute();
  await db.schema.alterTable('commands').addColumn('workload_audience', 'text').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('commands').dropColumn('workload_audience').execute();
  await db.schema.dropTable('workload_identity_keys').execute();
}
