import type { Kysely, Transaction } from 'kysely';
import type { BulkRunStatus, BulkRunsTable, CommandStatus, DB } from '../db/schema.js';
import type { CommandRow } from './commands.store.js';

export type BulkRunRow = BulkRunsTable;

/** A run's target: its command, with its agent's name and labels. */
export type BulkTarget = CommandRow & { agent_name: string; agent_labels: string };

/** A decision on a run, as given once by a person over every target. */
export interface RunDecision {
  user_id: string;
  decision: 'approved' | 'rejected';
  comment: string;
  created_at: number;
}

/** A run's targets, counted by the status of their commands. */
export type TargetCounts = Partial<Record<CommandStatus, number>>;

/** An agent a selector may pick, with the declaration of the asked service if it has one. */
export interface CandidateAgent {
  id: string;
  name: string;
  labels: string;
  status: string;
  /** JSON array of the service's action declarations; null when the agent has no such service. */
  actions: string | null;
}

/**
 * Bulk runs (CMD-8). The run's own row is written only in a transaction that also writes its audit
 * events; its targets are commands, written through the commands' own store.
 */
export function createBulkRunsStore(db: Kysely<DB>) {
  return {
    async insert(tx: Transaction<DB>, row: BulkRunRow, targets: readonly CommandRow[]): Promise<void> {
      await tx.insertInto('bulk_runs').values(row).execute();
      // In slices: a thousand targets in one statement would pass SQLite's bound-parameter limit.
      for (let start = 0; start < targets.length; start += 50)
        await tx
          .insertInto('commands')
          .values(targets.slice(start, start + 50))
          .execute();
    },

    /** A run by id alone, with its organization's slug: the scheduler's read, never a caller's. */
    findById: (id: string) =>
      db
        .selectFrom('bulk_runs')
        .innerJoin('orgs', 'orgs.id', 'bulk_runs.org_id')
        .selectAll('bulk_runs')
        .select('orgs.slug as org_slug')
        .where('bulk_runs.id', '=', id)
        .executeTakeFirst(),

    find: (orgId: string, id: string) =>
      db
        .selectFrom('bulk_runs')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst(),

    page: (orgId: string, limit: number, filters: { status?: BulkRunStatus; before?: string }) => {
      let query = db.selectFrom('bulk_runs').selectAll().where('org_id', '=', orgId);
      if (filters.status) query = query.where('status', '=', filters.status);
      if (filters.before) query = query.where('id', '<', filters.before);
      return query.orderBy('id', 'desc').limit(limit).execute();
    },

    /**
     * Runs the scheduler's sweep looks at, a page at a time after `afterId`: every running run, and
     * runs awaiting approval once their approvals may have run out (`approvalsDueBefore`).
     */
    active: (afterId: string, approvalsDueBefore: number, limit: number) =>
      db
        .selectFrom('bulk_runs')
        .select('id')
        .where('id', '>', afterId)
        .where((eb) =>
          eb.or([
            eb('status', '=', 'running'),
            eb.and([eb('status', '=', 'awaiting_approval'), eb('created_at', '<=', approvalsDueBefore)]),
          ]),
        )
        .orderBy('id')
        .limit(limit)
        .execute(),

    /** The org's agents with the asked service's declaration: the candidates a selector picks from. */
    candidates: (orgId: string, service: string): Promise<CandidateAgent[]> =>
      db
        .selectFrom('agents')
        .leftJoin('services', (join) =>
          join.onRef('services.agent_id', '=', 'agents.id').on('services.name', '=', service),
        )
        .select(['agents.id', 'agents.name', 'agents.labels', 'agents.status', 'services.actions'])
        .where('agents.org_id', '=', orgId)
        .orderBy('agents.name')
        .orderBy('agents.id')
        .execute(),

    /** The run's targets, each with its agent's name and labels (what scoping and display need). */
    targets: (runId: string): Promise<BulkTarget[]> =>
      db
        .selectFrom('commands')
        .innerJoin('agents', 'agents.id', 'commands.agent_id')
        .selectAll('commands')
        .select(['agents.name as agent_name', 'agents.labels as agent_labels'])
        .where('commands.bulk_run_id', '=', runId)
        .orderBy('agents.name')
        .orderBy('commands.id')
        .execute(),

    /** The labels of the agents each run targets: a list shows only runs touching the reader's scope. */
    async targetLabelsOf(runIds: readonly string[]): Promise<Map<string, string[]>> {
      const byRun = new Map<string, string[]>();
      if (runIds.length === 0) return byRun;
      const rows = await db
        .selectFrom('commands')
        .innerJoin('agents', 'agents.id', 'commands.agent_id')
        .select(['commands.bulk_run_id', 'agents.labels'])
        .distinct()
        .where('commands.bulk_run_id', 'in', runIds)
        .execute();
      for (const row of rows) {
        const labels = byRun.get(row.bulk_run_id as string) ?? [];
        labels.push(row.labels);
        byRun.set(row.bulk_run_id as string, labels);
      }
      return byRun;
    },

    /** The runs among `runIds` that `userId` has decided on (a decision is stored on each target). */
    async decidedBy(runIds: readonly string[], userId: string): Promise<Set<string>> {
      if (runIds.length === 0) return new Set();
      const rows = await db
        .selectFrom('command_approvals')
        .innerJoin('commands', 'commands.id', 'command_approvals.command_id')
        .select('commands.bulk_run_id')
        .distinct()
        .where('command_approvals.user_id', '=', userId)
        .where('commands.bulk_run_id', 'in', runIds)
        .execute();
      return new Set(rows.map((row) => row.bulk_run_id as string));
    },

    /** Names and emails of people, for display. */
    async peopleOf(ids: readonly string[]): Promise<Map<string, { email: string; name: string }>> {
      if (ids.length === 0) return new Map();
      const rows = await db
        .selectFrom('users')
        .select(['id', 'email', 'display_name'])
        .where('id', 'in', [...new Set(ids)])
        .execute();
      return new Map(rows.map((row) => [row.id, { email: row.email, name: row.display_name }]));
    },

    targetsIn: (runId: string, statuses: readonly CommandStatus[], limit: number): Promise<BulkTarget[]> =>
      db
        .selectFrom('commands')
        .innerJoin('agents', 'agents.id', 'commands.agent_id')
        .selectAll('commands')
        .select(['agents.name as agent_name', 'agents.labels as agent_labels'])
        .where('commands.bulk_run_id', '=', runId)
        .where('commands.status', 'in', statuses)
        .orderBy('commands.id')
        .limit(limit)
        .execute(),

    /** Every decision on a run, once per person: each is stored on every target it covered. */
    decisionsOf: (runId: string): Promise<RunDecision[]> =>
      db
        .selectFrom('command_approvals')
        .innerJoin('commands', 'commands.id', 'command_approvals.command_id')
        .select([
          'command_approvals.user_id',
          'command_approvals.decision',
          'command_approvals.comment',
          'command_approvals.created_at',
        ])
        .distinct()
        .where('commands.bulk_run_id', '=', runId)
        .orderBy('command_approvals.created_at')
        .execute(),

    async counts(runId: string, executor: Kysely<DB> | Transaction<DB> = db): Promise<TargetCounts> {
      const rows = await executor
        .selectFrom('commands')
        .select((eb) => ['status', eb.fn.countAll<string | number>().as('n')])
        .where('bulk_run_id', '=', runId)
        .groupBy('status')
        .execute();
      return Object.fromEntries(rows.map((row) => [row.status, Number(row.n)]));
    },

    /**
     * The targets of many runs (a list page) counted by status and by their agent's labels, so that a
     * reader counts only the targets in their scope.
     */
    countsByLabels: (runIds: readonly string[]) =>
      runIds.length === 0
        ? Promise.resolve([])
        : db
            .selectFrom('commands')
            .innerJoin('agents', 'agents.id', 'commands.agent_id')
            .select((eb) => [
              'commands.bulk_run_id',
              'commands.status',
              'agents.labels',
              eb.fn.countAll<string | number>().as('n'),
            ])
            .where('commands.bulk_run_id', 'in', runIds)
            .groupBy(['commands.bulk_run_id', 'commands.status', 'agents.labels'])
            .execute(),

    /**
     * Takes the run's row for the rest of `tx` (PostgreSQL locks it; SQLite's one writer already
     * serializes): two schedulers deciding at once would release more targets than the run allows.
     * Undefined when the run is no longer in `from`.
     */
    async lock(tx: Transaction<DB>, id: string, from: readonly BulkRunStatus[], now: number) {
      return tx
        .updateTable('bulk_runs')
        .set({ updated_at: now })
        .where('id', '=', id)
        .where('status', 'in', from)
        .returningAll()
        .executeTakeFirst();
    },

    async finish(
      tx: Transaction<DB>,
      id: string,
      changes: Partial<Pick<BulkRunRow, 'status' | 'stop_reason' | 'finished_at' | 'updated_at'>>,
    ): Promise<void> {
      await tx.updateTable('bulk_runs').set(changes).where('id', '=', id).execute();
    },
  };
}

export type BulkRunsStore = ReturnType<typeof createBulkRunsStore>;
