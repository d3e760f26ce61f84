import type { Kysely } from 'kysely';

/**
 * SAML 2.0 (SSO-2): the replay cache. Every assertion taken is kept by the SHA-256 of its connection
 * and ID until it would have expired anyway; the same assertion posted again (by the browser's
 * back button, or by someone who copied it) finds its row and is refused. In the database, every
 * instance shares it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('saml_assertions')
    .addColumn('assertion_hash', 'text', (c) => c.primaryKey())
    .addColumn('connection_id', 'text', (c) =>
      c.notNull().references('sso_connections.id').onDelete('cascade'),
    )
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('saml_assertions_expiry').on('saml_assertions').column('expires_at').execute();
  await db.schema
    .createIndex('saml_assertions_connection')
    .on('saml_assertions')
    .column('connection_id')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('saml_assertions').execute();
}
