import type { Kysely } from 'kysely';
import { readAcrossOrgs } from '../db/org-scope.js';
import type {
  DB,
  SsoConnectionsTable,
  SsoDomainsTable,
  SsoIdentitiesTable,
  SsoSignInsTable,
} from '../db/schema.js';

export type SsoConnectionRow = SsoConnectionsTable;
export type SsoIdentityRow = SsoIdentitiesTable;
export type SsoSignInRow = SsoSignInsTable;

export function createSsoStore(db: Kysely<DB>) {
  return {
    insertConnection: async (row: SsoConnectionRow) => {
      await db.insertInto('sso_connections').values(row).execute();
    },
    connections: (orgId: string) =>
      db.selectFrom('sso_connections').selectAll().where('org_id', '=', orgId).orderBy('name').execute(),
    connection: (orgId: string, id: string) =>
      db
        .selectFrom('sso_connections')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst(),
    /** A connection by id alone: a sign-in names its connection before anyone is known. */
    connectionById: (id: string) =>
      db
        .selectFrom('sso_connections')
        .innerJoin('orgs', 'orgs.id', 'sso_connections.org_id')
        .selectAll('sso_connections')
        .select(['orgs.slug as org_slug'])
        .where('sso_connections.id', '=', id)
        .executeTakeFirst(),
    /** The enabled connections of an organization, by its slug: what its sign-in page offers. */
    enabledOf: (slug: string) =>
      db
        .selectFrom('sso_connections')
        .innerJoin('orgs', 'orgs.id', 'sso_connections.org_id')
        .select(['sso_connections.id', 'sso_connections.name', 'sso_connections.kind'])
        .where('orgs.slug', '=', slug)
        .where('sso_connections.enabled', '=', 1)
        .orderBy('sso_connections.name')
        .execute(),
    async deleteConnection(orgId: string, id: string): Promise<boolean> {
      const result = await db
        .deleteFrom('sso_connections')
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst();
      return result.numDeletedRows > 0n;
    },

    insertSignIn: async (row: SsoSignInRow) => {
      await db.insertInto('sso_sign_ins').values(row).execute();
    },
    /** Takes a sign-in under way: of two callbacks with one `state`, exactly one gets it. */
    takeSignIn: (stateHash: string) =>
      db.deleteFrom('sso_sign_ins').where('state_hash', '=', stateHash).returningAll().executeTakeFirst(),
    async deleteExpiredSignIns(now: number): Promise<void> {
      await db.deleteFrom('sso_sign_ins').where('expires_at', '<=', now).execute();
    },

    /** Takes an assertion: true the first time, false for one taken before (a replay). */
    async takeAssertion(
      hash: string,
      connection: { id: string; orgId: string },
      expiresAt: number,
      now: number,
    ): Promise<boolean> {
      await db.deleteFrom('saml_assertions').where('expires_at', '<=', now).execute();
      const result = await db
        .insertInto('saml_assertions')
        .values({
          assertion_hash: hash,
          connection_id: connection.id,
          org_id: connection.orgId,
          expires_at: expiresAt,
        })
        .onConflict((oc) => oc.column('assertion_hash').doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
    },

    domains: (orgId: string) =>
      db.selectFrom('sso_domains').selectAll().where('org_id', '=', orgId).orderBy('domain').execute(),
    domain: (orgId: string, domain: string) =>
      db
        .selectFrom('sso_domains')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('domain', '=', domain)
        .executeTakeFirst(),
    /** The organization that verified a domain, if one has. */
    /** The organization that verified `domain`, whichever it is (not only the one asking). */
    verifiedOwnerOf: (domain: string) =>
      readAcrossOrgs(db, (across) =>
        across
          .selectFrom('sso_domains')
          .innerJoin('orgs', 'orgs.id', 'sso_domains.org_id')
          .select(['orgs.id', 'orgs.slug'])
          .where('sso_domains.domain', '=', domain)
          .where('sso_domains.verified_at', 'is not', null)
          .executeTakeFirst(),
      ),
    insertDomain: async (row: SsoDomainsTable) => {
      await db.insertInto('sso_domains').values(row).execute();
    },
    markVerified: async (orgId: string, domain: string, at: number) => {
      await db
        .updateTable('sso_domains')
        .set({ verified_at: at })
        .where('org_id', '=', orgId)
        .where('domain', '=', domain)
        .execute();
    },
    async deleteDomain(orgId: string, domain: string): Promise<boolean> {
      const result = await db
        .deleteFrom('sso_domains')
        .where('org_id', '=', orgId)
        .where('domain', '=', domain)
        .executeTakeFirst();
      return result.numDeletedRows > 0n;
    },

    /** The issuers each of these users is linked to through this organization's connections. */
    issuersOf: (orgId: string, userIds: string[]) =>
      userIds.length === 0
        ? Promise.resolve([])
        : db
            .selectFrom('sso_identities')
            .innerJoin('sso_connections', 'sso_connections.id', 'sso_identities.connection_id')
            .select(['sso_identities.user_id', 'sso_identities.issuer'])
            .where('sso_connections.org_id', '=', orgId)
            .where('sso_identities.user_id', 'in', userIds)
            .orderBy('sso_identities.issuer')
            .execute(),
    /** The issuers a user is linked to, anywhere. */
    issuersOfUser: (userId: string) =>
      db.selectFrom('sso_identities').select('issuer').where('user_id', '=', userId).execute(),

    /** The user's identity at an issuer, if they have one. */
    identityOf: (userId: string, issuer: string) =>
      db
        .selectFrom('sso_identities')
        .selectAll()
        .where('user_id', '=', userId)
        .where('issuer', '=', issuer)
        .executeTakeFirst(),

    identity: (issuer: string, subject: string) =>
      db
        .selectFrom('sso_identities')
        .selectAll()
        .where('issuer', '=', issuer)
        .where('subject', '=', subject)
        .executeTakeFirst(),
    insertIdentity: async (row: SsoIdentityRow) => {
      await db.insertInto('sso_identities').values(row).execute();
    },
    touchIdentity: async (id: string, at: number) => {
      await db.updateTable('sso_identities').set({ last_sign_in_at: at }).where('id', '=', id).execute();
    },
  };
}

export type SsoStore = ReturnType<typeof createSsoStore>;
