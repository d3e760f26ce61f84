import type { AccessService } from '../access/access.service.js';
import { decide } from '../access/authorize.js';
import { parseLabels } from '../agents/agents.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { BulkRunStatus, CommandStatus } from '../db/schema.js';
import type { BulkRunRow, BulkRunsStore, TargetCounts } from './bulk-runs.store.js';
import type { CommandSealer } from './command-seal.js';
import type { CommandsService } from './commands.service.js';
import type { CommandRow, CommandsStore } from './commands.store.js';
import { APPROVAL_TTL_MS } from './policy.js';

/**
 * The bulk runs' scheduler (CMD-8): releases a running run's waiting targets as room frees up, stops
 * the run past its error threshold, and closes it once no target is left to run. Driven by each
 * target's end and, behind that, by a sweep of every run that may move: each step is a guarded
 * update under the run's row lock, so it is safe from any instance, at any time, again after a crash.
 */

/** The most targets one run may have: beyond, split the fleet with a narrower selector. */
export const MAX_BULK_TARGETS = 5000;

/** Outcomes that count against the run's error threshold. */
const ERRORS: readonly CommandStatus[] = ['failed', 'timed_out', 'expired'];
const IN_FLIGHT: readonly CommandStatus[] = ['queued', 'dispatched', 'running'];

const SWEEP_PAGE = 500;

export const runTarget = (run: Pick<BulkRunRow, 'id' | 'service' | 'action'>) => ({
  type: 'bulk_run',
  id: run.id,
  display: `${run.service}/${run.action}`,
});
const schedulerActor = { type: 'system' as const, id: 'bulk-scheduler', display: 'bulk run scheduler' };

function sum(counts: TargetCounts, statuses: readonly CommandStatus[]): number {
  return statuses.reduce((total, status) => total + (counts[status] ?? 0), 0);
}

