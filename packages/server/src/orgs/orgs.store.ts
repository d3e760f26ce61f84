import type { Kysely } from 'kysely';
import type { DB, MembershipsTable, OrgsTable } from '../db/schema.js';

export function createOrgsStore(db: Kysely<DB>) {
  return {
    async insertOrg(row: OrgsTable): Promise<void> {
      await db.insertInto('orgs').values(row).execute();
    },
    async insertMembership(row: MembershipsTable): Promise<void> {
      await db.insertInto('memberships').values(row).execute();
    },
    /** The organizations a user belongs to, with their role in each. */
    membershipsOf: (userId: string) =>
      db
        .selectFrom('memberships')
        .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
        .select(['orgs.id as orgId', 'orgs.slug', 'orgs.name', 'memberships.role'])
        .where('memberships.user_id', '=', userId)
        .orderBy('orgs.slug')
        .execute(),
  };
}

export type OrgsStore = ReturnType<typeof createOrgsStore>;
