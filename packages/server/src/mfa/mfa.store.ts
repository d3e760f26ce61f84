import { type Kysely, sql } from 'kysely';
import type { DB, MfaFactorsTable, WebauthnChallengesTable } from '../db/schema.js';

export type MfaFactorRow = MfaFactorsTable;

/**
 * `mfa_enrolled`: whether the user in `userColumn` has a confirmed factor, for the queries that run
 * on every request (SQLite answers 0/1, PostgreSQL true/false).
 */
export const mfaEnrolledOf = (userColumn: 'sessions.user_id' | 'api_keys.user_id') =>
  sql<
    number | boolean
  >`exists (select 1 from mfa_factors where mfa_factors.user_id = ${sql.ref(userColumn)} and mfa_factors.confirmed_at is not null)`.as(
    'mfa_enrolled',
  );

export function createMfaStore(db: Kysely<DB>) {
  return {
    insertFactor: async (row: MfaFactorRow) => {
      await db.insertInto('mfa_factors').values(row).execute();
    },

    /** The user's factors; confirmed ones only unless `withPending`. */
    factorsOf: (userId: string, withPending = false) =>
      db
        .selectFrom('mfa_factors')
        .selectAll()
        .where('user_id', '=', userId)
        .$if(!withPending, (q) => q.where('confirmed_at', 'is not', null))
        .orderBy('created_at')
        .execute(),

    factorOf: (userId: string, id: string) =>
      db
        .selectFrom('mfa_factors')
        .selectAll()
        .where('user_id', '=', userId)
        .where('id', '=', id)
        .executeTakeFirst(),

    async isEnrolled(userId: string): Promise<boolean> {
      const row = await db
        .selectFrom('mfa_factors')
        .select('id')
        .where('user_id', '=', userId)
        .where('confirmed_at', 'is not', null)
        .limit(1)
        .executeTakeFirst();
      return row !== undefined;
    },

    /** Which of these users have a confirmed factor, in one query (the access review's column). */
    async enrolledAmong(userIds: string[]): Promise<Set<string>> {
      if (userIds.length === 0) return new Set();
      const rows = await db
        .selectFrom('mfa_factors')
        .select('user_id')
        .distinct()
        .where('user_id', 'in', userIds)
        .where('confirmed_at', 'is not', null)
        .execute();
      return new Set(rows.map((row) => row.user_id));
    },

    async confirm(id: string, at: number, step: number): Promise<boolean> {
      const result = await db
        .updateTable('mfa_factors')
        .set({ confirmed_at: at, last_used_step: step, last_used_at: at })
        .where('id', '=', id)
        .where('confirmed_at', 'is', null)
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },

    /** Records a TOTP step as used, unless it (or a later one) already was: exactly one use wins. */
    async useStep(id: string, step: number, at: number): Promise<boolean> {
      const result = await db
        .updateTable('mfa_factors')
        .set({ last_used_step: step, last_used_at: at })
        .where('id', '=', id)
        .where((eb) => eb.or([eb('last_used_step', 'is', null), eb('last_used_step', '<', step)]))
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },

    reseal: async (id: string, sealed: string) => {
      await db.updateTable('mfa_factors').set({ secret_sealed: sealed }).where('id', '=', id).execute();
    },

    deleteFactor: async (userId: string, id: string) => {
      const result = await db
        .deleteFrom('mfa_factors')
        .where('user_id', '=', userId)
        .where('id', '=', id)
        .executeTakeFirst();
      return result.numDeletedRows > 0n;
    },

    async credentialExists(credentialId: string): Promise<boolean> {
      const row = await db
        .selectFrom('mfa_factors')
        .select('id')
        .where('credential_id', '=', credentialId)
        .executeTakeFirst();
      return row !== undefined;
    },

    deletePending: async (userId: string) => {
      await db
        .deleteFrom('mfa_factors')
        .where('user_id', '=', userId)
        .where('confirmed_at', 'is', null)
        .execute();
    },

    async replaceRecoveryCodes(
      userId: string,
      codes: Array<{ code_hash: string; seal: string }>,
      at: number,
    ): Promise<void> {
      await db.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
      if (codes.length > 0)
        await db
          .insertInto('recovery_codes')
          .values(codes.map((code) => ({ ...code, user_id: userId, created_at: at, used_at: null })))
          .execute();
    },

    /** An unused recovery code of the user, by its hash. */
    recoveryCode: (userId: string, codeHash: string) =>
      db
        .selectFrom('recovery_codes')
        .selectAll()
        .where('user_id', '=', userId)
        .where('code_hash', '=', codeHash)
        .where('used_at', 'is', null)
        .executeTakeFirst(),

    /** Marks an unused code used; true for exactly one of any number of concurrent uses. */
    async useRecoveryCode(userId: string, codeHash: string, at: number): Promise<boolean> {
      const result = await db
        .updateTable('recovery_codes')
        .set({ used_at: at })
        .where('user_id', '=', userId)
        .where('code_hash', '=', codeHash)
        .where('used_at', 'is', null)
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },

    /** Keeps a ceremony's challenge, replacing an earlier one of the same session and purpose. */
    async putChallenge(row: WebauthnChallengesTable): Promise<void> {
      await db
        .insertInto('webauthn_challenges')
        .values(row)
        .onConflict((oc) =>
          oc
            .columns(['session_id', 'purpose'])
            .doUpdateSet({ challenge: row.challenge, expires_at: row.expires_at }),
        )
        .execute();
    },

    /** Removes and returns a challenge: of any number of concurrent takers, one gets it. */
    takeChallenge: (sessionId: string, purpose: WebauthnChallengesTable['purpose']) =>
      db
        .deleteFrom('webauthn_challenges')
        .where('session_id', '=', sessionId)
        .where('purpose', '=', purpose)
        .returning(['challenge', 'expires_at'])
        .executeTakeFirst(),

    /** Records a passkey use, unless another use moved its counter since `previous` was read. */
    async usePasskey(id: string, previous: number, next: number, at: number): Promise<boolean> {
      const result = await db
        .updateTable('mfa_factors')
        .set({ sign_count: next, last_used_at: at })
        .where('id', '=', id)
        .where('sign_count', '=', previous)
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    },

    async hasRecoveryCodes(userId: string): Promise<boolean> {
      const row = await db
        .selectFrom('recovery_codes')
        .select('code_hash')
        .where('user_id', '=', userId)
        .limit(1)
        .executeTakeFirst();
      return row !== undefined;
    },

    async recoveryCodesLeft(userId: string): Promise<number> {
      const row = await db
        .selectFrom('recovery_codes')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('user_id', '=', userId)
        .where('used_at', 'is', null)
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },
  };
}

export type MfaStore = ReturnType<typeof createMfaStore>;
