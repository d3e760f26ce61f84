import type { Kysely } from 'kysely';
import type { DB, RegistrationTokensTable } from '../db/schema.js';

export type RegistrationTokenRow = RegistrationTokensTable;

/** Registration tokens (AGT-1); every query but the token lookup names its organization. */
export function createRegistrationTokensStore(db: Kysely<DB>) {
  return {
    async insert(row: RegistrationTokenRow): Promise<void> {
      await db.insertInto('registration_tokens').values(row).execute();
    },
    list: (orgId: string) =>
      db
        .selectFrom('registration_tokens')
        .selectAll()
        .where('org_id', '=', orgId)
        .orderBy('created_at', 'desc')
        .limit(500)
        .execute(),
    find: (orgId: string, id: string) =>
      db
        .selectFrom('registration_tokens')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst(),
    /** Whatever state it is in: a refused registration is audited in the token's organization. */
    findByHash: (tokenHash: string) =>
      db
        .selectFrom('registration_tokens')
        .innerJoin('orgs', 'orgs.id', 'registration_tokens.org_id')
        .selectAll('registration_tokens')
        .select('orgs.slug as org_slug')
        .where('registration_tokens.token_hash', '=', tokenHash)
        .executeTakeFirst(),
    /**
     * Takes one use of the token. The guarded update is the single point of truth: of two
     * registrations racing with a single-use token, exactly one changes the row (AGT-1).
     */
    async consume(id: string, now: number): Promise<boolean> {
      const result = await db
        .updateTable('registration_tokens')
        .set((eb) => ({ uses: eb('uses', '+', 1) }))
        .where('id', '=', id)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', now)
        .where((eb) => eb('uses', '<', eb.ref('uses_allowed')))
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    async revoke(orgId: string, id: string, now: number): Promise<boolean> {
      const result = await db
        .updateTable('registration_tokens')
        .set({ revoked_at: now })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
  };
}

export type RegistrationTokensStore = ReturnType<typeof createRegistrationTokensStore>;
