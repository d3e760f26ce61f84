import type { Kysely } from 'kysely';
import type { DB, SecretsTable, SecretVersionsTable } from '../db/schema.js';

export type SecretRow = SecretsTable;
export type SecretVersionRow = SecretVersionsTable;

export function createSecretsStore(db: Kysely<DB>) {
  return {
    list: (orgId: string) =>
      db.selectFrom('secrets').selectAll().where('org_id', '=', orgId).orderBy('name').execute(),

    find: (orgId: string, secretId: string) =>
      db
        .selectFrom('secrets')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', secretId)
        .executeTakeFirst(),

    findByName: (orgId: string, name: string) =>
      db
        .selectFrom('secrets')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('name', '=', name)
        .executeTakeFirst(),

    async insert(secret: SecretRow, version: SecretVersionRow): Promise<void> {
      await db.insertInto('secrets').values(secret).execute();
      await db.insertInto('secret_versions').values(version).execute();
    },

    /** Adds the next version if the secret is still at `from`; returns whether it did (a concurrent update wins otherwise). */
    async addVersion(secret: SecretRow, version: SecretVersionRow): Promise<boolean> {
      const moved = await db
        .updateTable('secrets')
        .set({
          current_version: version.version,
          updated_by: version.created_by,
          updated_at: version.created_at,
        })
        .where('id', '=', secret.id)
        .where('current_version', '=', secret.current_version)
        .executeTakeFirst();
      if (Number(moved.numUpdatedRows) !== 1) return false;
      await db.insertInto('secret_versions').values(version).execute();
      return true;
    },

    /** The secret and every version of it: nothing of its values stays behind. */
    async delete(secretId: string): Promise<void> {
      await db.deleteFrom('secret_versions').where('secret_id', '=', secretId).execute();
      await db.deleteFrom('secrets').where('id', '=', secretId).execute();
    },

    /** Replaces a version's sealed value with the same value sealed under a newer data key. */
    async reseal(row: SecretVersionRow, valueSealed: string): Promise<void> {
      await db
        .updateTable('secret_versions')
        .set({ value_sealed: valueSealed })
        .where('secret_id', '=', row.secret_id)
        .where('version', '=', row.version)
        .where('value_sealed', '=', row.value_sealed)
        .execute();
    },

    version: (secretId: string, version: number) =>
      db
        .selectFrom('secret_versions')
        .selectAll()
        .where('secret_id', '=', secretId)
        .where('version', '=', version)
        .executeTakeFirst(),
  };
}

export type SecretsStore = ReturnType<typeof createSecretsStore>;
