import type { Kysely } from 'kysely';

/**
 * SCIM 2.0 provisioning (SSO-5): an organization's identity provider creates, updates and
 * deprovisions its members and its teams.
 *
 * - `scim_configs`: one per organization that has SCIM on. Its bearer token is stored as a SHA-256
 *   and sealed by the server with the organization it opens (identity/credential-seals.ts), so a
 *   database writer cannot put in a token of their own. Rotating it replaces the hash.
 * - `scim_users`: what SCIM knows of a person beyond their membership: the provider's userName and
 *   externalId, whether SCIM created the account (only then does it change the account itself), and
 *   the role to give back when a deactivated person is activated again. The SCIM resource id is the
 *   user id, and `active` is whether they are a member now.
 * - `scim_groups`: the teams SCIM created and manages; other teams are out of its reach.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('scim_configs')
    .addColumn('org_id', 'text', (c) => c.primaryKey().references('orgs.id').onDelete('cascade'))
    .addColumn('token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('token_hint', 'text', (c) => c.notNull())
    .addColumn('default_role', 'text', (c) => c.notNull())
    .addColumn('group_roles', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('rotated_at', 'bigint', (c) => c.notNull())
    .addColumn('last_used_at', 'bigint')
    .addColumn('seal', 'text', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('scim_users')
    .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('external_id', 'text')
    .addColumn('owned', 'integer', (c) => c.notNull())
    .addColumn('role_when_active', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('scim_users_pk', ['org_id', 'user_id'])
    .addUniqueConstraint('scim_users_user_name', ['org_id', 'user_name'])
    .execute();

  await db.schema
    .createTable('scim_groups')
    .addColumn('team_id', 'text', (c) => c.primaryKey().references('teams.id').onDelete('cascade'))
    .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('external_id', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('scim_groups_org').on('scim_groups').column('org_id').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('scim_groups').execute();
  await db.schema.dropTable('scim_users').execute();
  await db.schema.dropTable('scim_configs').execute();
}
