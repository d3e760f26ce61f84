import type { Kysely } from 'kysely';
import { TERMINAL_STATUSES } from '../commands/command-status.js';
import type { DB } from '../db/schema.js';

/**
 * The deletes of the maintenance jobs (PLAT-6). Unlike every other store these queries name no
 * organization: they remove rows that are dead in every organization alike (past their expiry, or
 * past the instance's retention), by time alone, and return nothing to anyone; scoping them by org
 * would only mean one pass per organization for the same result.
 *
 * Each call deletes at most `limit` rows and says how many it deleted; the service calls again until
 * a call deletes fewer. On SQLite a statement holds the one write lock for its whole run, so a large
 * backlog is removed in many short statements rather than one long one that stalls every writer.
 * `id IN (SELECT … LIMIT n)` is the bounded delete both dialects accept (`DELETE … LIMIT` is not
 * standard SQL and SQLite builds rarely enable it).
 */
export function createMaintenanceStore(db: Kysely<DB>) {
  return {
    /** Sessions past their absolute lifetime or unused for the idle timeout (as `resolve` ends them). */
    async deleteExpiredSessions(now: number, idleMs: number, limit: number): Promise<number> {
      const result = await db
        .deleteFrom('sessions')
        .where('id', 'in', (eb) =>
          eb
            .selectFrom('sessions')
            .select('id')
            .where((w) => w.or([w('expires_at', '<=', now), w('last_seen_at', '<=', now - idleMs)]))
            .limit(limit),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },

    /** Registration tokens past their expiry; agents keep only the token's id, so none is affected. */
    async deleteExpiredRegistrationTokens(now: number, limit: number): Promise<number> {
      const result = await db
        .deleteFrom('registration_tokens')
        .where('id', 'in', (eb) =>
          eb.selectFrom('registration_tokens').select('id').where('expires_at', '<=', now).limit(limit),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },

    /** Invitations past their expiry, whatever became of them: accepted ones live on as memberships. */
    async deleteExpiredInvitations(now: number, limit: number): Promise<number> {
      const result = await db
        .deleteFrom('invitations')
        .where('id', 'in', (eb) =>
          eb.selectFrom('invitations').select('id').where('expires_at', '<=', now).limit(limit),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },

    /** Passkey ceremony challenges past their expiry (a ceremony never finished). */
    async deleteExpiredWebauthnChallenges(now: number, limit: number): Promise<number> {
      const result = await db
        .deleteFrom('webauthn_challenges')
        .where((eb) =>
          eb(
            eb.refTuple('session_id', 'purpose'),
            'in',
            eb
              .selectFrom('webauthn_challenges as expired')
              .select(['expired.session_id', 'expired.purpose'])
              .where('expired.expires_at', '<=', now)
              .limit(limit)
              .$asTuple('session_id', 'purpose'),
          ),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },

    /**
     * Output of commands that ended (a terminal status) at or before `endedBy`. The candidates are
     * found through the output's own time (indexed): output is written before its command ends, so
     * every row to prune is at or before the cutoff too. The command is checked row by row, so output
     * of a command still running, or that ended after the cutoff, stays.
     */
    async deleteCommandOutputEndedBy(endedBy: number, limit: number): Promise<number> {
      const result = await db
        .deleteFrom('command_output')
        .where((eb) =>
          eb(
            eb.refTuple('command_id', 'seq'),
            'in',
            eb
              .selectFrom('command_output as old')
              .select(['old.command_id', 'old.seq'])
              .where('old.created_at', '<=', endedBy)
              .where(({ exists, selectFrom }) =>
                exists(
                  selectFrom('commands')
                    .select('commands.id')
                    .whereRef('commands.id', '=', 'old.command_id')
                    .where('commands.status', 'in', TERMINAL_STATUSES)
                    .where('commands.finished_at', '<=', endedBy),
                ),
              )
              .limit(limit)
              .$asTuple('command_id', 'seq'),
          ),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  };
}

export type MaintenanceStore = ReturnType<typeof createMaintenanceStore>;
