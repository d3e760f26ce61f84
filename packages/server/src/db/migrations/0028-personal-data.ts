import type { Kysely } from 'kysely';

/**
 * Personal data (DATA-1, DATA-2): one PII key per person, which seals the personal fields of the
 * audit events about them (who did it, from which address and browser, whom it was done to). The key
 * is stored wrapped by the master key; erasing the person deletes this row (crypto-shredding), after
 * which their sealed fields open nowhere, in this database or in any backup taken afterwards, while
 * the hash chain, which covers the sealed form, still verifies.
 *
 * No foreign key to `users`: events may name a user id that does not exist (a target typed into a
 * URL), and the key row must be deleted by the erasure itself, in its audited transaction.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('audit_pii_keys')
    .addColumn('user_id', 'text', (c) => c.primaryKey())
    // `pik_…`: named by every value the key seals.
    .addColumn('id', 'text', (c) => c.notNull().unique())
    .addColumn('wrapped_key', 'text', (c) => c.notNull())
    .addColumn('master_key_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('audit_pii_keys').execute();
}
