import { createHash, randomBytes } from 'node:crypto';
import { type ActionDeclaration, canonicalJson, newId } from '@bulwark/protocol';
import type { AccessService } from '../access/access.service.js';
import { decide } from '../access/authorize.js';
import { type Caller, callerEvent } from '../access/caller.js';
import { parseSelector, selectorMatches } from '../access/label-selector.js';
import { parseLabels } from '../agents/agents.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { CommandStatus } from '../db/schema.js';
import { AppError, NotFoundError, ValidationError } from '../errors.js';
import type { SecretGrant, SecretsService } from '../secrets/secrets.service.js';
import { createBulkRunScheduler, MAX_BULK_TARGETS, runTarget } from './bulk-runs.scheduler.js';
import type { BulkRunRow, BulkRunsStore, CandidateAgent, TargetCounts } from './bulk-runs.store.js';
import type { CommandSealer } from './command-seal.js';
import { TERMINAL_STATUSES } from './command-status.js';
import { type CommandsService, paramsHashOf, type Requester } from './commands.service.js';
import type { CommandApprovalRow, CommandRow, CommandsStore } from './commands.store.js';
import { paramProblems } from './params-validator.js';
import { APPROVAL_TTL_MS, RISK_POLICY } from './policy.js';

/**
 * Bulk runs (CMD-8): one action on every agent a label selector matches, with Systems Manager's two
 * limits. `maxConcurrency` targets run at a time; once more than `maxErrors` have failed, no further
 * target is released, and those still waiting are marked `skipped` (the ones already running finish).
 * Both limits are a count ("10") or a share of the targets ("25%").
 *
 * The run is asked, confirmed and approved once, as a whole, at the highest risk any target declares;
 * each target is then a command of its own, sealed with its run, so that delivery, signing, the
 * integrity checks and the audit trail are exactly those of a single command.
 */

export interface CreateBulkRun {
  selector: string;
  service: string;
  action: string;
  params: Record<string, unknown>;
  reason: string;
  confirm: boolean;
  maxConcurrency: string;
  maxErrors: string;
}

const RISK_ORDER = ['low', 'medium', 'high', 'critical'] as const;
type Risk = (typeof RISK_ORDER)[number];

const LIMIT_SPEC = /^(\d{1,5})(%?)$/;

/**
 * A limit as asked, resolved against the number of targets: a share rounds up for concurrency (at
 * least one runs) and down for errors (10% of 5 targets tolerates none), as Systems Manager does.
 */
export function resolveLimit(
  spec: string,
  targets: number,
  kind: 'maxConcurrency' | 'maxErrors',
): number | { problem: string } {
  const match = LIMIT_SPEC.exec(spec.trim());
  if (!match) return { problem: 'must be a whole number such as 10, or a percentage such as 25%' };
  const value = Number(match[1]);
  const share = match[2] === '%';
  if (share && value > 100) return { problem: 'a percentage must be between 0% and 100%' };
  if (kind === 'maxConcurrency') {
    if (value < 1) return { problem: 'at least one target must be able to run' };
    return share ? Math.max(1, Math.ceil((targets * value) / 100)) : value;
  }
  return share ? Math.floor((targets * value) / 100) : value;
}

