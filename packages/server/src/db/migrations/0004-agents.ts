import type { ColumnDefinitionBuilder, Kysely } from 'kysely';

/** Registration tokens, agents and the services they report (AGT-1, AGT-2, AGT-4, AGT-5). */
export async function up(db: Kysely<unknown>): Promise<void> {
  const orgId = (c: ColumnDefinitionBuilder) => c.notNull().references('orgs.id').onDelete('cascade');

  await db.schema
    .createTable('registration_tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', orgId)
    .addColumn('token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('description', 'text', (c) => c.notNull())
    .addColumn('labels', 'text', (c) => c.notNull())
    .addColumn('uses_allowed', 'integer', (c) => c.notNull())
    .addColumn('uses', 'integer', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('revoked_at', 'bigint')
    .execute();
  await db.schema
    .createIndex('registration_tokens_org')
    .on('registration_tokens')
    .columns(['org_id', 'created_at'])
    .execute();

  await db.schema
    .createTable('agents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', orgId)
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('hostname', 'text', (c) => c.notNull())
    .addColumn('labels', 'text', (c) => c.notNull())
    // Public keys only (AGT-2): raw 32-byte keys, base64url.
    .addColumn('signing_key', 'text', (c) => c.notNull().unique())
    .addColumn('encryption_key', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('registration_token_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addColumn('last_seen_at', 'bigint')
    .execute();
  // Keyset paging of an organization's agents (the list stays cheap with a large fleet).
  await db.schema.createIndex('agents_org').on('agents').columns(['org_id', 'id']).execute();

  await db.schema
    .createTable('services')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', orgId)
    .addColumn('agent_id', 'text', (c) => c.notNull().references('agents.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('version', 'text', (c) => c.notNull())
    .addColumn('health_status', 'text', (c) => c.notNull())
    .addColumn('health_message', 'text', (c) => c.notNull())
    .addColumn('config', 'text', (c) => c.notNull())
    .addColumn('actions', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    // A service belongs to the agent that reported it: the same name from another agent is another service.
    .addUniqueConstraint('services_agent_name', ['agent_id', 'name'])
    .execute();
  await db.schema.createIndex('services_org').on('services').columns(['org_id', 'name']).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['services', 'agents', 'registration_tokens']) {
    await db.schema.dropTable(table).execute();
  }
}
