import { AsyncLocalStorage } from 'node:async_hooks';

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