export function createBulkRunsService(deps: {
  store: BulkRunsStore;
  commands: CommandsService;
  commandsStore: CommandsStore;
  access: AccessService;
  secrets: SecretsService;
  audit: AuditService;
  sealer: CommandSealer;
  deliveryTtlMs: number;
  clock: () => number;
}) {
  const { store, commands, commandsStore, access, secrets, audit, sealer, clock } = deps;
  const { bulk } = commands;

  /** The run as the caller may see it: 404 when it is not the org's, or touches no agent in their scope. */
  async function readable(caller: Caller, id: string, permission: string) {
    const run = await store.find(caller.org.id, id);
    if (!run) throw new NotFoundError('No such bulk run.');
    const targets = await store.targets(run.id);
    const visible = targets.filter(
      (target) =>
        decide(caller.org.access, permission, { kind: 'agent', labels: parseLabels(target.agent_labels) })
          .allowed,
    );
    if (visible.length === 0) throw new NotFoundError('No such bulk run.');
    return { run, targets, visible };
  }

  /**
   * A decision covers the whole run: whoever decides must be allowed to decide on every target, and
   * may not be the one who asked.
   */
  async function decidable(caller: Requester, id: string, verb: 'approve' | 'reject') {
    const { run, targets, visible } = await readable(caller, id, 'approvals:decide');
    // Refused (and audited) on the first target out of the decider's scope.
    if (visible.length < targets.length)
      for (const target of targets)
        await access.authorize(caller, 'approvals:decide', {
          kind: 'agent',
          labels: parseLabels(target.agent_labels),
        });
    if (run.requested_by === caller.userId) {
      await audit.record(
        callerEvent(
          caller,
          'access.denied',
          runTarget(run),
          { reason: 'own_bulk_run', operation: verb },
          'denied',
        ),
      );
      throw new AppError(403, 'own_command', 'Someone other than the requester must decide on a bulk run.');
    }
    if (run.status !== 'awaiting_approval') throw bulkRunState(run.status, `${verb}d`);
    const now = clock();
    const waiting = targets.filter((target) => target.status === 'awaiting_approval');
    if (waiting.length === 0 || waiting.some((target) => (target.approval_expires_at ?? 0) <= now))
      throw bulkRunState('expired', `${verb}d`);
    bulk.assertStepUp(caller, (await commands.policyOf(caller.org.id))[run.risk]);
    // CMD-7: the decision is on each target as the server sealed it. A target changed behind the
    // server's back ends as failed, and nobody's approval is taken for the run.
    let tampered = 0;
    for (const target of waiting) {
      const mismatched = await sealer.requestMismatches(target);
      if (mismatched.length > 0) {
        tampered++;
        await bulk.failTampered(target, mismatched, now);
      }
    }
    if (tampered > 0)
      throw new AppError(
        409,
        'command_integrity',
        `${tampered} target(s) of this bulk run were changed after it was requested; it will not run as asked.`,
      );
    return { run, waiting };
  }

  async function sealedDecisions(
    caller: Caller,
    waiting: CommandRow[],
    decision: 'approved' | 'rejected',
    comment: string,
  ) {
    const now = clock();
    const decisions: CommandApprovalRow[] = [];
    for (const target of waiting) {
      const row: CommandApprovalRow = {
        command_id: target.id,
        org_id: target.org_id,
        user_id: caller.userId,
        decision,
        comment,
        created_at: now,
        seal: '',
      };
      row.seal = await sealer.sealDecision(row);
      decisions.push(row);
    }
    return decisions;
  }

  const scheduler = createBulkRunScheduler({
    store,
    commands,
    commandsStore,
    access,
    audit,
    sealer,
    deliveryTtlMs: deps.deliveryTtlMs,
    clock,
  });
  const { advance } = scheduler;

  /** The agents a selector picks for the caller: those that can run the action, and those that cannot. */
  async function candidatesFor(
    caller: Caller,
    input: Pick<CreateBulkRun, 'selector' | 'service' | 'action'>,
  ) {
    const selector = parseSelector(input.selector);
    if ('problem' in selector)
      throw new ValidationError(
        [{ path: 'body.selector', message: selector.problem }],
        'The label selector is not valid.',
      );
    const runnable: Array<{ agent: CandidateAgent; declared: ActionDeclaration }> = [];
    const excluded: Array<{ agent: CandidateAgent; reason: string }> = [];
    for (const agent of await store.candidates(caller.org.id, input.service)) {
      const labels = parseLabels(agent.labels);
      if (!selectorMatches(selector, labels)) continue;
      // Agents out of the caller's scope are not targets, and are not counted: they stay unseen.
      if (!decide(caller.org.access, 'commands:create', { kind: 'agent', labels }).allowed) continue;
      const declared = agent.actions
        ? (JSON.parse(agent.actions) as ActionDeclaration[]).find((a) => a.name === input.action)
        : undefined;
      if (agent.status !== 'active') excluded.push({ agent, reason: `the agent is ${agent.status}` });
      else if (!declared) excluded.push({ agent, reason: 'the agent declares no such service and action' });
      // SEC-4: a workload identity is minted per command, after its audience is checked for the
      // command; a run does not carry that check, so such actions run one command at a time.
      else if (declared.workloadIdentity)
        excluded.push({
          agent,
          reason: 'the action asks for a workload identity: run it as a single command',
        });
      else runnable.push({ agent, declared });
    }
    return { selector, runnable, excluded };
  }

  /** The agents the run targets, as far as the caller may run commands on them. */
  async function targetsFor(caller: Requester, input: CreateBulkRun) {
    const { selector, runnable, excluded } = await candidatesFor(caller, input);
    if (runnable.length + excluded.length > MAX_BULK_TARGETS)
      throw new ValidationError(
        [{ path: 'body.selector', message: `matches more than ${MAX_BULK_TARGETS} agents; narrow it` }],
        'The selector matches too many agents for one run.',
      );
    if (runnable.length === 0)
      throw new AppError(
        422,
        'no_targets',
        excluded.length === 0
          ? 'No agent you may run commands on matches this selector.'
          : `${excluded.length} agent(s) match, but none can run ${input.service}/${input.action} now.`,
      );
    return { selector, runnable, excluded };
  }

  /** Each run's targets by status, counting only those on agents within the caller's `permission`. */
  async function visibleCounts(caller: Caller, runs: readonly BulkRunRow[], permission: string) {
    const counts = new Map<string, TargetCounts>();
    for (const row of await store.countsByLabels(runs.map((run) => run.id))) {
      if (!decide(caller.org.access, permission, { kind: 'agent', labels: parseLabels(row.labels) }).allowed)
        continue;
      const run = counts.get(row.bulk_run_id as string) ?? {};
      run[row.status] = (run[row.status] ?? 0) + Number(row.n);
      counts.set(row.bulk_run_id as string, run);
    }
    return counts;
  }

  return {
    advance,

    /** The sweep behind the event-driven steps: a step lost to a crash or an error is taken here. */
    advanceAll: scheduler.advanceAll,

    /** What a run would target and ask for, before it is asked: the console shows it beside the form. */
    async preview(caller: Caller, input: Pick<CreateBulkRun, 'selector' | 'service' | 'action'>) {
      const { runnable, excluded } = await candidatesFor(caller, input);
      const risks = runnable.map(({ declared }) => RISK_ORDER.indexOf(declared.risk as Risk));
      const risk = risks.length > 0 ? RISK_ORDER[Math.max(...risks)] : undefined;
      return {
        risk,
        rule: risk ? (await commands.policyOf(caller.org.id))[risk] : undefined,
        targets: [
          ...runnable.map(({ agent }) => ({ agent, reason: '' })),
          ...excluded.map(({ agent, reason }) => ({ agent, reason })),
        ].slice(0, MAX_BULK_TARGETS),
        total: runnable.length + excluded.length,
      };
    },

    async create(caller: Requester, input: CreateBulkRun): Promise<BulkRunRow> {
      const { selector, runnable, excluded } = await targetsFor(caller, input);
      const targetCount = runnable.length + excluded.length;
      const limits = {
        maxConcurrency: resolveLimit(input.maxConcurrency, targetCount, 'maxConcurrency'),
        maxErrors: resolveLimit(input.maxErrors, targetCount, 'maxErrors'),
      };
      const limitProblems = Object.entries(limits).flatMap(([field, value]) =>
        typeof value === 'number' ? [] : [{ path: `body.${field}`, message: value.problem }],
      );
      if (limitProblems.length > 0) throw new ValidationError(limitProblems, 'The run limits are not valid.');
      // Every target checks the parameters against its own declaration of the action.
      for (const { agent, declared } of runnable) {
        const problems = paramProblems(declared.params, input.params);
        if (problems.length > 0)
          throw new ValidationError(
            problems,
            `The parameters do not match the action as ${agent.name} declares it.`,
          );
      }
      const risk =
        RISK_ORDER[Math.max(...runnable.map(({ declared }) => RISK_ORDER.indexOf(declared.risk as Risk)))] ??
        'critical';
      const grants = new Map<string, SecretGrant[]>();
      for (const { agent, declared } of runnable) {
        if (declared.secrets.length === 0) continue;
        await access.authorize(caller, 'secrets:use', { kind: 'agent', labels: parseLabels(agent.labels) });
        const key = JSON.stringify([...declared.secrets].sort());
        if (!grants.has(key)) grants.set(key, await secrets.grants(caller.org.id, declared.secrets));
      }
      if (risk === 'critical' && input.reason.trim() === '')
        throw new ValidationError(
          [{ path: 'body.reason', message: 'a critical-risk action needs a reason' }],
          'Say why this critical bulk run should happen.',
        );
      const policy = (await commands.policyOf(caller.org.id))[risk];
      if (policy.confirmation && !input.confirm)
        throw new ValidationError(
          [{ path: 'body.confirm', message: `a ${risk}-risk action must be confirmed` }],
          'Confirm the bulk run to start it.',
        );
      bulk.assertStepUp(caller, policy);

      const now = clock();
      const approvals = Math.max(policy.approvals, RISK_POLICY[risk].approvals);
      const run: BulkRunRow = {
        id: newId('blk', now),
        org_id: caller.org.id,
        selector: selector.text,
        service: input.service,
        action: input.action,
        params: JSON.stringify(input.params),
        reason: input.reason,
        risk,
        requested_by: caller.userId,
        status: approvals > 0 ? 'awaiting_approval' : 'running',
        max_concurrency_spec: input.maxConcurrency.trim(),
        max_concurrency: limits.maxConcurrency as number,
        max_errors_spec: input.maxErrors.trim(),
        max_errors: limits.maxErrors as number,
        target_count: targetCount,
        stop_reason: '',
        created_at: now,
        updated_at: now,
        finished_at: null,
      };
      const commandOf = (
        agent: CandidateAgent,
        status: CommandStatus,
        declared?: ActionDeclaration,
      ): CommandRow => ({
        id: newId('cmd', now),
        org_id: caller.org.id,
        agent_id: agent.id,
        service: input.service,
        action: input.action,
        params: run.params,
        reason: input.reason,
        risk,
        required_approvals: approvals,
        requested_by: caller.userId,
        status,
        idempotency_key: null,
        request_hash: createHash('sha256')
          .update(canonicalJson({ run: run.id, agent: agent.id }))
          .digest('hex'),
        nonce: randomBytes(32).toString('base64url'),
        timeout_seconds: declared?.timeoutSeconds ?? 0,
        created_at: now,
        updated_at: now,
        approval_expires_at: approvals > 0 ? now + APPROVAL_TTL_MS : null,
        expires_at: now + (approvals > 0 ? APPROVAL_TTL_MS : 0) + deps.deliveryTtlMs,
        dispatched_at: null,
        started_at: null,
        finished_at: status === 'skipped' ? now : null,
        exit_code: null,
        message: '',
        output_bytes: 0,
        output_truncated: 0,
        final_acked: 0,
        secrets: JSON.stringify(
          declared ? (grants.get(JSON.stringify([...declared.secrets].sort())) ?? []) : [],
        ),
        seal: '',
        bulk_run_id: run.id,
      });
      const targets: CommandRow[] = [];
      for (const { agent, declared } of runnable)
        targets.push(commandOf(agent, approvals > 0 ? 'awaiting_approval' : 'held', declared));
      for (const { agent, reason } of excluded)
        targets.push({ ...commandOf(agent, 'skipped'), message: `skipped: ${reason}` });
      // CMD-7: each target sealed as the server accepts it, its run included.
      for (const target of targets) target.seal = await sealer.sealRequest(target);

      const paramsHash = paramsHashOf(input.params);
      await audit.withEvents(
        async (tx, events) => {
          await store.insert(tx, run, targets);
          events.push(
            callerEvent(caller, 'bulk_run.created', runTarget(run), {
              selector: run.selector,
              risk,
              status: run.status,
              requiredApprovals: approvals,
              targets: runnable.length,
              skipped: excluded.length,
              maxConcurrency: run.max_concurrency_spec,
              maxErrors: run.max_errors_spec,
              paramsHash,
              reason: input.reason,
            }),
          );
          for (const target of targets)
            events.push(
              target.status === 'skipped'
                ? callerEvent(
                    caller,
                    'command.skipped',
                    bulk.target(target),
                    { bulkRunId: run.id, agentId: target.agent_id, reason: target.message },
                    'failure',
                  )
                : callerEvent(caller, 'command.created', bulk.target(target), {
                    agentId: target.agent_id,
                    bulkRunId: run.id,
                    risk,
                    status: target.status,
                    requiredApprovals: approvals,
                    paramNames: Object.keys(input.params),
                    paramsHash,
                    reason: input.reason,
                  }),
            );
        },
        { grouped: true },
      );
      for (const target of targets) bulk.changed(undefined, target);
      if (run.status === 'running') await advance(run.id);
      return (await store.findById(run.id)) ?? run;
    },

    /** Approves every target of the run at once; the run starts when the last approval needed is given. */
    async approve(caller: Requester, id: string, comment: string): Promise<BulkRunRow> {
      const { run, waiting } = await decidable(caller, id, 'approve');
      const decisions = await sealedDecisions(caller, waiting, 'approved', comment);
      const started = await audit.withEvents(async (tx, events) => {
        for (const [index, target] of waiting.entries())
          await bulk.storeDecision(tx, target, decisions[index]!);
        const first = waiting[0]!;
        const approvals = (await commandsStore.decisions(first.id, tx)).filter(
          (d) => d.decision === 'approved',
        );
        const enough = approvals.length >= first.required_approvals;
        events.push(
          callerEvent(caller, 'bulk_run.approved', runTarget(run), {
            comment,
            released: enough,
            targets: waiting.length,
          }),
        );
        if (!enough) return false;
        for (const target of waiting)
          await commandsStore.transition(tx, target.id, ['awaiting_approval'], 'held', {
            updated_at: clock(),
          });
        if (!(await store.lock(tx, run.id, ['awaiting_approval'], clock())))
          throw bulkRunState(run.status, 'approved');
        await store.finish(tx, run.id, { status: 'running' });
        return true;
      });
      for (const target of waiting)
        bulk.changed('awaiting_approval', started ? { ...target, status: 'held' } : target);
      if (started) await advance(run.id);
      return (await store.findById(run.id)) ?? run;
    },

    /** Rejects the run: every target ends as rejected, and nothing runs. A rejection says why. */
    async reject(caller: Requester, id: string, comment: string): Promise<BulkRunRow> {
      if (comment.trim() === '')
        throw new ValidationError(
          [{ path: 'body.comment', message: 'say why the run is rejected' }],
          'A rejection needs a comment.',
        );
      const { run, waiting } = await decidable(caller, id, 'reject');
      const decisions = await sealedDecisions(caller, waiting, 'rejected', comment);
      const now = clock();
      await audit.withEvents(async (tx, events) => {
        for (const [index, target] of waiting.entries()) {
          await bulk.storeDecision(tx, target, decisions[index]!);
          await commandsStore.transition(tx, target.id, ['awaiting_approval'], 'rejected', {
            finished_at: now,
            updated_at: now,
            message: `rejected: ${comment}`.slice(0, 500),
          });
        }
        if (!(await store.lock(tx, run.id, ['awaiting_approval'], now)))
          throw bulkRunState(run.status, 'rejected');
        await store.finish(tx, run.id, { status: 'rejected', finished_at: now });
        events.push(
          callerEvent(caller, 'bulk_run.rejected', runTarget(run), { comment, targets: waiting.length }),
        );
      });
      for (const target of waiting)
        bulk.changed('awaiting_approval', { ...target, status: 'rejected', finished_at: now });
      return (await store.findById(run.id)) ?? run;
    },

    /** Cancels the run: no target is released any more, and those not finished are cancelled. */
    async cancel(caller: Caller, id: string): Promise<BulkRunRow> {
      const { run, targets, visible } = await readable(caller, id, 'commands:cancel');
      // Cancelling stops the whole run: the caller must be allowed to cancel on every target.
      if (visible.length < targets.length)
        for (const target of targets)
          await access.authorize(caller, 'commands:cancel', {
            kind: 'agent',
            labels: parseLabels(target.agent_labels),
          });
      if (run.status !== 'awaiting_approval' && run.status !== 'running')
        throw bulkRunState(run.status, 'cancelled');
      const now = clock();
      await audit.withEvents(async (tx, events) => {
        if (!(await store.lock(tx, run.id, ['awaiting_approval', 'running'], now)))
          throw bulkRunState(run.status, 'cancelled');
        await store.finish(tx, run.id, { stop_reason: 'cancelled' });
        events.push(callerEvent(caller, 'bulk_run.cancel_requested', runTarget(run), { status: run.status }));
      });
      // Each target is cancelled as a command is: authorized on its agent, recorded, sent if running.
      for (const target of targets.filter((t) => !TERMINAL_STATUSES.includes(t.status))) {
        try {
          await commands.cancel(caller, target.id);
        } catch (error) {
          // A target that ended meanwhile, or whose agent is away (it stays to be reported), is not
          // a reason to leave the others running.
          if (!(error instanceof AppError) || error.status !== 409) throw error;
        }
      }
      await advance(run.id);
      return (await store.findById(run.id)) ?? run;
    },

    /**
     * Runs waiting for the caller's decision: not their own, not decided by them yet, and every
     * target within their approvals:decide scope (a decision covers them all).
     */
    async inbox(caller: Caller) {
      const runs = (await store.page(caller.org.id, 200, { status: 'awaiting_approval' })).filter(
        (run) => run.requested_by !== caller.userId,
      );
      const ids = runs.map((run) => run.id);
      const [labels, decided] = await Promise.all([
        store.targetLabelsOf(ids),
        store.decidedBy(ids, caller.userId),
      ]);
      const waiting = runs.filter(
        (run) =>
          !decided.has(run.id) &&
          (labels.get(run.id) ?? []).every(
            (text) =>
              decide(caller.org.access, 'approvals:decide', { kind: 'agent', labels: parseLabels(text) })
                .allowed,
          ),
      );
      return { runs: waiting, counts: await visibleCounts(caller, waiting, 'approvals:decide') };
    },

    /**
     * A run with the targets the caller may see, and the decisions on it. Read with the permission the
     * caller came with: an approver who may decide but not read commands still sees what they decided.
     */
    async view(
      caller: Caller,
      id: string,
      permission: 'commands:read' | 'approvals:decide' | 'commands:cancel' = 'commands:read',
    ) {
      const { run, visible } = await readable(caller, id, permission);
      return { run, targets: visible, decisions: await store.decisionsOf(run.id) };
    },

    /** Runs newest first, those touching at least one agent the caller may read commands on. */
    async page(caller: Caller, limit: number, filters: Parameters<BulkRunsStore['page']>[2]) {
      const runs = await store.page(caller.org.id, limit, filters);
      const labels = await store.targetLabelsOf(runs.map((run) => run.id));
      const visible = runs.filter((run) =>
        (labels.get(run.id) ?? []).some(
          (text) =>
            decide(caller.org.access, 'commands:read', { kind: 'agent', labels: parseLabels(text) }).allowed,
        ),
      );
      return {
        runs: visible,
        counts: await visibleCounts(caller, visible, 'commands:read'),
        more: runs.length === limit ? runs.at(-1)?.id : undefined,
      };
    },

    peopleOf: store.peopleOf,
  };
}

function bulkRunState(status: string, wanted: string) {
  return new AppError(
    409,
    'bulk_run_state',
    `The bulk run is ${status.replace('_', ' ')}; it cannot be ${wanted} now.`,
  );
}

export type BulkRunsService = ReturnType<typeof createBulkRunsService>;
