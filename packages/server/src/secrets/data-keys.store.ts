import { type Kysely, sql } from 'kysely';
import type { DataKeysTable, DB } from '../db/schema.js';

export type DataKeyRow = DataKeysTable;

export function createDataKeysStore(db: Kysely<DB>): DataKeysStore {
  return {
    byId: (id: string) => db.selectFrom('data_keys').selectAll().where('id', '=', id).executeTakeFirst(),

    activeOf: (scope: string) =>
      db
        .selectFrom('data_keys')
        .selectAll()
        .where('scope', '=', scope)
        .where('status', '=', 'active')
        .executeTakeFirst(),

    list: () => db.selectFrom('data_keys').selectAll().orderBy('scope').orderBy('created_at').execute(),

    /** Inserts a scope's active key unless another one is active (another instance won); returns whether it did. */
    async insertActive(row: DataKeyRow): Promise<boolean> {
      const result = await db
        .insertInto('data_keys')
        .values(row)
        // The partial index's own predicate, as a literal: SQLite matches the conflict target by text.
        .onConflict((oc) => oc.column('scope').where('status', '=', sql.lit('active')).doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
    },

    /** Retires the scope's active key and makes `next` active, in one transaction. */
    replaceActive: (scope: string, next: DataKeyRow, now: number) =>
      db.transaction().execute((trx) => createDataKeysStore(trx).retireAndInsert(scope, next, now)),

    /** {@link replaceActive} inside the caller's transaction (`db` is one). */
    async retireAndInsert(scope: string, next: DataKeyRow, now: number): Promise<void> {
      await db
        .updateTable('data_keys')
        .set({ status: 'retired', retired_at: now })
        .where('scope', '=', scope)
        .where('status', '=', 'active')
        .execute();
      await db.insertInto('data_keys').values(next).execute();
    },

    /** Stores a key wrapped anew, only if nobody re-wrapped it meanwhile; returns whether it did. */
    async rewrap(id: string, from: string, to: { wrapped_key: string; master_key_id: string }) {
      const result = await db
        .updateTable('data_keys')
        .set(to)
        .where('id', '=', id)
        .where('wrapped_key', '=', from)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
  };
}

export interface DataKeysStore {
  byId(id: string): Promise<DataKeyRow | undefined>;
  activeOf(scope: string): Promise<DataKeyRow | undefined>;
  list(): Promise<DataKeyRow[]>;
  insertActive(row: DataKeyRow): Promise<boolean>;
  replaceActive(scope: string, next: DataKeyRow, now: number): Promise<void>;
  retireAndInsert(scope: string, next: DataKeyRow, now: number): Promise<void>;
  rewrap(id: string, from: string, to: { wrapped_key: string; master_key_id: string }): Promise<boolean>;
}
