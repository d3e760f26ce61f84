import type { ColumnDefinitionBuilder, Kysely } from 'kysely';

/** Commands, their approvals and their stored output (CMD-3 to CMD-7, CMD-9). */
export async function up(db: Kysely<unknown>): Promise<void> {
  const orgId = (c: ColumnDefinitionBuilder) => c.notNull().references('orgs.id').onDelete('cascade');
  const command = (c: ColumnDefinitionBuilder) => c.notNull().references('commands.id').onDelete('cascade');

  await db.schema
    .createTable('commands')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('org_id', 'text', orgId)
    .addColumn('agent_id', 'text', (c) => c.notNull().references('agents.id').onDelete('cascade'))
    .addColumn('service', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    // Validated against the action's schema, and refused when a value looks like a credential.
    .addColumn('params', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('risk', 'text', (c) => c.notNull())
    .addColumn('required_approvals', 'integer', (c) => c.notNull())
    .addColumn('requested_by', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('idempotency_key', 'text')
    .addColumn('request_hash', 'text', (c) => c.notNull())
    .addColumn('nonce', 'text', (c) => c.notNull())
    .addColumn('timeout_seconds', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addColumn('approval_expires_at', 'bigint')
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('dispatched_at', 'bigint')
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addColumn('exit_code', 'integer')
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('output_bytes', 'integer', (c) => c.notNull())
    .addColumn('output_truncated', 'integer', (c) => c.notNull())
    .addColumn('final_acked', 'integer', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('commands_org').on('commands').columns(['org_id', 'id']).execute();
  await db.schema
    .createIndex('commands_agent_status')
    .on('commands')
    .columns(['agent_id', 'status'])
    .execute();
  await db.schema.createIndex('commands_status').on('commands').columns(['status', 'expires_at']).execute();
  // CMD-9: one command per (requester, key); a retried request finds the first.
  await db.schema
    .createIndex('commands_idempotency')
    .on('commands')
    .columns(['org_id', 'requested_by', 'idempotency_key'])
    .unique()
    .execute();

  await db.schema
    .createTable('command_approvals')
    .addColumn('command_id', 'text', command)
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('decision', 'text', (c) => c.notNull())
    .addColumn('comment', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('command_approvals_pk', ['command_id', 'user_id'])
    .execute();

  await db.schema
    .createTable('command_output')
    .addColumn('command_id', 'text', command)
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('stream', 'text', (c) => c.notNull())
    .addColumn('data', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('command_output_pk', ['command_id', 'seq'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['command_output', 'command_approvals', 'commands']) {
    await db.schema.dropTable(table).execute();
  }
}
