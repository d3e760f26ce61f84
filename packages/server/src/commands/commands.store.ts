import type { Kysely, Transaction } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import type { GroupCommit } from '../db/group-commit.js';
import { afterCursor, type Cursor, containsAny, type SortOrder } from '../db/keyset.js';
import type {
  CommandApprovalsTable,
  CommandOutputTable,
  CommandStatus,
  CommandsTable,
  DB,
} from '../db/schema.js';
import { TERMINAL_STATUSES } from './command-status.js';

export type CommandRow = CommandsTable;
/** The columns the command list sorts by; `id` is creation order. */
export type CommandSortColumn = 'id' | 'service' | 'action' | 'status';

export interface CommandListQuery {
  status?: CommandStatus;
  agentId?: string;
  /** Only these agents' commands (those of a label-scoped caller's agents). */
  agentIds?: readonly string[];
  service?: string;
  requestedBy?: string;
  /** Found in the service, action or reason. */
  text?: string;
  /** Newest first unless said otherwise. */
  order?: SortOrder<CommandSortColumn>;
  from?: Cursor;
}
export type CommandApprovalRow = CommandApprovalsTable;
export type CommandOutputRow = CommandOutputTable;

/**
 * Commands, approvals and output (CMD-4). Every change of status is a guarded update. Writes that
 * change a command take the transaction its audit events are appended in (AUD-7); the service runs
 * them through the group commit, as they are the hot path of dispatch. Output is group-committed here.
 */
