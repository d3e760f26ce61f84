import type { DataKeyring } from '../secrets/data-keyring.js';
import { createRowSealer } from '../secrets/row-seal.js';
import type { CommandApprovalRow, CommandRow } from './commands.store.js';

/**
 * CMD-7: what the server decided about a command, sealed with a key that only the server holds (derived
 * from the instance data key, itself wrapped by the master key), so that someone who can write to the
 * database but not read the master key cannot change what runs or who approved it.
 *
 * The request is sealed field by field when it is accepted, each MAC bound to the command's id: a
 * check names every field that differs, and no MAC can be moved to another command or field. Each
 * decision is sealed when it is given. Dispatch checks both before the server signs the envelope; the
 * seal names the data key it was made with, so a command outlives a data-key rotation.
 */

/** The fields of a command that say what runs, where, for whom and under which approvals. */
const SEALED_FIELDS = {
  orgId: (row: CommandRow) => row.org_id,
  agentId: (row: CommandRow) => row.agent_id,
  service: (row: CommandRow) => row.service,
  action: (row: CommandRow) => row.action,
  params: (row: CommandRow) => parsedOrRaw(row.params),
  secrets: (row: CommandRow) => parsedOrRaw(row.secrets),
  risk: (row: CommandRow) => row.risk,
  requiredApprovals: (row: CommandRow) => row.required_approvals,
  requestedBy: (row: CommandRow) => row.requested_by,
  reason: (row: CommandRow) => row.reason,
  timeoutSeconds: (row: CommandRow) => row.timeout_seconds,
  nonce: (row: CommandRow) => row.nonce,
  createdAt: (row: CommandRow) => row.created_at,
  approvalExpiresAt: (row: CommandRow) => row.approval_expires_at,
  expiresAt: (row: CommandRow) => row.expires_at,
} satisfies Record<string, (row: CommandRow) => unknown>;

export type SealedField = keyof typeof SEALED_FIELDS;
const FIELD_NAMES = Object.keys(SEALED_FIELDS) as SealedField[];

/** JSON text as its value, so that a re-encoding with the same meaning still matches; bad JSON as text. */
function parsedOrRaw(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { unparseable: text };
  }
}

export function createCommandSealer(dataKeys: Pick<DataKeyring, 'activeKeyId' | 'deriveKeyFrom'>) {
  // Two purposes, so two keys: a request's field MAC can never stand for a decision, or back.
  const requests = createRowSealer(dataKeys, 'command-request');
  const decisions = createRowSealer(dataKeys, 'command-decision');
  // Each field's MAC is bound to the command's id and the field's name: none can be moved.
  // A bulk run's target also seals the run it belongs to, so a command cannot be slipped into a run
  // and approved with it. Only then: the seals of commands made before bulk runs existed still hold.
  const fieldsOf = (row: CommandRow) => ({
    ...Object.fromEntries(FIELD_NAMES.map((field) => [field, [row.id, field, SEALED_FIELDS[field](row)]])),
    ...(row.bulk_run_id === null ? {} : { bulkRunId: [row.id, 'bulkRunId', row.bulk_run_id] }),
    // The audience a workload-identity token is minted for (SEC-4): one written in later is refused.
    ...(row.workload_audience == null
      ? {}
      : { workloadAudience: [row.id, 'workloadAudience', row.workload_audience] }),
  });
  const decisionParts = (decision: CommandApprovalRow) => [
    decision.command_id,
    decision.user_id,
    decision.decision,
    decision.created_at,
  ];

  return {
    /** The seal of a command's request, made as the server accepts it (and again when it moves its deadline). */
    sealRequest: (row: CommandRow) => requests.sealFields(fieldsOf(row)),
    /** The fields of `row` that differ from what the server sealed; `['seal']` when there is no valid seal. */
    requestMismatches: (row: CommandRow) =>
      requests.fieldMismatches(row.seal, fieldsOf(row)) as Promise<
        Array<SealedField | 'bulkRunId' | 'workloadAudience' | 'seal'>
      >,
    /** The seal of a decision, made as it is given. */
    sealDecision: (decision: CommandApprovalRow) => decisions.seal(decisionParts(decision)),
    /** Whether the server sealed this decision as it stands. */
    decisionHolds: (decision: CommandApprovalRow) => decisions.holds(decision.seal, decisionParts(decision)),
  };
}

export type CommandSealer = ReturnType<typeof createCommandSealer>;
