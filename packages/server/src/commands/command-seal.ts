import { createHmac, timingSafeEqual } from 'node:crypto';
import { canonicalJson } from '@bulwark/protocol';
import type { DataKeyring } from '../secrets/data-keyring.js';
import { SealedValueError } from '../secrets/keyring.js';
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

const PURPOSE = 'command-seal';
const REQUEST_TAG = 'bulwark/command-request/v1';
const DECISION_TAG = 'bulwark/command-decision/v1';
/** 128-bit MACs: forging one is as hard as guessing a 128-bit key. */
const MAC_BYTES = 16;

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

interface RequestSeal {
  v: 1;
  key: string;
  macs: Record<SealedField, string>;
}

function sameMac(expected: string, given: unknown): boolean {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function createCommandSealer(dataKeys: Pick<DataKeyring, 'activeKeyId' | 'deriveKeyFrom'>) {
  const keys = new Map<string, Promise<Buffer>>();
  function keyOf(keyId: string): Promise<Buffer> {
    let key = keys.get(keyId);
    if (!key) {
      key = dataKeys.deriveKeyFrom('instance', keyId, PURPOSE);
      key.catch(() => keys.delete(keyId));
      keys.set(keyId, key);
    }
    return key;
  }
  const mac = (key: Buffer, parts: unknown[]) =>
    createHmac('sha256', key)
      .update(canonicalJson(parts))
      .digest()
      .subarray(0, MAC_BYTES)
      .toString('base64url');

  const fieldMac = (key: Buffer, row: CommandRow, field: SealedField) =>
    mac(key, [REQUEST_TAG, row.id, field, SEALED_FIELDS[field](row)]);

  const decisionMac = (key: Buffer, decision: CommandApprovalRow) =>
    mac(key, [DECISION_TAG, decision.command_id, decision.user_id, decision.decision, decision.created_at]);

  /** The seal's key, or undefined when the seal is missing, malformed or names no key of this server. */
  async function keyNamed(keyId: unknown): Promise<Buffer | undefined> {
    if (typeof keyId !== 'string' || keyId.length === 0 || keyId.length > 64) return undefined;
    try {
      return await keyOf(keyId);
    } catch (error) {
      // A key this server does not have is a broken seal; a database that did not answer is not.
      if (error instanceof SealedValueError) return undefined;
      throw error;
    }
  }

  return {
    /** The seal of a command's request, made as the server accepts it (and again when it moves its deadline). */
    async sealRequest(row: CommandRow): Promise<string> {
      const keyId = await dataKeys.activeKeyId('instance');
      const key = await keyOf(keyId);
      const macs = Object.fromEntries(
        FIELD_NAMES.map((field) => [field, fieldMac(key, row, field)]),
      ) as Record<SealedField, string>;
      return JSON.stringify({ v: 1, key: keyId, macs } satisfies RequestSeal);
    },

    /** The fields of `row` that differ from what the server sealed; `['seal']` when there is no valid seal. */
    async requestMismatches(row: CommandRow): Promise<Array<SealedField | 'seal'>> {
      let seal: Partial<RequestSeal>;
      try {
        seal = JSON.parse(row.seal) as Partial<RequestSeal>;
      } catch {
        return ['seal'];
      }
      const key =
        seal?.v === 1 && typeof seal.macs === 'object' && seal.macs ? await keyNamed(seal.key) : undefined;
      if (!key || !seal.macs) return ['seal'];
      const macs = seal.macs;
      return FIELD_NAMES.filter((field) => !sameMac(fieldMac(key, row, field), macs[field]));
    },

    /** The seal of a decision, made as it is given. */
    async sealDecision(decision: CommandApprovalRow): Promise<string> {
      const keyId = await dataKeys.activeKeyId('instance');
      return `${keyId}.${decisionMac(await keyOf(keyId), decision)}`;
    },

    /** Whether the server sealed this decision as it stands. */
    async decisionHolds(decision: CommandApprovalRow): Promise<boolean> {
      const dot = decision.seal.lastIndexOf('.');
      const key = dot > 0 ? await keyNamed(decision.seal.slice(0, dot)) : undefined;
      return key !== undefined && sameMac(decisionMac(key, decision), decision.seal.slice(dot + 1));
    },
  };
}

export type CommandSealer = ReturnType<typeof createCommandSealer>;
