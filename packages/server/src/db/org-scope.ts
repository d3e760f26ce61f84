import { AsyncLocalStorage } from 'node:async_hooks';
import { type Kysely, PostgresAdapter, sql } from 'kysely';
import type { DB } from './schema.js';

/**
 * The organization the work in progress acts for (HA-2, ACC-1's second enforcement). On PostgreSQL
 * every org-owned table has a row-level-security policy that shows and accepts only the rows of the
 * organization named by the connection's `bulwark.org_id` setting; db/database.ts sets it each time a
 * connection is handed out, from this scope. So a query that forgets its `org_id` filter while
 * serving one organization still returns nothing of another.
 *
 * Outside any scope (start-up, maintenance jobs, the CLI, sign-in before an organization is known)
 * the setting is {@link ALL_ORGS}. A connection on which nothing was set sees no org-owned row at all.
 */

/** The setting's value for work that is not for one organization: every organization's rows. */
export const ALL_ORGS = '*';

/** The session setting the policies read (migrations/0030-row-level-security.ts). */
export const ORG_SETTING = 'bulwark.org_id';

const scope = new AsyncLocalStorage<string>();

/** Runs `work` (and everything it starts) for one organization only. */
export function inOrgScope<T>(orgId: string, work: () => T): T {
  return scope.run(orgId, work);
}

/**
 * Runs `work` outside any organization's scope: for shared writers that batch the work of several
 * organizations (the group commit, the audit writer), which a request of one organization may start.
 */
export function acrossOrgs<T>(work: () => T): T {
  return scope.exit(work);
}

/** What `bulwark.org_id` must be for the work in progress. */
export function orgSettingNow(): string {
  return scope.getStore() ?? ALL_ORGS;
}

/**
 * Runs `read`, a query that spans organizations by design (how many organizations a person belongs
 * to, which organization verified a domain), on `db` across organizations. Outside a transaction
 * every query takes a connection of its own, which {@link acrossOrgs} sets. Inside one (PostgreSQL)
 * the transaction's connection was set for the scope it began in, so the setting changes for the
 * transaction alone (`set_config(…, true)`) around the read, and is put back after it (a read that
 * fails aborts the transaction, which undoes the change itself); the connection's own setting
 * returns at commit.
 */
export async function readAcrossOrgs<T>(db: Kysely<DB>, read: (db: Kysely<DB>) => Promise<T>): Promise<T> {
  if (!db.isTransaction) return acrossOrgs(() => read(db));
  if (!(db.getExecutor().adapter instanceof PostgresAdapter)) return read(db);
  await sql`select set_config(${ORG_SETTING}, ${ALL_ORGS}, true)`.execute(db);
  const result = await read(db);
  await sql`select set_config(${ORG_SETTING}, ${orgSettingNow()}, true)`.execute(db);
  return result;
}

/**
 * `source`, each step of it read in `orgId`'s scope. A streamed answer is read after its handler has
 * returned, out of the scope the handler ran in: what it queries as it streams (a live command's
 * output, an export's next page) must stay in that organization all the same.
 */
export async function* withinOrgScope<T>(orgId: string, source: AsyncIterable<T>): AsyncGenerator<T> {
  const steps = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await inOrgScope(orgId, () => steps.next());
      if (step.done) return;
      yield step.value;
    }
  } finally {
    await inOrgScope(orgId, async () => steps.return?.());
  }
}
