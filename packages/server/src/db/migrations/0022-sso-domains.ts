import { type Kysely, sql } from 'kysely';

/**
 * Email domains an organization proves it holds (SSO-4): a sign-in that starts from an email address
 * is routed to the organization's identity providers only once that organization has published the
 * domain's challenge in DNS. Any organization may claim a domain; one may hold it verified.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('sso_domains')
    .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
    .addColumn('domain', 'text', (c) => c.notNull())
    /** Published in DNS by whoever holds the domain: no secret. */
    .addColumn('challenge', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('verified_at', 'bigint')
    .addPrimaryKeyConstraint('sso_domains_pk', ['org_id', 'domain'])
    .execute();
  await db.schema
    .createIndex('sso_domains_verified')
    .on('sso_domains')
    .column('domain')
    .unique()
    .where(sql.ref('verified_at'), 'is not', null)
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('sso_domains').execute();
}
