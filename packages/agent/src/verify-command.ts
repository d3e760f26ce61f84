import type { KeyObject } from 'node:crypto';
import {
  type CommandEnvelope,
  commandStatement,
  MIN_APPROVALS,
  openSecrets,
  verifyStatement,
  WORKLOAD_IDENTITY_TOKEN_ENV,
} from '@bulwark/protocol';
import { type ActionCatalog, actionKey, type ExecAction, type HandlerAction } from './config.js';

/**
 * What the agent checks before it runs anything (CMD-2, CMD-6, CMD-7, EXEC-1), in this order, each
 * refusal naming the first check that failed:
 *
 * 1. `bad_signature`: the server's Ed25519 signature over commandStatement(envelope) does not verify
 *    against the key pinned at registration. Nothing else in the message is trusted before this.
 * 2. `wrong_agent`: the envelope names another agent (a command lifted from another agent's channel).
 * 3. `expired`: now is past `expiresAt` (a delayed or stored command, the delivery timeout).
 * 4. `replayed`: the id is in the journal: it ran, or started, here before (CMD-6).
 * 5. `unknown_action`: no such service or action in agent.yaml, or an action without `exec` (for an
 *    embedded agent: no such SDK action).
 * 6. `invalid_params`: the params fail the action's JSON Schema (Ajv, draft 2020-12, strict), or a
 *    substituted parameter does not match its pattern as a whole, or (SDK actions) the action's own
 *    zod schema refuses them.
 * 7. `bad_secrets`: the sealed secrets do not open with this agent's X25519 key for this command, or
 *    carry a secret the action does not declare in agent.yaml or the SDK; or a workload-identity
 *    token comes for an action that does not declare `workloadIdentity`, or does not come for one
 *    that does.
 * 8. `insufficient_approvals`: fewer approvers, other than the requester, than the risk this agent
 *    declares for the action asks for (MIN_APPROVALS). The server enforces its policy; this holds it
 *    to the floor even if the risk it read from its database was lowered there.
 */

export type RefusalReason =
  | 'bad_signature'
  | 'wrong_agent'
  | 'expired'
  | 'replayed'
  | 'unknown_action'
  | 'invalid_params'
  | 'bad_secrets'
  | 'insufficient_approvals';

/** The secrets granted to the command, by name, opened (SEC-3). */
type Secrets = Record<string, string>;

export type Verdict =
  | { ok: true; kind: 'exec'; action: ExecAction; argv: string[]; secrets: Secrets }
  | { ok: true; kind: 'handler'; action: HandlerAction; params: unknown; secrets: Secrets }
  | { ok: false; reason: RefusalReason; message: string };

export interface VerifyContext {
  agentId: string;
  /** The server key pinned in the state file. */
  serverKey: KeyObject;
  /** This agent's X25519 private key: the command's secrets are sealed to it. */
  encryptionKey: KeyObject;
  journal: { has(commandId: string): boolean };
  actions: ActionCatalog;
  now: number;
}

