import type { Logger } from 'pino';
import type { MaintenanceStore } from './maintenance.store.js';
import type { MaintenanceMetrics } from './metrics.js';

/**
 * The maintenance jobs (PLAT-6): rows that can no longer be used are deleted, and command output is
 * pruned after its retention. Nothing here changes what anyone can do: an expired session, token,
 * invitation or challenge is already refused by the code that reads it (each compares its expiry to
 * the clock), so these deletes are housekeeping — the tables stay small and a copy of the database
 * holds less. That is why a run is logged and counted in metrics but not written to the audit log.
 */

export const MAINTENANCE_JOBS = [
  'webauthn_challenges',
  'sessions',
  'registration_tokens',
  'invitations',
  'command_output',
] as const;
export type MaintenanceJob = (typeof MAINTENANCE_JOBS)[number];

export interface MaintenanceOptions {
  /** The session idle timeout: a session unused this long is as dead as one past its lifetime. */
  sessionIdleMs: number;
  commandOutputRetentionDays: number;
  /**
   * Rows per delete statement. A thousand rows is a few milliseconds of SQLite's write lock, so
   * requests and agent reports keep flowing while a backlog of millions is worked through.
   */
  chunkSize?: number;
}

export interface MaintenanceJobResult {
  job: MaintenanceJob;
  removed: number;
  /** Delete statements issued: the last one removes fewer than a chunk (often none). */
  chunks: number;
}

const DEFAULT_CHUNK_SIZE = 1000;
const DAY_MS = 86_400_000;

/** Lets queued writes (and everything else) run between two chunks of a long delete. */
const yieldTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export function createMaintenanceService(deps: {
  store: MaintenanceStore;
  clock: () => number;
  logger: Logger;
  metrics: MaintenanceMetrics;
  options: MaintenanceOptions;
}) {
  const { store, clock, logger, metrics, options } = deps;
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const retentionMs = options.commandOutputRetentionDays * DAY_MS;
  let stopped = false;

  const deleteChunk: Record<MaintenanceJob, (now: number) => Promise<number>> = {
    webauthn_challenges: (now) => store.deleteExpiredWebauthnChallenges(now, chunkSize),
    sessions: (now) => store.deleteExpiredSessions(now, options.sessionIdleMs, chunkSize),
    registration_tokens: (now) => store.deleteExpiredRegistrationTokens(now, chunkSize),
    invitations: (now) => store.deleteExpiredInvitations(now, chunkSize),
    command_output: (now) => store.deleteCommandOutputEndedBy(now - retentionMs, chunkSize),
  };

  /**
   * Runs one job to the end of its backlog as of `now`, one chunk at a time. Removed rows are counted
   * as each chunk commits, so a job that fails halfway still reports what it did.
   */
  async function runJob(job: MaintenanceJob, now: number = clock()): Promise<MaintenanceJobResult> {
    let removed = 0;
    let chunks = 0;
    for (;;) {
      const deleted = await deleteChunk[job](now);
      chunks += 1;
      removed += deleted;
      if (deleted > 0) metrics.removed.inc({ job }, deleted);
      if (deleted < chunkSize || stopped) break;
      await yieldTurn();
    }
    return { job, removed, chunks };
  }

  return {
    /**
     * Runs every job once, against one reading of the clock, so a long run does not move its own
     * cutoff. A failing job is logged and counted, and the others still run.
     */
    async runAll(): Promise<MaintenanceJobResult[]> {
      const now = clock();
      const results: MaintenanceJobResult[] = [];
      for (const job of MAINTENANCE_JOBS) {
        if (stopped) break;
        try {
          results.push(await runJob(job, now));
        } catch (error) {
          metrics.failures.inc({ job });
          logger.error({ err: error, job }, 'maintenance job failed');
        }
      }
      const removed = Object.fromEntries(results.map((result) => [result.job, result.removed]));
      if (results.some((result) => result.removed > 0)) {
        logger.info({ removed }, 'maintenance removed expired rows');
      } else {
        logger.debug({ removed }, 'maintenance found nothing to remove');
      }
      return results;
    },
    runJob,
    /** Ends a run in progress after its current chunk, so shutdown does not wait for a whole backlog. */
    stop(): void {
      stopped = true;
    },
  };
}

export type MaintenanceService = ReturnType<typeof createMaintenanceService>;
