import type { Kysely } from 'kysely';

/**
 * Single sign-on (SSO-1, SSO-4): an organization's connections to its identity providers, the
 * identities they vouch for, and the short-lived records of sign-ins under way.
 *
 * - A connection's configuration, client secret included, is one value sealed by the organization's
 *   data key and bound to the connection (DATA-1): unreadable in a copy of the database, and not
 *   changeable (to point it at another provider) without the master key.
 * - An identity is an (issuer, subject) pair linked to one user, never an email address; the link is
 *   sealed by the server, so a database writer cannot link a provider account of theirs to someone.
 * - A sign-in under way is keyed by the SHA-256 of its `state`, carries the hash of a value only the
 *   browser that started it holds (a cookie), and is taken exactly once.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('sso_connections')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('config_sealed', 'text', (c) => c.notNull())
    .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addUniqueConstraint('sso_connections_org_name', ['org_id', 'name'])
    .execute();

  await db.schema
    .createTable('sso_identities')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('issuer', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    // The connection it was first linked through, for the record: removing a connection (to replace
    // it) does not unlink its people, who sign in again through any connection to the same issuer.
    .addColumn('connection_id', 'text', (c) => c.references('sso_connections.id').onDelete('set null'))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('last_sign_in_at', 'bigint')
    .addColumn('seal', 'text', (c) => c.notNull())
    .addUniqueConstraint('sso_identities_issuer_subject', ['issuer', 'subject'])
    .execute();
  await db.schema.createIndex('sso_identities_user').on('sso_identities').column('user_id').execute();
  await db.schema
    .createIndex('sso_identities_connection')
    .on('sso_identities')
    .column('connection_id')
    .execute();

  await db.schema
    .createTable('sso_sign_ins')
    .addColumn('state_hash', 'text', (c) => c.primaryKey())
    .addColumn('connection_id', 'text', (c) =>
      c.notNull().references('sso_connections.id').onDelete('cascade'),
    )
    .addColumn('browser_hash', 'text', (c) => c.notNull())
    .addColumn('nonce', 'text', (c) => c.notNull())
    .addColumn('verifier_sealed', 'text', (c) => c.notNull())
    .addColumn('redirect_uri', 'text', (c) => c.notNull())
    .addColumn('return_to', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('sso_sign_ins_expiry').on('sso_sign_ins').column('expires_at').execute();
  await db.schema.createIndex('sso_sign_ins_connection').on('sso_sign_ins').column('connection_id').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('sso_sign_ins').execute();
  await db.schema.dropTable('sso_identities').execute();
  await db.schema.dropTable('sso_connections').execute();
}