const MAX_MESSAGE = 500;
const clip = (text: string) => (text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE - 1)}…` : text);

export function verifyCommand(
  command: { envelope: CommandEnvelope; signature: string },
  context: VerifyContext,
): Verdict {
  const { envelope } = command;
  if (!verifyStatement(context.serverKey, commandStatement(envelope), command.signature)) {
    return {
      ok: false,
      reason: 'bad_signature',
      message: 'the signature does not verify against the pinned server key',
    };
  }
  if (envelope.agentId !== context.agentId) {
    return { ok: false, reason: 'wrong_agent', message: 'the command is addressed to another agent' };
  }
  if (context.now > envelope.expiresAt) {
    return {
      ok: false,
      reason: 'expired',
      message: `the command expired at ${new Date(envelope.expiresAt).toISOString()}`,
    };
  }
  if (context.journal.has(envelope.commandId)) {
    return { ok: false, reason: 'replayed', message: 'this command id was already run by this agent' };
  }
  const action = context.actions.get(actionKey(envelope.service, envelope.action));
  if (!action) {
    return {
      ok: false,
      reason: 'unknown_action',
      message: clip(
        `no action ${envelope.service}/${envelope.action} this agent can run ` +
          '(an agent.yaml action with exec, or an SDK action)',
      ),
    };
  }
  if (!action.validate(envelope.params)) {
    const problems = (action.validate.errors ?? []).map(
      (error) => `${error.instancePath || '(params)'} ${error.message ?? 'is invalid'}`,
    );
    return { ok: false, reason: 'invalid_params', message: clip(`invalid params: ${problems.join('; ')}`) };
  }
  let secrets: Secrets = {};
  if (envelope.secrets) {
    try {
      secrets = openSecrets(context.encryptionKey, envelope.secrets, envelope);
    } catch {
      return {
        ok: false,
        reason: 'bad_secrets',
        message: 'the secrets do not open for this agent and command',
      };
    }
    const undeclared = Object.keys(secrets).filter((name) => !action.declaration.secrets.includes(name));
    if (undeclared.length > 0) {
      return {
        ok: false,
        reason: 'bad_secrets',
        message: clip(`secrets the action does not declare: ${undeclared.join(', ')}`),
      };
    }
  }
  // SEC-4: the token is opened like the secrets and reaches the process the same way (its
  // environment, masked in output), only for an action this agent's own config says wants one.
  const wantsToken = action.declaration.workloadIdentity !== undefined;
  if (envelope.workloadIdentity && !wantsToken) {
    return {
      ok: false,
      reason: 'bad_secrets',
      message: 'a workload-identity token for an action that does not declare workloadIdentity',
    };
  }
  if (wantsToken && !envelope.workloadIdentity) {
    return {
      ok: false,
      reason: 'bad_secrets',
      message: 'the action declares workloadIdentity but the command carries no token',
    };
  }
  if (envelope.workloadIdentity) {
    let opened: Secrets;
    try {
      opened = openSecrets(context.encryptionKey, envelope.workloadIdentity, envelope);
    } catch {
      return {
        ok: false,
        reason: 'bad_secrets',
        message: 'the workload-identity token does not open for this agent and command',
      };
    }
    const token = opened[WORKLOAD_IDENTITY_TOKEN_ENV];
    if (token === undefined || Object.keys(opened).length !== 1) {
      return { ok: false, reason: 'bad_secrets', message: 'the workload-identity box holds no token' };
    }
    secrets = { ...secrets, [WORKLOAD_IDENTITY_TOKEN_ENV]: token };
  }
  const approvers = new Set(envelope.approvedBy.filter((user) => user !== envelope.requestedBy));
  const needed = MIN_APPROVALS[action.declaration.risk];
  if (approvers.size < needed) {
    return {
      ok: false,
      reason: 'insufficient_approvals',
      message: `a ${action.declaration.risk}-risk action needs ${needed} approval(s) by others; the command has ${approvers.size}`,
    };
  }
  if (action.kind === 'handler') {
    const parsed = action.parse(envelope.params);
    if (!parsed.ok) {
      return {
        ok: false,
        reason: 'invalid_params',
        message: clip(`invalid params: ${parsed.problems.join('; ')}`),
      };
    }
    return { ok: true, kind: 'handler', action, params: parsed.value, secrets };
  }
  const argv: string[] = [];
  for (const element of action.exec.argv) {
    const name = /^\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}$/.exec(element)?.[1];
    if (name === undefined) {
      argv.push(element);
      continue;
    }
    const value = envelope.params[name];
    // The config guarantees a required string parameter; checked again rather than trusted.
    if (typeof value !== 'string') {
      return {
        ok: false,
        reason: 'invalid_params',
        message: clip(`invalid params: /${name} must be a string`),
      };
    }
    const whole = action.wholeMatch.get(name);
    if (whole && !whole.test(value)) {
      return {
        ok: false,
        reason: 'invalid_params',
        message: clip(`invalid params: /${name} must match the whole pattern`),
      };
    }
    argv.push(value);
  }
  return { ok: true, kind: 'exec', action, argv, secrets };
}
