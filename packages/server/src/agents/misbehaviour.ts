import type { Logger } from 'pino';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditRequestContext } from '../audit/audit.types.js';
import type { AgentRow } from './agents.store.js';

/**
 * What an authenticated agent did that an honest agent never does (invariant 5, AGT-3): each is
 * refused or ignored where it happens, and recorded here, so that operators learn of a compromised or
 * broken host. An honest agent only ever reports on commands the server sent it, and only sends
 * well-formed protocol messages within the size cap.
 */
export const MISBEHAVIOUR_KINDS = [
  /** A command report about a command that names another agent of the organization. */
  'foreign_command',
  /** A command report about a command its organization does not have (invented, or another organization's). */
  'unknown_command',
  /** A report that would change a service another agent reported. */
  'foreign_service',
  /** A frame that is not JSON, or not a valid message of the protocol. */
  'invalid_message',
  /** A well-formed JSON object whose `type` the protocol does not have. */
  'unknown_type',
  /** A handshake message on a connection already authenticated. */
  'unexpected_message',
  /** A frame over the size cap (closed by the WebSocket layer before it is read). */
  'oversized_message',
] as const;
export type MisbehaviourKind = (typeof MISBEHAVIOUR_KINDS)[number];

/**
 * What may be told about one occurrence: only values the server checked the shape of (a protocol
 * message type, a command id). Never the frame's content: output, messages and configuration can
 * hold secrets, and an unparsed frame can hold anything.
 */
export interface MisbehaviourFacts {
  messageType?: string;
  commandId?: string;
}

/**
 * One audit event per agent and kind per window: the first occurrence is recorded at once, the
 * rest of the window only counted, and the count recorded with the next event (or by `flush` once
 * the window has passed). A flood of bad frames costs the audit log one event a minute per kind.
 */
export const MISBEHAVIOUR_WINDOW_MS = 60_000;

interface Pending {
  /** When the next event may be recorded. */
  nextAt: number;
  /** Occurrences not yet in an event. */
  count: number;
  agent: Pick<AgentRow, 'id' | 'name' | 'org_id'>;
  context: AuditRequestContext;
  facts: MisbehaviourFacts;
}

export function createMisbehaviourRecorder(deps: {
  audit: AuditService;
  logger: Logger;
  clock: () => number;
}) {
  const { audit, logger, clock } = deps;
  const windows = new Map<string, Pending>();

  async function write(kind: MisbehaviourKind, pending: Pending): Promise<void> {
    const { agent, context, facts, count } = pending;
    pending.count = 0;
    pending.nextAt = clock() + MISBEHAVIOUR_WINDOW_MS;
    logger.warn(
      { agentId: agent.id, orgId: agent.org_id, ip: context.ip, kind, count, ...facts },
      'agent misbehaved',
    );
    const self = { type: 'agent' as const, id: agent.id, display: agent.name };
    await audit.record({
      orgId: agent.org_id,
      actor: self,
      action: 'agent.misbehaved',
      target: self,
      outcome: 'denied',
      context,
      details: { kind, count, ...facts },
    });
  }

  return {
    /** Counts one occurrence, and records it unless this agent's window for the kind is still open. */
    async record(
      agent: Pick<AgentRow, 'id' | 'name' | 'org_id'>,
      kind: MisbehaviourKind,
      context: AuditRequestContext,
      facts: MisbehaviourFacts = {},
    ): Promise<void> {
      const key = `${agent.id} ${kind}`;
      let pending = windows.get(key);
      if (!pending) {
        pending = { nextAt: 0, count: 0, agent, context, facts };
        windows.set(key, pending);
      }
      pending.count++;
      pending.context = context;
      pending.facts = facts;
      if (clock() < pending.nextAt) {
        logger.debug({ agentId: agent.id, kind, ...facts }, 'agent misbehaved again (counted)');
        return;
      }
      await write(kind, pending);
    },

    /**
     * Records what was counted in windows that have passed (and, with `all`, in every window: at
     * shutdown); forgets windows with nothing left to tell, so memory follows misbehaving agents only.
     */
    async flush(all = false): Promise<void> {
      const now = clock();
      for (const [key, pending] of windows) {
        if (!all && now < pending.nextAt) continue;
        if (pending.count === 0) windows.delete(key);
        else await write(key.slice(key.indexOf(' ') + 1) as MisbehaviourKind, pending);
      }
    },
  };
}

export type MisbehaviourRecorder = ReturnType<typeof createMisbehaviourRecorder>;
