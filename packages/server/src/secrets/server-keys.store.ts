import type { Kysely } from 'kysely';
import type { DB, ServerKeysTable } from '../db/schema.js';

export type ServerKeyRow = ServerKeysTable;

export function createServerKeysStore(db: Kysely<DB>) {
  return {
    async findByPurpose(purpose: string): Promise<ServerKeyRow | undefined> {
      return db.selectFrom('server_keys').selectAll().where('purpose', '=', purpose).executeTakeFirst();
    },
    async list(): Promise<ServerKeyRow[]> {
      return db.selectFrom('server_keys').selectAll().orderBy('created_at').execute();
    },
    /** Replaces a row's sealed private key, only if it is still `from`; returns whether it did. */
    async resealPrivateKey(id: string, from: string, to: string): Promise<boolean> {
      const result = await db
        .updateTable('server_keys')
        .set({ private_key_sealed: to })
        .where('id', '=', id)
        .where('private_key_sealed', '=', from)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    /** Inserts unless a key for this purpose exists (another instance won the race); returns whether it did. */
    async insertIfAbsent(row: ServerKeyRow): Promise<boolean> {
      const result = await db
        .insertInto('server_keys')
        .values(row)
        .onConflict((oc) => oc.column('purpose').doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
    },
  };
}

export type ServerKeysStore = ReturnType<typeof createServerKeysStore>;