export function createBulkRunScheduler(deps: {
  store: BulkRunsStore;
  commands: CommandsService;
  commandsStore: CommandsStore;
  access: AccessService;
  audit: AuditService;
  sealer: CommandSealer;
  deliveryTtlMs: number;
  clock: () => number;
}) {
  const { store, commandsStore, access, audit, sealer, clock } = deps;
  const { bulk } = deps.commands;

  /** A run as the scheduler reads it, with its organization's slug (to load the requester's access). */
  type ScheduledRun = BulkRunRow & { org_slug: string };

  /**
   * Moves a running run on: stops it at its error threshold, releases waiting targets up to its
   * concurrency, and ends it once no target is left to run. Safe to call at any time, from anywhere,
   * and again after a crash: every step is a guarded update under the run's lock.
   */
  async function advance(runId: string): Promise<void> {
    const run = await store.findById(runId);
    if (!run || (run.status !== 'running' && run.status !== 'awaiting_approval')) return;
    const counts = await store.counts(run.id);
    if (run.status === 'awaiting_approval') {
      // Every target's approval ran out (or was cancelled): the run ends with them.
      if (!counts.awaiting_approval) await end(run, counts);
      return;
    }
    const errors = sum(counts, ERRORS);
    const held = counts.held ?? 0;
    // A run stopped or cancelled earlier whose waiting targets were not all marked (a crash or a
    // failed write between the two steps): they are marked now.
    if (held > 0 && run.stop_reason !== '') await skipHeld(run, stoppedMessage(run, errors));
    else if (held > 0 && errors > run.max_errors) await stop(run, errors);
    else if (held > 0) await release(run, counts);
    const now = await store.counts(run.id);
    if (!now.held && !now.awaiting_approval && sum(now, IN_FLIGHT) === 0) await end(run, now);
  }

  const stoppedMessage = (run: BulkRunRow, errors: number) =>
    run.stop_reason === 'cancelled'
      ? 'cancelled with its run before it was sent'
      : `skipped: the run stopped after ${errors} failed target(s), more than the ${run.max_errors} it allows`;

  /**
   * Releases as many held targets as the run's concurrency leaves room for, and sends them. Each is
   * checked first as dispatch checks a command (CMD-7): its seal, its approvals, its organization;
   * and the requester must still be allowed to run it, for a run can outlast their access.
   */
  async function release(run: ScheduledRun, counts: TargetCounts): Promise<void> {
    // Only as many as there is room for are checked and sealed (the room is counted again below,
    // under the run's lock): a target ending releases one, not a wave's worth of checks.
    const room = run.max_concurrency - sum(counts, IN_FLIGHT);
    if (room <= 0) return;
    const now = clock();
    const requester = await access.load(run.org_slug, run.requested_by);
    const prepared: CommandRow[] = [];
    for (const { agent_name: _name, agent_labels: labels, ...target } of await store.targetsIn(
      run.id,
      ['held'],
      room,
    )) {
      const intact =
        target.org_id === run.org_id ? await bulk.approversIfIntact(target) : { mismatched: ['orgId'] };
      if ('mismatched' in intact) {
        await bulk.failTampered(target, intact.mismatched, now);
        continue;
      }
      const allowed =
        requester &&
        decide(requester.access, 'commands:create', { kind: 'agent', labels: parseLabels(labels) }).allowed;
      if (!allowed) {
        await skip(
          run,
          target,
          'skipped: the requester may no longer run commands on this agent',
          'requester_access',
        );
        continue;
      }
      // Its delivery time from now, and its seal made again for it: from the row just checked.
      const queued: CommandRow = { ...target, status: 'queued', expires_at: now + deps.deliveryTtlMs };
      queued.seal = await sealer.sealRequest(queued);
      prepared.push(queued);
    }
    const released = await audit.withEvents(async (tx, events) => {
      const locked = await store.lock(tx, run.id, ['running'], now);
      // Stopped, cancelled or past its threshold since the counts above were read: nothing more goes.
      if (locked?.stop_reason !== '') return [];
      const counts = await store.counts(run.id, tx);
      if (sum(counts, ERRORS) > run.max_errors) return [];
      const room = run.max_concurrency - sum(counts, IN_FLIGHT);
      const moved: CommandRow[] = [];
      for (const queued of prepared.slice(0, Math.max(0, room)))
        if (
          await commandsStore.transition(tx, queued.id, ['held'], 'queued', {
            expires_at: queued.expires_at,
            seal: queued.seal,
            updated_at: now,
          })
        ) {
          moved.push(queued);
          events.push({
            orgId: run.org_id,
            actor: schedulerActor,
            action: 'command.released',
            target: bulk.target(queued),
            outcome: 'success',
            details: { bulkRunId: run.id, agentId: queued.agent_id },
          });
        }
      return moved;
    });
    for (const target of released) {
      bulk.changed('held', target);
      await bulk.dispatch(target);
    }
  }

  /** The error threshold is passed: nothing more is released, and the waiting targets are marked. */
  async function stop(run: BulkRunRow, errors: number): Promise<void> {
    const now = clock();
    const stopped = await audit.withEvents(async (tx, events) => {
      const locked = await store.lock(tx, run.id, ['running'], now);
      if (locked?.stop_reason !== '') return false;
      await store.finish(tx, run.id, { stop_reason: 'error_threshold' });
      events.push({
        orgId: run.org_id,
        actor: schedulerActor,
        action: 'bulk_run.stopped',
        target: runTarget(run),
        outcome: 'failure',
        details: { reason: 'error_threshold', errors, maxErrors: run.max_errors },
      });
      return true;
    });
    if (stopped) await skipHeld({ ...run, stop_reason: 'error_threshold' }, stoppedMessage(run, errors));
  }

  /** Marks one target never sent, saying why: cancelled with its run, skipped otherwise. */
  function skip(run: BulkRunRow, target: CommandRow, message: string, reason: string) {
    const cancelled = run.stop_reason === 'cancelled';
    return bulk.move(
      target,
      ['held'],
      cancelled ? 'cancelled' : 'skipped',
      { finished_at: clock(), message },
      {
        orgId: run.org_id,
        actor: schedulerActor,
        action: cancelled ? 'command.cancelled' : 'command.skipped',
        target: bulk.target(target),
        outcome: 'failure',
        details: { bulkRunId: run.id, reason },
      },
    );
  }

  async function skipHeld(run: BulkRunRow, message: string): Promise<void> {
    for (const { agent_name: _name, agent_labels: _labels, ...target } of await store.targetsIn(
      run.id,
      ['held'],
      MAX_BULK_TARGETS,
    ))
      await skip(run, target, message, run.stop_reason || 'stopped');
  }

  /** No target is left to run: the run ends, saying how (from its row as locked, not as read before). */
  async function end(run: BulkRunRow, counts: TargetCounts): Promise<void> {
    const now = clock();
    await audit.withEvents(async (tx, events) => {
      const locked = await store.lock(tx, run.id, [run.status], now);
      if (!locked) return;
      const ran = locked.target_count - (counts.skipped ?? 0);
      const status: BulkRunStatus =
        locked.status === 'awaiting_approval'
          ? counts.cancelled
            ? 'cancelled'
            : 'expired'
          : locked.stop_reason === 'cancelled'
            ? 'cancelled'
            : locked.stop_reason === '' && (counts.succeeded ?? 0) === ran
              ? 'succeeded'
              : 'failed';
      await store.finish(tx, run.id, { status, finished_at: now });
      events.push({
        orgId: run.org_id,
        actor: schedulerActor,
        action: 'bulk_run.finished',
        target: runTarget(run),
        outcome: status === 'succeeded' ? 'success' : 'failure',
        details: { status, counts: counts as Record<string, number> },
      });
    });
  }

  bulk.onTargetEnded((runId) => {
    advance(runId).catch(() => {
      // The sweep (advanceAll) picks the run up again: a failed step here loses nothing.
    });
  });

  return {
    advance,

    /** The sweep behind the event-driven steps: a step lost to a crash or an error is taken here. */
    async advanceAll(): Promise<number> {
      let swept = 0;
      // Every run that may move, a page at a time: none waits behind others that cannot.
      for (let after = ''; ; ) {
        const page = await store.active(after, clock() - APPROVAL_TTL_MS, SWEEP_PAGE);
        for (const run of page) await advance(run.id);
        swept += page.length;
        if (page.length < SWEEP_PAGE) return swept;
        after = page.at(-1)!.id;
      }
    },
  };
}
