import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  type ActionDeclaration,
  AGENT_PROTOCOL_VERSION,
  type CommandEnvelope,
  type CommandOutcome,
  canonicalJson,
  commandStatement,
  newId,
  sealSecrets,
  WORKLOAD_IDENTITY_TOKEN_ENV,
} from '@bulwark/protocol';
import type { Transaction } from 'kysely';
import type { AccessService } from '../access/access.service.js';
import { decide } from '../access/authorize.js';
import { type Caller, callerEvent } from '../access/caller.js';
import type { AgentKeySeals } from '../agents/agent-keys.js';
import { parseLabels } from '../agents/agents.service.js';
import type { AgentRow, AgentsStore } from '../agents/agents.store.js';
import type { AgentCommandMessage, AgentGateway } from '../agents/gateway.js';
import type { ServicesStore } from '../agents/services.store.js';
import { type AuditService, AuditUnavailableError } from '../audit/audit.service.js';
import type { AuditInput } from '../audit/audit.types.js';
import type { CommandStatus, DB } from '../db/schema.js';
import { AppError, NotFoundError, ValidationError } from '../errors.js';
import { StepUpRequiredError } from '../identity/session-guard.js';
import type { ClusterBus } from '../ops/cluster-bus.js';
import type { CommandMetrics } from '../ops/metrics.js';
import type { SecretGrant, SecretsService } from '../secrets/secrets.service.js';
import type { ServerKeysService } from '../secrets/server-keys.service.js';
import type { WorkloadIdentityService } from '../secrets/workload-identity.service.js';
import type { CommandSealer } from './command-seal.js';
import { TERMINAL_STATUSES } from './command-status.js';
import type { CommandApprovalRow, CommandRow, CommandsStore } from './commands.store.js';
import type { OrgEvents } from './org-events.js';
import { paramProblems } from './params-validator.js';
import {
  APPROVAL_TTL_MS,
  DELIVERY_TTL_MS,
  EXECUTION_GRACE_MS,
  looseningsOf,
  type OrgPolicy,
  RISK_POLICY,
} from './policy.js';

/**
 * Commands (CMD-2 to CMD-7, CMD-9): an operator asks an agent to run one of the actions its service
 * declared. The request is checked (the action exists, the parameters match its schema, the caller
 * holds commands:create on the agent's labels), held for confirmation and approvals as its risk
 * demands, signed by the server, delivered to the agent over its connection, and followed to its end
 * from what the agent reports. Every transition is a guarded update and is audited; terminal states
 * never change. An agent can only ever report on commands that name it.
 */

/** Events after which a command never runs: its end, a rejection, a cancel asked for. */
const ENDED_ACTIONS = [
  'command.succeeded',
  'command.failed',
  'command.timed_out',
  'command.cancelled',
  'command.cancel_requested',
  'command.rejected',
  'command.expired',
  'command.refused_by_agent',
  'command.integrity_failed',
  'command.skipped',
] as const satisfies readonly AuditInput['action'][];

/** The SHA-256 of a command's params in canonical JSON: what `command.created` records and approvers see. */
export function paramsHashOf(params: unknown): string {
  return createHash('sha256').update(canonicalJson(params)).digest('hex');
}

/** Stored output per command; beyond it, one truncation marker (CMD-5). */
export const MAX_STORED_OUTPUT_BYTES = 1024 * 1024;
const TRUNCATION_MARKER = '\n[output truncated: the server keeps the first 1 MiB]\n';
/** The most states one `command_states` message carries (the protocol's bound); an agent with more sends several. */
const MAX_COMMAND_STATES = 1000;

export interface CreateCommand {
  agentId: string;
  service: string;
  action: string;
  params: Record<string, unknown>;
  reason: string;
  confirm: boolean;
}

export interface Requester extends Caller {
  /** When the requester last proved a credential (sign-in or re-authentication). */
  authenticatedAt: number;
}

export class CommandStateError extends AppError {
  constructor(status: CommandStatus, wanted: string) {
    super(409, 'command_state', `The command is ${status.replace('_', ' ')}; it cannot be ${wanted} now.`);
  }
}

export type LiveOutput =
  | { kind: 'output'; seq: number; stream: 'stdout' | 'stderr'; data: string; at: number }
  | { kind: 'status'; status: CommandStatus };