export function createCommandsStore(db: Kysely<DB>, groupCommit: GroupCommit) {
  // Read on every request about a command and on every report an agent makes.
  const byId = compiledOnce(db, (args: { orgId: string; id: string }) =>
    db.selectFrom('commands').selectAll().where('org_id', '=', args.orgId).where('id', '=', args.id),
  );
  const byIdForAgent = compiledOnce(db, (args: { agentId: string; id: string }) =>
    db.selectFrom('commands').selectAll().where('agent_id', '=', args.agentId).where('id', '=', args.id),
  );
  // Every agent's connection asks (a reconnecting fleet, thousands at once).
  const deliverable = compiledOnce(db, (args: { agentId: string; now: number }) =>
    db
      .selectFrom('commands')
      .selectAll()
      .where('agent_id', '=', args.agentId)
      .where('status', '=', 'queued')
      .where('expires_at', '>', args.now)
      .orderBy('id')
      .limit(100),
  );
  const policy = compiledOnce(db, (args: { orgId: string }) =>
    db.selectFrom('command_policies').selectAll().where('org_id', '=', args.orgId),
  );

  return {
    async insert(trx: Transaction<DB>, row: CommandRow): Promise<void> {
      await trx.insertInto('commands').values(row).execute();
    },
    find: (orgId: string, id: string) => byId.first({ orgId, id }),
    /** A command as its agent may see it: only the agent it names. */
    findForAgent: (agentId: string, id: string) => byIdForAgent.first({ agentId, id }),
    findByIdempotencyKey: (orgId: string, requestedBy: string, key: string) =>
      db
        .selectFrom('commands')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('requested_by', '=', requestedBy)
        .where('idempotency_key', '=', key)
        .executeTakeFirst(),
    /**
     * Moves a command from one of `from` to `to`, with `changes`; false when it was no longer in
     * any of `from` (another transition won). Terminal states are never in `from`, so never left.
     */
    async transition(
      trx: Transaction<DB>,
      id: string,
      from: readonly CommandStatus[],
      to: CommandStatus,
      changes: Partial<Omit<CommandRow, 'id' | 'status'>> = {},
    ): Promise<boolean> {
      const result = await trx
        .updateTable('commands')
        .set({ ...changes, status: to })
        .where('id', '=', id)
        .where(
          'status',
          'in',
          from.filter((status) => !TERMINAL_STATUSES.includes(status)),
        )
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    /** Commands waiting for this agent, oldest first, still deliverable. */
    deliverable: (agentId: string, now: number) => deliverable.all({ agentId, now }),
    /**
     * Which of these agents have commands waiting to be delivered (the delivery sweep of the agents an
     * instance holds): one query on (agent_id, status) per thousand agents.
     */
    async agentsWithDeliverable(agentIds: readonly string[], now: number): Promise<string[]> {
      const found: string[] = [];
      for (let i = 0; i < agentIds.length; i += 1000) {
        const rows = await db
          .selectFrom('commands')
          .select('agent_id')
          .distinct()
          .where('agent_id', 'in', agentIds.slice(i, i + 1000))
          .where('status', '=', 'queued')
          .where('expires_at', '>', now)
          .execute();
        found.push(...rows.map((row) => row.agent_id));
      }
      return found;
    },
    /**
     * Commands past a deadline: approvals past theirs, deliveries past theirs, and runs past their
     * action's timeout by more than `executionGraceMs`.
     */
    overdue: (now: number, executionGraceMs: number) =>
      db
        .selectFrom('commands')
        .selectAll()
        .where((eb) =>
          eb.or([
            eb.and([eb('status', '=', 'awaiting_approval'), eb('approval_expires_at', '<=', now)]),
            eb.and([eb('status', 'in', ['queued', 'dispatched']), eb('expires_at', '<=', now)]),
            eb.and([
              eb('status', '=', 'running'),
              eb(eb('started_at', '+', eb('timeout_seconds', '*', 1000)), '<=', now - executionGraceMs),
            ]),
          ]),
        )
        .limit(500)
        .execute(),
    /** Commands of an agent that have not ended. */
    inFlightOf: (agentId: string) =>
      db
        .selectFrom('commands')
        .selectAll()
        .where('agent_id', '=', agentId)
        .where('status', 'in', ['awaiting_approval', 'held', 'queued', 'dispatched', 'running'])
        .execute(),
    /** A page of the command list: filtered, searched, in (column, id) order after `from`. */
    page: (orgId: string, limit: number, filters: CommandListQuery) => {
      let query = db.selectFrom('commands').selectAll().where('org_id', '=', orgId);
      if (filters.status) query = query.where('status', '=', filters.status);
      if (filters.agentId) query = query.where('agent_id', '=', filters.agentId);
      if (filters.agentIds) query = query.where('agent_id', 'in', [...filters.agentIds]);
      if (filters.service) query = query.where('service', '=', filters.service);
      if (filters.requestedBy) query = query.where('requested_by', '=', filters.requestedBy);
      if (filters.text) query = query.where(containsAny(['service', 'action', 'reason'], filters.text));
      const order = filters.order ?? { column: 'id', direction: 'desc' };
      if (filters.from) query = query.where(afterCursor(order.column, 'id', order.direction, filters.from));
      query = query.orderBy(order.column, order.direction);
      if (order.column !== 'id') query = query.orderBy('id', order.direction);
      return query.limit(limit).execute();
    },
    awaitingApproval: (orgId: string) =>
      db
        .selectFrom('commands')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('status', '=', 'awaiting_approval')
        // A bulk run's targets wait in its own inbox entry, decided on as one.
        .where('bulk_run_id', 'is', null)
        .orderBy('id')
        .limit(500)
        .execute(),

    async insertDecision(trx: Transaction<DB>, row: CommandApprovalRow): Promise<boolean> {
      const result = await trx
        .insertInto('command_approvals')
        .values(row)
        .onConflict((oc) => oc.columns(['command_id', 'user_id']).doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
    },
    /**
     * Takes the row lock of a command awaiting approval (an update that changes nothing else), so the
     * decisions on one command are made one at a time on PostgreSQL; false when it no longer awaits.
     */
    async lockAwaitingApproval(trx: Transaction<DB>, id: string, now: number): Promise<boolean> {
      const result = await trx
        .updateTable('commands')
        .set({ updated_at: now })
        .where('id', '=', id)
        .where('status', '=', 'awaiting_approval')
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    /** A command's status, read inside `trx`. */
    async statusIn(trx: Transaction<DB>, id: string): Promise<CommandStatus | undefined> {
      const row = await trx.selectFrom('commands').select('status').where('id', '=', id).executeTakeFirst();
      return row?.status;
    },
    decisions: (commandId: string, trx: Kysely<DB> = db) =>
      trx
        .selectFrom('command_approvals')
        .selectAll()
        .where('command_id', '=', commandId)
        .orderBy('created_at')
        .execute(),

    /** The decisions on these commands, in one query, by command. */
    async decisionsOf(commandIds: readonly string[]): Promise<Map<string, CommandApprovalRow[]>> {
      const byCommand = new Map<string, CommandApprovalRow[]>();
      if (commandIds.length === 0) return byCommand;
      const rows = await db
        .selectFrom('command_approvals')
        .selectAll()
        .where('command_id', 'in', [...commandIds])
        .orderBy('created_at')
        .execute();
      for (const row of rows) byCommand.set(row.command_id, [...(byCommand.get(row.command_id) ?? []), row]);
      return byCommand;
    },

    async appendOutput(row: CommandOutputRow, bytes: number, truncated: boolean): Promise<void> {
      await groupCommit(async (trx) => {
        const stored = await trx
          .insertInto('command_output')
          .values(row)
          .onConflict((oc) => oc.doNothing())
          .executeTakeFirst();
        // A chunk the agent sent again (after a reconnect) is stored, and counted, once.
        if (Number(stored.numInsertedOrUpdatedRows ?? 0n) !== 1) return;
        await trx
          .updateTable('commands')
          .set((eb) => ({
            output_bytes: eb('output_bytes', '+', bytes),
            output_truncated: truncated ? 1 : 0,
          }))
          .where('id', '=', row.command_id)
          .execute();
      });
    },
    policyOf: (orgId: string) => policy.first({ orgId }),
    async setPolicy(
      trx: Transaction<DB>,
      orgId: string,
      policy: string,
      updatedBy: string,
      now: number,
    ): Promise<void> {
      await trx
        .insertInto('command_policies')
        .values({ org_id: orgId, policy, updated_by: updatedBy, updated_at: now })
        .onConflict((oc) =>
          oc.column('org_id').doUpdateSet({ policy, updated_by: updatedBy, updated_at: now }),
        )
        .execute();
    },
    output: (commandId: string, afterSeq = -1) =>
      db
        .selectFrom('command_output')
        .selectAll()
        .where('command_id', '=', commandId)
        .where('seq', '>', afterSeq)
        .orderBy('seq')
        .limit(5000)
        .execute(),
  };
}

export type CommandsStore = ReturnType<typeof createCommandsStore>;
