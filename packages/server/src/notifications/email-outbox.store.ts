import type { Kysely } from 'kysely';
import type { DB, EmailOutboxTable } from '../db/schema.js';

export type EmailRow = EmailOutboxTable;

/**
 * The email outbox. Rows are added inside the transaction of the change they tell about (through a
 * store made on that transaction); the worker reads and updates them outside any request. Every state
 * change of a row is a guarded UPDATE on its expected state, so two instances never both send one.
 */
export function createEmailOutboxStore(db: Kysely<DB>) {
  return {
    async insert(row: EmailRow): Promise<void> {
      await db.insertInto('email_outbox').values(row).execute();
    },

    /** Pending messages due at `now`, oldest first. */
    due: (now: number, limit: number) =>
      db
        .selectFrom('email_outbox')
        .selectAll()
        .where('state', '=', 'pending')
        .where('next_attempt_at', '<=', now)
        .orderBy('next_attempt_at')
        .orderBy('id')
        .limit(limit)
        .execute(),

    /**
     * Takes a due message for one send attempt: moves its next attempt to `leaseUntil` if nobody
     * moved it since it was read. False when another worker took it first. A worker that dies while
     * sending leaves the message pending, due again when the lease ends (a restart resends it).
     */
    async claim(row: Pick<EmailRow, 'id' | 'next_attempt_at'>, leaseUntil: number): Promise<boolean> {
      const result = await db
        .updateTable('email_outbox')
        .set({ next_attempt_at: leaseUntil })
        .where('id', '=', row.id)
        .where('state', '=', 'pending')
        .where('next_attempt_at', '=', row.next_attempt_at)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },

    /** The SMTP server took the message: nothing of its content is kept. */
    async markSent(id: string, attempts: number, now: number): Promise<void> {
      await db
        .updateTable('email_outbox')
        .set({ state: 'sent', sealed: '', attempts, sent_at: now, last_error: null })
        .where('id', '=', id)
        .where('state', '=', 'pending')
        .execute();
    },

    async markRetry(id: string, attempts: number, nextAttemptAt: number, error: string): Promise<void> {
      await db
        .updateTable('email_outbox')
        .set({ attempts, next_attempt_at: nextAttemptAt, last_error: error })
        .where('id', '=', id)
        .where('state', '=', 'pending')
        .execute();
    },

    /** Given up after the last attempt: kept (content emptied) with its reason, for the operator. */
    async markFailed(id: string, attempts: number, error: string): Promise<void> {
      await db
        .updateTable('email_outbox')
        .set({ state: 'failed', sealed: '', attempts, last_error: error })
        .where('id', '=', id)
        .where('state', '=', 'pending')
        .execute();
    },

    /** How many messages wait to be sent (a gauge: a growing number is an SMTP outage). */
    async pendingCount(): Promise<number> {
      const row = await db
        .selectFrom('email_outbox')
        .select((eb) => eb.fn.countAll<number | string>().as('n'))
        .where('state', '=', 'pending')
        .executeTakeFirst();
      return Number(row?.n ?? 0);
    },
  };
}

export type EmailOutboxStore = ReturnType<typeof createEmailOutboxStore>;
