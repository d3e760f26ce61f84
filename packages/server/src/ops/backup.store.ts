import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.js';

/** What the backup API reads of the installation as a whole: the organizations a backup spans. */
export function createBackupStore(db: Kysely<DB>) {
  return {
    /** Every organization's slug: a backup holds them all. Instance-wide on purpose (no org scope). */
    async orgSlugs(): Promise<string[]> {
      const rows = await db.selectFrom('orgs').select(['slug']).orderBy('slug').execute();
      return rows.map((row) => row.slug);
    },
  };
}

export type BackupStore = ReturnType<typeof createBackupStore>;
