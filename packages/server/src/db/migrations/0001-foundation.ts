import type { Kysely } from 'kysely';

/** Server signing keys and the audit log: events, per-chain heads, signed checkpoints and anchors. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('server_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('purpose', 'text', (c) => c.notNull().unique())
    .addColumn('algorithm', 'text', (c) => c.notNull())
    .addColumn('public_key', 'text', (c) => c.notNull())
    .addColumn('private_key_sealed', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('audit_events')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('chain_id', 'text', (c) => c.notNull())
    .addColumn('seq', 'bigint', (c) => c.notNull())
    .addColumn('org_id', 'text')
    .addColumn('ts', 'bigint', (c) => c.notNull())
    .addColumn('actor_type', 'text', (c) => c.notNull())
    .addColumn('actor_id', 'text')
    .addColumn('actor_display', 'text')
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target_type', 'text')
    .addColumn('target_id', 'text')
    .addColumn('target_display', 'text')
    .addColumn('outcome', 'text', (c) => c.notNull())
    .addColumn('request_id', 'text')
    .addColumn('details', 'text', (c) => c.notNull())
    .addColumn('prev_hash', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull())
    .addUniqueConstraint('audit_events_chain_seq', ['chain_id', 'seq'])
    .execute();
  await db.schema
    .createIndex('audit_events_chain_ts')
    .on('audit_events')
    .columns(['chain_id', 'ts'])
    .execute();
  await db.schema
    .createIndex('audit_events_chain_action')
    .on('audit_events')
    .columns(['chain_id', 'action', 'seq'])
    .execute();
  await db.schema
    .createIndex('audit_events_chain_actor')
    .on('audit_events')
    .columns(['chain_id', 'actor_id', 'seq'])
    .execute();
  await db.schema
    .createIndex('audit_events_chain_target')
    .on('audit_events')
    .columns(['chain_id', 'target_id', 'seq'])
    .execute();
  await db.schema.createIndex('audit_events_request').on('audit_events').columns(['request_id']).execute();

  await db.schema
    .createTable('audit_chain_heads')
    .addColumn('chain_id', 'text', (c) => c.primaryKey())
    .addColumn('seq', 'bigint', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('audit_checkpoints')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('chain_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('seq', 'bigint', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull())
    .addColumn('ts', 'bigint', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('signature', 'text', (c) => c.notNull())
    .addUniqueConstraint('audit_checkpoints_chain_kind_seq', ['chain_id', 'kind', 'seq'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['audit_checkpoints', 'audit_chain_heads', 'audit_events', 'server_keys']) {
    await db.schema.dropTable(table).execute();
  }
}