export function createCommandsService(deps: {
  commands: CommandsStore;
  agents: AgentsStore;
  services: ServicesStore;
  access: AccessService;
  gateway: AgentGateway;
  serverKeys: ServerKeysService;
  secrets: SecretsService;
  audit: AuditService;
  sealer: CommandSealer;
  /** The server's seals of agents' keys: secrets are sealed only to a key the agent registered. */
  agentKeys: Pick<AgentKeySeals, 'holds'>;
  metrics: CommandMetrics;
  /** How long a command ready to run waits for its agent (CMD-5; BULWARK_COMMAND_DELIVERY_TIMEOUT_SECONDS). */
  deliveryTtlMs?: number;
  clock: () => number;
  stepUpMs: number;
  /**
   * The organization's live event bus: told of every change of a command's status; a reader focused
   * on one command reads its output through this service, which attaches itself.
   */
  events?: Pick<OrgEvents, 'commandChanged' | 'attachCommands'>;
  /** The workload-identity issuer (SEC-4): checks an action's audience at creation, mints at dispatch. */
  workloadIdentity: Pick<WorkloadIdentityService, 'assertAllowed' | 'mint'>;
  /** Organizations' slugs, which a workload-identity token names. */
  orgs: { findOrgById(id: string): Promise<{ slug: string } | undefined> };
  /**
   * The other instances (HA-1): a command's live output and status reach its readers wherever they
   * are connected. Without it, only readers on this instance see them.
   */
  cluster?: ClusterBus;
}) {
  const { commands, agents, services, access, gateway, serverKeys, secrets, audit, sealer, clock, stepUpMs } =
    deps;
  const deliveryTtlMs = deps.deliveryTtlMs ?? DELIVERY_TTL_MS;
  const live = new EventEmitter();
  live.setMaxListeners(0);
  const cluster = deps.cluster?.shared ? deps.cluster : undefined;
  // A command's updates from other instances are listened to while someone here reads them: the
  // instance holding its agent publishes them on the command's own channel.
  const remoteLive = new Map<string, () => void>();
  if (cluster) {
    // Before 'newListener': added after it, this listener would be announced there as an event name.
    live.on('removeListener', (id: string | symbol) => {
      if (typeof id !== 'string' || live.listenerCount(id) > 0) return;
      remoteLive.get(id)?.();
      remoteLive.delete(id);
    });
    live.on('newListener', (id: string | symbol) => {
      if (typeof id !== 'string' || remoteLive.has(id)) return;
      remoteLive.set(
        id,
        cluster.subscribe(`live:${id}`, (update) => live.emit(id, update as LiveOutput)),
      );
    });
  }
  /** Tells the command's readers, here and on the other instances. */
  const emitLive = (id: string, update: LiveOutput) => {
    live.emit(id, update);
    cluster?.publish(`live:${id}`, update);
  };
  /** The bulk runs' scheduler (CMD-8), told when one of a run's targets ends so it releases the next. */
  let bulkTargetEnded: (bulkRunId: string) => void = () => {};

  const target = (row: Pick<CommandRow, 'id' | 'service' | 'action'>) => ({
    type: 'command',
    id: row.id,
    display: `${row.service}/${row.action}`,
  });
  const agentActor = (agent: Pick<AgentRow, 'id' | 'name'>) => ({
    type: 'agent' as const,
    id: agent.id,
    display: agent.name,
  });

  function agentEvent(
    agent: AgentRow,
    row: CommandRow,
    action: AuditInput['action'],
    details: AuditInput['details'],
    outcome: AuditInput['outcome'] = 'success',
  ): AuditInput {
    return { orgId: row.org_id, actor: agentActor(agent), action, target: target(row), outcome, details };
  }

  const systemActor = (id: string, display: string) => ({ type: 'system' as const, id, display });

  /**
   * Moves a command from one of `from` to `to` and records `event` in the same transaction (AUD-7):
   * the transition and its record commit together or neither does. False when another transition won.
   */
  async function move(
    row: CommandRow,
    from: readonly CommandStatus[],
    to: CommandStatus,
    changes: Partial<CommandRow>,
    event: AuditInput | undefined,
  ) {
    const moved = await audit.withEvents(
      async (tx, events) => {
        const done = await commands.transition(tx, row.id, from, to, { ...changes, updated_at: clock() });
        if (done && event) events.push(event);
        return done;
      },
      { grouped: true },
    );
    if (moved) {
      emitLive(row.id, { kind: 'status', status: to });
      if (row.bulk_run_id !== null && TERMINAL_STATUSES.includes(to)) bulkTargetEnded(row.bulk_run_id);
      deps.events?.commandChanged(row.status, { ...row, ...changes, status: to });
    }
    return moved;
  }

  async function declaredAction(agent: AgentRow, input: Pick<CreateCommand, 'service' | 'action'>) {
    const service = (await services.ofAgent(agent.id)).find((s) => s.name === input.service);
    const declared =
      service && (JSON.parse(service.actions) as ActionDeclaration[]).find((a) => a.name === input.action);
    // Deny by default (CMD-1): only an action the agent declared for that service can run.
    if (!declared) throw new NotFoundError('This agent declares no such service and action.');
    return declared;
  }

  /**
   * The command's secrets sealed to its agent (SEC-3), or undefined when it has none. A secret
   * deleted since the command was created ends the command as failed: it cannot run as requested.
   */
  async function sealedSecretsFor(row: CommandRow, now: number) {
    const grants = JSON.parse(row.secrets) as SecretGrant[];
    if (grants.length === 0) return undefined;
    const [agent, values] = await Promise.all([
      agents.find(row.org_id, row.agent_id),
      secrets.valuesOf(row.org_id, grants),
    ]);
    // Sealed only to the key the agent registered, never to one written into its row since.
    if (agent && !(await deps.agentKeys.holds(agent))) {
      await failTampered(row, ['agent:encryptionKey'], now);
      return null;
    }
    if (agent && values)
      return sealSecrets(agent.encryption_key, values, { commandId: row.id, agentId: row.agent_id });
    const message = 'A secret this command was granted has been deleted; run the action again.';
    await move(
      row,
      ['queued', 'dispatched'],
      'failed',
      { finished_at: now, message },
      {
        orgId: row.org_id,
        actor: systemActor('dispatcher', 'command dispatcher'),
        action: 'command.failed',
        target: target(row),
        outcome: 'failure',
        details: { reason: 'secret_deleted' },
      },
    );
    return null;
  }

  /**
   * The command's workload-identity JWT sealed to its agent (SEC-4), undefined when its action asks
   * for none. Minted here, at dispatch, for the audience sealed with the request, and only while the
   * configuration still allows it; never stored, logged or shown: only its issuance is audited.
   */
  async function workloadIdentityFor(row: CommandRow, now: number) {
    const audience = row.workload_audience ?? null;
    if (audience === null) return undefined;
    const [agent, org] = await Promise.all([
      agents.find(row.org_id, row.agent_id),
      deps.orgs.findOrgById(row.org_id),
    ]);
    let refusal: string | undefined;
    if (!agent || !org) refusal = 'the agent or its organization is gone';
    else if (!(await deps.agentKeys.holds(agent))) {
      await failTampered(row, ['agent:encryptionKey'], now);
      return null;
    } else {
      try {
        deps.workloadIdentity.assertAllowed(org.slug, audience);
      } catch (error) {
        if (!(error instanceof AppError)) throw error;
        refusal = error.message;
      }
    }
    if (!agent || !org || refusal !== undefined) {
      await move(
        row,
        ['queued', 'dispatched'],
        'failed',
        { finished_at: now, message: `workload identity refused: ${refusal}`.slice(0, 500) },
        {
          orgId: row.org_id,
          actor: systemActor('dispatcher', 'command dispatcher'),
          action: 'command.failed',
          target: target(row),
          outcome: 'failure',
          details: { reason: 'workload_identity_refused', audience },
        },
      );
      return null;
    }
    // Valid while the command may still start and run, and never more than 15 minutes.
    const notAfter = row.expires_at + row.timeout_seconds * 1000;
    const minted = await deps.workloadIdentity.mint({
      orgSlug: org.slug,
      agentId: row.agent_id,
      service: row.service,
      action: row.action,
      commandId: row.id,
      requester: row.requested_by,
      audience,
      notAfter,
    });
    // Recorded (durably) before it leaves: no token is out without its record. Never the token.
    await audit.record({
      orgId: row.org_id,
      actor: systemActor('dispatcher', 'command dispatcher'),
      action: 'workload_identity.issued',
      target: target(row),
      outcome: 'success',
      details: { agentId: row.agent_id, audience, signedBy: minted.keyId, expiresAt: minted.expiresAt },
    });
    return sealSecrets(
      agent.encryption_key,
      { [WORKLOAD_IDENTITY_TOKEN_ENV]: minted.token },
      { commandId: row.id, agentId: row.agent_id },
    );
  }

  /**
   * CMD-7: the users whose sealed approvals let this command run, or what no longer matches what the
   * server sealed. The request must match its seal field for field; every approval on it must be one
   * the server sealed as it was given, by someone other than the requester; and there must be as many
   * as the sealed requirement, and never fewer than the built-in policy asks for the sealed risk.
   */
  async function approversIfIntact(
    row: CommandRow,
  ): Promise<{ approvers: string[] } | { mismatched: string[] }> {
    const mismatched: string[] = await sealer.requestMismatches(row);
    const required = Math.max(row.required_approvals, RISK_POLICY[row.risk]?.approvals ?? 2);
    // With no approval needed (a requirement the seal just vouched for), approvals change nothing:
    // the hot path of low-risk commands reads none.
    // A command the log shows as ended or cancelled is never sent, whatever its row now says: its
    // status is the one thing a seal cannot hold, as it moves.
    if (await audit.hasEventAbout(row.org_id, row.id, ENDED_ACTIONS)) mismatched.push('ended');
    if (mismatched.length === 0 && required === 0) return { approvers: [] };
    const approvers = new Set<string>();
    for (const decision of await commands.decisions(row.id)) {
      // A rejection the server sealed is final.
      if (decision.decision === 'rejected' && (await sealer.decisionHolds(decision)))
        mismatched.push('rejected');
      if (decision.decision !== 'approved') continue;
      if (!(await sealer.decisionHolds(decision))) mismatched.push(`approval:${decision.user_id}`);
      else if (decision.user_id === row.requested_by) mismatched.push('approval:requester');
      else approvers.add(decision.user_id);
    }
    if (approvers.size < required) mismatched.push('approvals');
    return mismatched.length > 0 ? { mismatched } : { approvers: [...approvers] };
  }

  /** Ends a command whose stored request or approvals were changed behind the server's back. */
  async function failTampered(row: CommandRow, mismatched: string[], now: number): Promise<void> {
    deps.metrics.integrityFailures.inc();
    await move(
      row,
      ['awaiting_approval', 'held', 'queued', 'dispatched'],
      'failed',
      {
        finished_at: now,
        message:
          `command_integrity: the stored command no longer matches what was approved (${mismatched.join(', ')})`.slice(
            0,
            500,
          ),
      },
      {
        orgId: row.org_id,
        actor: systemActor('dispatcher', 'command dispatcher'),
        action: 'command.integrity_failed',
        target: target(row),
        outcome: 'failure',
        details: { severity: 'critical', code: 'command_integrity', mismatched },
      },
    );
  }

  /**
   * Signs the command and sends it to its agent, if the agent is connected here and the command is
   * still exactly what was requested and approved (CMD-7): false when it was not sent.
   */
  async function sendEnvelope(row: CommandRow, now: number): Promise<boolean> {
    const intact = await approversIfIntact(row);
    if ('mismatched' in intact) {
      await failTampered(row, intact.mismatched, now);
      return false;
    }
    const sealed = await sealedSecretsFor(row, now);
    if (sealed === null) return false;
    const identity = await workloadIdentityFor(row, now);
    if (identity === null) return false;
    const envelope: CommandEnvelope = {
      v: AGENT_PROTOCOL_VERSION,
      commandId: row.id,
      agentId: row.agent_id,
      orgId: row.org_id,
      service: row.service,
      action: row.action,
      params: JSON.parse(row.params) as Record<string, unknown>,
      requestedBy: row.requested_by,
      approvedBy: intact.approvers,
      issuedAt: now,
      expiresAt: row.expires_at,
      timeoutSeconds: row.timeout_seconds,
      nonce: row.nonce,
      ...(sealed ? { secrets: sealed } : {}),
      ...(identity ? { workloadIdentity: identity } : {}),
    };
    const signer = await serverKeys.signer('agent-channel');
    return gateway.send(row.agent_id, {
      v: AGENT_PROTOCOL_VERSION,
      type: 'command',
      envelope,
      signature: signer.sign(commandStatement(envelope)),
    });
  }

  const dispatchedEvent = (row: CommandRow): AuditInput => ({
    orgId: row.org_id,
    actor: systemActor('dispatcher', 'command dispatcher'),
    action: 'command.dispatched',
    target: target(row),
    outcome: 'success',
    details: { agentId: row.agent_id },
  });

  /** Puts a command claimed for delivery back in the queue (audited); false when it was no longer claimed. */
  function requeue(row: CommandRow, reason: 'agent_disconnected' | 'not_received'): Promise<boolean> {
    return move(
      row,
      ['dispatched'],
      'queued',
      { dispatched_at: null },
      {
        orgId: row.org_id,
        actor: systemActor('dispatcher', 'command dispatcher'),
        action: 'command.requeued',
        target: target(row),
        outcome: 'success',
        details: { reason },
      },
    );
  }

  /** Sends a command claimed for delivery; puts it back in the queue if its agent went away meanwhile. */
  async function sendOrRequeue(row: CommandRow, now: number): Promise<void> {
    if (await sendEnvelope(row, now)) return;
    // Not sent: ended by a check (then this finds it no longer dispatched), or the agent is gone.
    await requeue(row, 'agent_disconnected');
    // It may have connected to another instance meanwhile, after that instance looked for its work.
    gateway.wakeElsewhere(row.agent_id);
  }

  /**
   * Signs and sends a queued command if its agent is connected here; it stays queued otherwise, and
   * the instance holding the agent, if another does, is told to deliver it (HA-1).
   */
  async function dispatch(row: CommandRow): Promise<void> {
    const now = clock();
    if (row.status !== 'queued' || row.expires_at <= now) return;
    if (!gateway.holds(row.agent_id)) return gateway.wakeElsewhere(row.agent_id);
    // Claimed before it is sent: a command on the wire is never still `queued`, so a cancel or an
    // expiry cannot end it as "never ran", and a second dispatch (an approval racing the agent's
    // welcome) finds it taken and sends nothing.
    if (!(await move(row, ['queued'], 'dispatched', { dispatched_at: now }, dispatchedEvent(row)))) return;
    await sendOrRequeue({ ...row, status: 'dispatched', dispatched_at: now }, now);
  }

  /**
   * HA-1, QA-4: a command claimed for delivery (`dispatched`) whose envelope died with the instance
   * that claimed it (killed between the claim and the write, or with the envelope still in a socket
   * buffer) would otherwise wait for its delivery deadline and expire without having run. Right after
   * each welcome the agent lists every command its journal holds unacknowledged, and each one listed
   * moves on from `dispatched` (to running, or to its end). Called once the whole list is read: a
   * command still `dispatched`, claimed before this connection, never reached the journal, so it goes
   * back to the queue and out again. Should the agent have it after all (its journal write still
   * under way), it refuses the replay and its own reports say how the command ends: at most once
   * holds either way (CMD-6).
   */
  async function requeueUnreceived(agent: AgentRow): Promise<void> {
    const connectedAt = gateway.connectionOf(agent.id)?.connectedAt;
    if (connectedAt === undefined) return;
    for (const row of await commands.inFlightOf(agent.id)) {
      if (row.status !== 'dispatched') continue;
      // Claimed since the welcome: on its way over this very connection.
      if (row.dispatched_at === null || row.dispatched_at >= connectedAt) continue;
      // Past its deadline it expires instead (the deadline sweep), never to be sent again.
      if (row.expires_at <= clock()) continue;
      if (await requeue(row, 'not_received'))
        await dispatch({ ...row, status: 'queued', dispatched_at: null });
    }
  }

  /** The organization's policy: the built-in one, or stricter where the organization said so. */
  async function policyOf(orgId: string): Promise<OrgPolicy> {
    const row = await commands.policyOf(orgId);
    return row ? (JSON.parse(row.policy) as OrgPolicy) : RISK_POLICY;
  }

  function assertStepUp(who: Requester, rule: OrgPolicy[CommandRow['risk']]) {
    if (rule.stepUp && clock() - who.authenticatedAt > stepUpMs) throw new StepUpRequiredError();
  }

  /**
   * The command, if the caller may read it: 404 for none in their organization, 403 (audited) unless
   * their commands:read covers its agent's labels. Every way of reading a command goes through here.
   */
  async function readable(caller: Caller, id: string): Promise<CommandRow> {
    const row = await commands.find(caller.org.id, id);
    if (!row) throw new NotFoundError('No such command.');
    const agent = await agents.find(caller.org.id, row.agent_id);
    await access.authorize(caller, 'commands:read', {
      kind: 'agent',
      labels: parseLabels(agent?.labels ?? '{}'),
    });
    return row;
  }

  deps.events?.attachCommands({
    readable,
    find: (orgId, id) => commands.find(orgId, id),
    output: (id) => commands.output(id),
    live,
  });

  async function decided(
    caller: Requester,
    id: string,
    verb: 'approve' | 'reject',
    comment: string,
    seenParamsHash?: string,
  ) {
    const row = await commands.find(caller.org.id, id);
    if (!row) throw new NotFoundError('No such command.');
    const agent = await agents.find(caller.org.id, row.agent_id);
    await access.authorize(caller, 'approvals:decide', {
      kind: 'agent',
      labels: parseLabels(agent?.labels ?? '{}'),
    });
    // A bulk run's target is decided on with its run, as one request: never one target at a time.
    if (row.bulk_run_id !== null)
      throw new AppError(
        409,
        'bulk_run_target',
        'This command is one target of a bulk run; approve or reject the bulk run.',
      );
    if (row.requested_by === caller.userId) {
      await audit.record(
        callerEvent(
          caller,
          'access.denied',
          target(row),
          { reason: 'own_command', operation: verb },
          'denied',
        ),
      );
      throw new AppError(403, 'own_command', 'Someone other than the requester must decide on a command.');
    }
    if (row.status !== 'awaiting_approval') throw new CommandStateError(row.status, `${verb}d`);
    if (row.approval_expires_at !== null && row.approval_expires_at <= clock())
      throw new CommandStateError('expired', `${verb}d`);
    assertStepUp(caller, (await policyOf(caller.org.id))[row.risk]);
    // CMD-7: a decision is on the request as the server sealed it, and as the approver saw it.
    const tampered = await sealer.requestMismatches(row);
    if (tampered.length > 0) {
      await failTampered(row, tampered, clock());
      throw new AppError(
        409,
        'command_integrity',
        'This command was changed after it was requested; it will not run.',
      );
    }
    if (seenParamsHash !== undefined && seenParamsHash !== paramsHashOf(JSON.parse(row.params)))
      throw new AppError(
        409,
        'command_changed',
        'This command is not the one you were shown; look at it again.',
      );
    const decision: CommandApprovalRow = {
      command_id: row.id,
      org_id: row.org_id,
      user_id: caller.userId,
      decision: verb === 'approve' ? 'approved' : 'rejected',
      comment,
      created_at: clock(),
      seal: '',
    };
    // CMD-7: sealed as it is given, so that a decision nobody gave cannot be written in later.
    decision.seal = await sealer.sealDecision(decision);
    return { row, decision };
  }

  /**
   * Stores a decision, once per person (CRYPTO-2): the command's row is locked first, so concurrent
   * decisions on one command are taken one at a time and the last approval needed sees all the others.
   */
  async function storeDecision(tx: Transaction<DB>, row: CommandRow, decision: CommandApprovalRow) {
    // Read through `tx`: on SQLite the one connection is this transaction's until it ends.
    if (!(await commands.lockAwaitingApproval(tx, row.id, decision.created_at)))
      throw new CommandStateError((await commands.statusIn(tx, row.id)) ?? row.status, 'decided');
    if (!(await commands.insertDecision(tx, decision)))
      throw new AppError(409, 'already_decided', 'You have already decided on this command.');
  }

  return {
    live,

    async create(caller: Requester, input: CreateCommand, idempotencyKey?: string): Promise<CommandRow> {
      const requestHash = createHash('sha256').update(canonicalJson(input)).digest('hex');
      if (idempotencyKey) {
        const earlier = await commands.findByIdempotencyKey(caller.org.id, caller.userId, idempotencyKey);
        if (earlier) {
          if (earlier.request_hash !== requestHash)
            throw new AppError(
              409,
              'idempotency_key_reused',
              'This Idempotency-Key was used for a different command.',
            );
          return earlier;
        }
      }
      // Authorized on the agent before its services are looked at: outside the caller's scope, which
      // actions an agent declares is not for them to learn.
      const agent = await agents.find(caller.org.id, input.agentId);
      if (!agent) throw new NotFoundError('No such agent.');
      await access.authorize(caller, 'commands:create', {
        kind: 'agent',
        labels: parseLabels(agent.labels),
      });
      const declared = await declaredAction(agent, input);
      if (agent.status !== 'active')
        throw new AppError(409, 'agent_unavailable', `The agent is ${agent.status}; it cannot run commands.`);
      const problems = paramProblems(declared.params, input.params);
      if (problems.length > 0) throw new ValidationError(problems, 'The parameters do not match the action.');
      // The secrets the action declared (SEC-3): the requester must hold secrets:use on this agent.
      let grants: SecretGrant[] = [];
      if (declared.secrets.length > 0) {
        await access.authorize(caller, 'secrets:use', { kind: 'agent', labels: parseLabels(agent.labels) });
        grants = await secrets.grants(caller.org.id, declared.secrets);
      }
      // SEC-4: a workload identity is a credential like a secret (the same permission hands it to the
      // agent), and only for an audience this server allows for this organization: the agent chose
      // the audience, and a rogue agent would choose another team's.
      const workloadAudience = declared.workloadIdentity?.audience ?? null;
      if (workloadAudience !== null) {
        await access.authorize(caller, 'secrets:use', { kind: 'agent', labels: parseLabels(agent.labels) });
        deps.workloadIdentity.assertAllowed(caller.org.slug, workloadAudience);
      }
      const policy = (await policyOf(caller.org.id))[declared.risk];
      if (policy.confirmation && !input.confirm)
        throw new ValidationError(
          [{ path: 'body.confirm', message: `a ${declared.risk}-risk action must be confirmed` }],
          'Confirm the command to run it.',
        );
      assertStepUp(caller, policy);
      // Whoever approves, and whoever reads the log later, must be told why something this risky ran.
      if (declared.risk === 'critical' && input.reason.trim() === '')
        throw new ValidationError(
          [{ path: 'body.reason', message: 'is needed for a critical-risk action' }],
          'Say why this critical command should run.',
        );

      const now = clock();
      const paramsHash = paramsHashOf(input.params);
      const row: CommandRow = {
        id: newId('cmd', now),
        org_id: caller.org.id,
        agent_id: agent.id,
        service: input.service,
        action: input.action,
        params: JSON.stringify(input.params),
        reason: input.reason,
        risk: declared.risk,
        required_approvals: policy.approvals,
        requested_by: caller.userId,
        status: policy.approvals > 0 ? 'awaiting_approval' : 'queued',
        idempotency_key: idempotencyKey ?? null,
        request_hash: requestHash,
        nonce: randomBytes(32).toString('base64url'),
        timeout_seconds: declared.timeoutSeconds,
        created_at: now,
        updated_at: now,
        approval_expires_at: policy.approvals > 0 ? now + APPROVAL_TTL_MS : null,
        expires_at: now + (policy.approvals > 0 ? APPROVAL_TTL_MS : 0) + deliveryTtlMs,
        dispatched_at: null,
        started_at: null,
        finished_at: null,
        exit_code: null,
        message: '',
        output_bytes: 0,
        output_truncated: 0,
        final_acked: 0,
        secrets: JSON.stringify(grants),
        seal: '',
        bulk_run_id: null,
        ...(workloadAudience !== null ? { workload_audience: workloadAudience } : {}),
      };
      // CMD-7: what was asked, sealed as the server accepts it; dispatch checks it before signing.
      row.seal = await sealer.sealRequest(row);
      // With its agent connected here, a command that needs no approval is stored as dispatched and
      // sent at once: one write fewer on the way to the agent (each write is a durable commit).
      const deliverNow = row.status === 'queued' && gateway.holds(agent.id);
      if (deliverNow) Object.assign(row, { status: 'dispatched', dispatched_at: now });
      try {
        await audit.withEvents(
          async (tx, events) => {
            await commands.insert(tx, row);
            events.push(
              callerEvent(caller, 'command.created', target(row), {
                agentId: agent.id,
                risk: row.risk,
                status: row.status,
                requiredApprovals: row.required_approvals,
                paramNames: Object.keys(input.params),
                // What was asked, provable from the log alone: the SHA-256 of the canonical params.
                paramsHash,
                reason: input.reason,
                ...(workloadAudience !== null ? { workloadAudience } : {}),
              }),
            );
            // Each use of a secret is audited by name and version, never by value.
            for (const grant of grants)
              events.push(
                callerEvent(
                  caller,
                  'secret.used',
                  { type: 'secret', id: grant.secretId, display: grant.name },
                  { commandId: row.id, version: grant.version, agentId: agent.id },
                ),
              );
            if (deliverNow) events.push(dispatchedEvent(row));
          },
          { grouped: true },
        );
      } catch (error) {
        if (error instanceof AuditUnavailableError) throw error;
        // Two requests with the same Idempotency-Key at once: the unique index let one in; answer
        // the other with it, as a retry after the fact would be.
        const winner = idempotencyKey
          ? await commands.findByIdempotencyKey(caller.org.id, caller.userId, idempotencyKey)
          : undefined;
        if (!winner) throw error;
        if (winner.request_hash !== requestHash)
          throw new AppError(
            409,
            'idempotency_key_reused',
            'This Idempotency-Key was used for a different command.',
          );
        return winner;
      }
      deps.events?.commandChanged(undefined, row);
      if (!deliverNow) await dispatch(row);
      else await sendOrRequeue(row, now);
      return (await commands.find(caller.org.id, row.id)) ?? row;
    },

    async approve(
      caller: Requester,
      id: string,
      comment: string,
      seenParamsHash?: string,
    ): Promise<CommandRow> {
      // The request was checked against its seal there: only a checked request is sealed again below.
      const { row, decision } = await decided(caller, id, 'approve', comment, seenParamsHash);
      // Delivery time starts when the last approval needed is given: an approval an hour in does
      // not leave the agent only minutes.
      const queued: CommandRow = { ...row, status: 'queued', expires_at: clock() + deliveryTtlMs };
      queued.seal = await sealer.sealRequest(queued);
      const released = await audit.withEvents(async (tx, events) => {
        await storeDecision(tx, row, decision);
        const approvals = (await commands.decisions(row.id, tx)).filter((d) => d.decision === 'approved');
        const enough = approvals.length >= row.required_approvals;
        events.push(callerEvent(caller, 'command.approved', target(row), { comment, released: enough }));
        if (!enough) return false;
        return commands.transition(tx, row.id, ['awaiting_approval'], 'queued', {
          expires_at: queued.expires_at,
          seal: queued.seal,
          updated_at: clock(),
        });
      });
      // Released or not, the approvals inbox changed: one decision fewer is wanted.
      deps.events?.commandChanged(row.status, released ? queued : row);
      if (released) {
        emitLive(row.id, { kind: 'status', status: 'queued' });
        await dispatch(queued);
      }
      return (await commands.find(caller.org.id, row.id)) ?? row;
    },

    async reject(
      caller: Requester,
      id: string,
      comment: string,
      seenParamsHash?: string,
    ): Promise<CommandRow> {
      const { row, decision } = await decided(caller, id, 'reject', comment, seenParamsHash);
      await audit.withEvents(async (tx, events) => {
        await storeDecision(tx, row, decision);
        await commands.transition(tx, row.id, ['awaiting_approval'], 'rejected', {
          finished_at: clock(),
          updated_at: clock(),
          message: `rejected: ${comment}`.slice(0, 500),
        });
        events.push(callerEvent(caller, 'command.rejected', target(row), { comment }));
      });
      emitLive(row.id, { kind: 'status', status: 'rejected' });
      deps.events?.commandChanged(row.status, { ...row, status: 'rejected', finished_at: clock() });
      return (await commands.find(caller.org.id, row.id)) ?? row;
    },

    async cancel(caller: Caller, id: string): Promise<CommandRow> {
      const row = await commands.find(caller.org.id, id);
      if (!row) throw new NotFoundError('No such command.');
      const agent = await agents.find(caller.org.id, row.agent_id);
      await access.authorize(caller, 'commands:cancel', {
        kind: 'agent',
        labels: parseLabels(agent?.labels ?? '{}'),
      });
      if (TERMINAL_STATUSES.includes(row.status)) throw new CommandStateError(row.status, 'cancelled');
      const requested = callerEvent(caller, 'command.cancel_requested', target(row), { status: row.status });
      if (row.status === 'awaiting_approval' || row.status === 'queued' || row.status === 'held') {
        const message = 'cancelled before it ran';
        await move(
          row,
          ['awaiting_approval', 'queued', 'held'],
          'cancelled',
          { finished_at: clock(), message },
          requested,
        );
      } else {
        // Dispatched or running: the agent stops the process group and reports `cancelled` itself.
        // Recorded before it is sent: a cancel that reached an agent is never missing from the log.
        await audit.record(requested);
        if (
          !gateway.send(row.agent_id, { v: AGENT_PROTOCOL_VERSION, type: 'cancel', commandId: row.id }) &&
          !gateway.cancelElsewhere(row.agent_id, row.org_id, row.id)
        )
          throw new AppError(
            409,
            'agent_unavailable',
            'The agent running this command is not connected; cancel again once it is back.',
          );
      }
      return (await commands.find(caller.org.id, row.id)) ?? row;
    },

    policyOf,

    /**
     * What bulk runs (CMD-8) take from commands: each target is a command, checked, sealed, moved and
     * delivered by the same code as one run alone.
     */
    bulk: {
      /** Called when a target of a run ends, whatever ended it. */
      onTargetEnded(listener: (bulkRunId: string) => void) {
        bulkTargetEnded = listener;
      },
      declaredAction,
      assertStepUp,
      approversIfIntact,
      dispatch,
      move,
      failTampered,
      storeDecision,
      target,
      /** Tells the organization's live stream that a target moved outside `move()`. */
      changed: (before: CommandStatus | undefined, after: CommandRow) =>
        deps.events?.commandChanged(before, after),
    },

    /** Sets the organization's policy; refused (422) where it would loosen the built-in one (CMD-3). */
    async setPolicy(caller: Caller, policy: OrgPolicy): Promise<OrgPolicy> {
      const problems = looseningsOf(policy);
      if (problems.length > 0)
        throw new ValidationError(
          problems.map((message) => ({ path: `body.${message.split(':')[0]}`, message })),
          'An organization may tighten the command policy, never loosen it.',
        );
      const before = await policyOf(caller.org.id);
      await audit.withEvents(async (tx, events) => {
        await commands.setPolicy(tx, caller.org.id, JSON.stringify(policy), caller.userId, clock());
        events.push(
          callerEvent(
            caller,
            'command.policy_changed',
            { type: 'org', id: caller.org.id, display: caller.org.slug },
            {
              before: before as unknown as Record<string, never>,
              after: policy as unknown as Record<string, never>,
            },
          ),
        );
      });
      return policy;
    },

    find: (orgId: string, id: string) => commands.find(orgId, id),
    readable,
    decisions: (id: string) => commands.decisions(id),
    decisionsOf: (ids: readonly string[]) => commands.decisionsOf(ids),
    output: (id: string, afterSeq?: number) => commands.output(id, afterSeq),
    page: (orgId: string, limit: number, filters: Parameters<CommandsStore['page']>[2]) =>
      commands.page(orgId, limit, filters),

    /** Commands the caller could approve now: awaiting approval, not their own, within their scope. */
    async inbox(caller: Caller) {
      const rows = (await commands.awaitingApproval(caller.org.id)).filter(
        (row) => row.requested_by !== caller.userId,
      );
      const labels = await agents.labelsOf(
        caller.org.id,
        rows.map((row) => row.agent_id),
      );
      return rows.filter(
        (row) =>
          decide(caller.org.access, 'approvals:decide', {
            kind: 'agent',
            labels: parseLabels(labels.get(row.agent_id) ?? '{}'),
          }).allowed,
      );
    },

    /**
     * A revoked agent can never connect again, so nothing it was sent can ever be reported: its
     * commands in flight end as failed, saying why (a fact, not a guess about how they went).
     */
    async endForRevokedAgent(caller: Caller, agentId: string): Promise<number> {
      let ended = 0;
      const from: CommandStatus[] = ['awaiting_approval', 'held', 'queued', 'dispatched', 'running'];
      const message = 'the agent was revoked; it can never report how this command ended';
      for (const row of await commands.inFlightOf(agentId)) {
        const event = callerEvent(
          caller,
          'command.failed',
          target(row),
          { reason: 'agent_revoked', from: row.status },
          'failure',
        );
        if (await move(row, from, 'failed', { finished_at: clock(), message }, event)) ended++;
      }
      return ended;
    },

    /**
     * Sweeps deadlines (CMD-4, CMD-5): approvals and deliveries that ran out become `expired`; a run
     * its agent never reported the end of, well past the action's timeout, becomes `timed_out`.
     */
    async expireOverdue(): Promise<number> {
      let ended = 0;
      for (const row of await commands.overdue(clock(), EXECUTION_GRACE_MS)) {
        const running = row.status === 'running';
        const reason = running
          ? 'execution_timeout'
          : row.status === 'awaiting_approval'
            ? 'approval_timeout'
            : 'delivery_timeout';
        const message = running ? 'timed out: the agent reported no end within the action timeout' : reason;
        const event: AuditInput = {
          orgId: row.org_id,
          actor: systemActor('scheduler', 'command deadlines'),
          action: running ? 'command.timed_out' : 'command.expired',
          target: target(row),
          outcome: 'failure',
          details: { reason, from: row.status },
        };
        if (
          await move(
            row,
            [row.status],
            running ? 'timed_out' : 'expired',
            { finished_at: clock(), message },
            event,
          )
        )
          ended++;
      }
      return ended;
    },

    /**
     * The delivery sweep of one instance (HA-1): the agents it holds that have commands waiting get
     * them, as on connecting. It finds what a lost "agent has work" message left behind.
     */
    async redeliver(held: ReadonlyMap<string, AgentRow>): Promise<void> {
      if (held.size === 0) return;
      for (const agentId of await commands.agentsWithDeliverable([...held.keys()], clock())) {
        const agent = held.get(agentId);
        if (agent) for (const row of await commands.deliverable(agent.id, clock())) await dispatch(row);
      }
    },

    /** The gateway's side: deliver what waited for an agent, and follow what the agent reports. */
    handlers: {
      async welcomed(agent: AgentRow): Promise<void> {
        for (const row of await commands.deliverable(agent.id, clock())) await dispatch(row);
      },

      async message(agent: AgentRow, message: AgentCommandMessage): Promise<void> {
        const now = clock();
        if (message.type === 'command_states') {
          const acked: string[] = [];
          for (const state of message.commands) {
            const row = await commands.findForAgent(agent.id, state.commandId);
            if (!row) continue;
            if (state.state === 'running') {
              const started = agentEvent(agent, row, 'command.started', { reconciled: true });
              await move(row, ['queued', 'dispatched'], 'running', { started_at: now }, started);
              continue;
            }
            const outcome: CommandOutcome = state.state === 'interrupted' ? 'failed' : state.state;
            const text =
              state.state === 'interrupted' ? 'interrupted: the agent stopped while the command ran' : '';
            const ended = agentEvent(
              agent,
              row,
              `command.${outcome}` as AuditInput['action'],
              { exitCode: state.exitCode, reconciled: true, interrupted: state.state === 'interrupted' },
              outcome === 'succeeded' ? 'success' : 'failure',
            );
            await move(
              row,
              ['queued', 'dispatched', 'running'],
              outcome,
              { finished_at: now, exit_code: state.exitCode, message: text },
              ended,
            );
            acked.push(row.id);
          }
          if (acked.length > 0)
            gateway.send(agent.id, { v: AGENT_PROTOCOL_VERSION, type: 'command_ack', commandIds: acked });
          // A full message may be followed by more: only a shorter one ends the agent's list.
          if (message.commands.length < MAX_COMMAND_STATES) await requeueUnreceived(agent);
          return;
        }
        // An agent reports only on its own commands: anything else is ignored (and never reveals existence).
        const row = await commands.findForAgent(agent.id, message.commandId);
        if (!row) return;
        if (message.type === 'command_started') {
          const started = agentEvent(agent, row, 'command.started', {});
          await move(row, ['queued', 'dispatched'], 'running', { started_at: now }, started);
        } else if (message.type === 'command_output') {
          await storeOutput(row, message);
        } else if (message.type === 'command_finished') {
          const ended = agentEvent(
            agent,
            row,
            `command.${message.outcome}` as AuditInput['action'],
            { exitCode: message.exitCode },
            message.outcome === 'succeeded' ? 'success' : 'failure',
          );
          await move(
            row,
            ['dispatched', 'running'],
            message.outcome,
            { finished_at: now, exit_code: message.exitCode, message: message.message },
            ended,
          );
          gateway.send(agent.id, { v: AGENT_PROTOCOL_VERSION, type: 'command_ack', commandIds: [row.id] });
        } else if (message.type === 'command_refused') {
          // `replayed` means the agent already has this command: it is running or has run, and its
          // own reports say how it ends. Only other refusals end it here.
          if (message.reason === 'replayed') return;
          await move(
            row,
            ['queued', 'dispatched'],
            'failed',
            { finished_at: now, message: `refused by the agent: ${message.reason}` },
            agentEvent(agent, row, 'command.refused_by_agent', { reason: message.reason }, 'failure'),
          );
        }
      },
    },
  };

  async function storeOutput(
    row: CommandRow,
    message: Extract<AgentCommandMessage, { type: 'command_output' }>,
  ) {
    // Output buffered by an agent while it was offline may arrive after the final state it also
    // reported; anything the command produced is kept, as long as the command was ever delivered.
    if (row.dispatched_at === null && row.started_at === null) return;
    const bytes = Buffer.byteLength(message.data);
    const at = clock();
    const fits = row.output_bytes + bytes <= MAX_STORED_OUTPUT_BYTES;
    if (!row.output_truncated) {
      const data = fits ? message.data : TRUNCATION_MARKER;
      await commands.appendOutput(
        {
          command_id: row.id,
          org_id: row.org_id,
          seq: message.seq,
          stream: message.stream,
          data,
          created_at: at,
        },
        fits ? bytes : 0,
        !fits,
      );
    }
    // Subscribers see everything live; only storage is capped.
    emitLive(row.id, { kind: 'output', seq: message.seq, stream: message.stream, data: message.data, at });
  }
}

export type CommandsService = ReturnType<typeof createCommandsService>;
