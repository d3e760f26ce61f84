import type { Kysely, Transaction } from 'kysely';
import type { DB, WorkloadIdentityKeysTable } from '../db/schema.js';

export type WorkloadIdentityKeyRow = WorkloadIdentityKeysTable;

/** The issuer's signing keys (SEC-4): instance-wide, few (one signing, one ahead, some retiring). */
export function createWorkloadIdentityKeysStore(db: Kysely<DB>) {
  return {
    /** Keys still published at `now`: not yet retired (a key ahead of its signing time is published). */
    published(now: number): Promise<WorkloadIdentityKeyRow[]> {
      return db
        .selectFrom('workload_identity_keys')
        .selectAll()
        .where((eb) => eb.or([eb('retires_at', 'is', null), eb('retires_at', '>', now)]))
        .orderBy('signs_from')
        .orderBy('id')
        .execute();
    },
    /** Every key, retired ones too, in signing order (as `published`). */
    list(): Promise<WorkloadIdentityKeyRow[]> {
      return db
        .selectFrom('workload_identity_keys')
        .selectAll()
        .orderBy('signs_from')
        .orderBy('id')
        .execute();
    },
    /**
     * Adds `row` and sets when every key not yet retiring leaves the JWKS, in the caller's (audited)
     * transaction: a crash between the two would leave no key ahead of its successor.
     */
    async rotate(
      trx: Transaction<DB>,
      row: WorkloadIdentityKeyRow,
      retirePreviousAt: number,
      now: number,
    ): Promise<number> {
      const retired = await trx
        .updateTable('workload_identity_keys')
        .set({ retires_at: retirePreviousAt })
        .where((eb) => eb.or([eb('retires_at', 'is', null), eb('retires_at', '>', retirePreviousAt)]))
        .where((eb) => eb.or([eb('retires_at', 'is', null), eb('retires_at', '>', now)]))
        .executeTakeFirst();
      await trx.insertInto('workload_identity_keys').values(row).execute();
      return Number(retired.numUpdatedRows);
    },
    /**
     * For a leaked key: deletes every key but `row` and adds `row`, in the caller's (audited)
     * transaction. Deleted, not marked: a retirement time is a column any database writer can clear,
     * and with it the leaked key would be published again and its holder's tokens verify. Returns how
     * many keys were deleted.
     */
    async revokeAllBut(trx: Transaction<DB>, row: WorkloadIdentityKeyRow): Promise<number> {
      const deleted = await trx.deleteFrom('workload_identity_keys').executeTakeFirst();
      await trx.insertInto('workload_identity_keys').values(row).execute();
      return Number(deleted.numDeletedRows);
    },
    async insert(row: WorkloadIdentityKeyRow): Promise<void> {
      await db.insertInto('workload_identity_keys').values(row).execute();
    },
    async resealPrivateKey(id: string, from: string, to: string): Promise<void> {
      await db
        .updateTable('workload_identity_keys')
        .set({ private_key_sealed: to })
        .where('id', '=', id)
        .where('private_key_sealed', '=', from)
        .execute();
    },
  };
}

export type WorkloadIdentityKeysStore = ReturnType<typeof createWorkloadIdentityKeysStore>;
