import type { Kysely, Transaction } from 'kysely';
import { acrossOrgs } from './org-scope.js';
import type { DB } from './schema.js';

/** Writes per transaction at most: a batch holds the database, and everyone waits for its commit. */
const MAX_BATCH = 500;

type Write<T> = (trx: Transaction<DB>) => Promise<T>;

interface Pending {
  write: Write<unknown>;
  finish: Write<void> | undefined;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit for small, independent writes on a hot path (a command's transitions, its output).
 *
 * Every commit is a durable flush: on SQLite one fsync, during which better-sqlite3 holds the event
 * loop. Writes queued in the same turn of the event loop, and those queued while a batch commits,
 * are committed together in one transaction; each caller's promise settles only once its write has
 * committed, so nothing is acknowledged early. Writes must be independent of one another and have no
 * effect outside the database: when a batch fails, each of its writes is retried in a transaction of
 * its own, so a bad write fails alone and the others commit as they would have.
 *
 * A write may have a `finish`, run after every write of its batch, in order, before the commit: the
 * audit appends of the batch (AUD-7). On PostgreSQL they lock the audit chains' heads, so taking them
 * last, after every row the batch's writes lock, keeps one lock order across all transactions (rows,
 * then heads) and two transactions can never wait for each other.
 */
export function createGroupCommit(db: Kysely<DB>) {
  const queue: Pending[] = [];
  let draining = false;

  async function commitAlone(pending: Pending): Promise<void> {
    try {
      pending.resolve(
        await db.transaction().execute(async (trx) => {
          const result = await pending.write(trx);
          await pending.finish?.(trx);
          return result;
        }),
      );
    } catch (error) {
      pending.reject(error);
    }
  }

  async function commit(batch: Pending[]): Promise<void> {
    if (batch.length === 1) return commitAlone(batch[0]!);
    let results: unknown[];
    try {
      results = await db.transaction().execute(async (trx) => {
        const done: unknown[] = [];
        for (const pending of batch) done.push(await pending.write(trx));
        for (const pending of batch) await pending.finish?.(trx);
        return done;
      });
    } catch {
      for (const pending of batch) await commitAlone(pending);
      return;
    }
    for (const [i, pending] of batch.entries()) pending.resolve(results[i]);
  }

  async function drain(): Promise<void> {
    // Let every write issued in this turn of the event loop join the first batch.
    await new Promise((resolve) => setImmediate(resolve));
    while (queue.length > 0) await commit(queue.splice(0, MAX_BATCH));
    draining = false;
  }

  return function enqueue<T>(write: Write<T>, finish?: Write<void>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      queue.push({ write, finish, resolve: resolve as (value: unknown) => void, reject });
      if (!draining) {
        draining = true;
        // A batch holds the writes of every organization that queued one, whichever request came first.
        acrossOrgs(() => void drain());
      }
    });
  };
}

export type GroupCommit = ReturnType<typeof createGroupCommit>;
