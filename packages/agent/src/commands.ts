import {
  AGENT_PROTOCOL_VERSION,
  type AgentMessage,
  type CommandEnvelope,
  ed25519PublicKey,
} from '@bulwark/protocol';
import { type ActionCatalog, MAX_OUTPUT_LIMIT_BYTES } from './config.js';
import { type Execution, type ExecutionResult, execute } from './executor.js';
import { invokeHandler } from './handler.js';
import type { CommandJournal } from './journal.js';
import type { Logger } from './log.js';
import type { AgentState } from './state.js';
import { type RefusalReason, type Verdict, verifyCommand } from './verify-command.js';

/**
 * The agent side of commands: verify (verify-command.ts), journal (journal.ts), run (executor.ts for
 * exec actions, handler.ts for the SDK actions of an embedded agent), report. Commands keep running across reconnects. While the agent is offline, output is buffered
 * (bounded: beyond the bound, output is dropped and said so in the log); started and finished
 * messages are not, because `command_states`, sent after each `welcome`, reports every command the
 * server has not acknowledged from the journal, which is the truth on disk.
 */

/** Bounds of the offline buffer. */
export const MAX_BUFFERED_MESSAGES = 4096;
export const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;
/** The most entries one `command_states` message carries (the protocol's bound); more go in several. */
const STATES_PER_MESSAGE = 1000;

type Send = (message: AgentMessage) => boolean;

export interface CommandRunnerOptions {
  state: AgentState;
  /** Without a journal the agent runs nothing: at most once cannot be promised without one. */
  journal?: CommandJournal;
  actions: ActionCatalog;
  /** Where exec actions may run, and what the file helpers of SDK handlers reach (EXEC-3). */
  allowedRoots: string[];
  logger: Logger;
  /** SIGTERM → SIGKILL grace for timeout and cancel (for a handler: how long it has to stop); 5 s. */
  killGraceMs?: number;
  now?: () => number;
}

export interface CommandRunner {
  command(message: { envelope: CommandEnvelope; signature: string }): Promise<void>;
  cancel(commandId: string): void;
  acknowledge(commandIds: string[]): Promise<void>;
  /** Welcomed: report the journal's unacknowledged states, then flush the buffered output. */
  online(send: Send): void;
  offline(): void;
  /** Stops every running command (journaled interrupted) and waits for them. */
  shutdown(): Promise<void>;
  /** Commands running now. */
  readonly running: number;
}

export function createCommandRunner(options: CommandRunnerOptions): CommandRunner {
  const { state, journal, actions, allowedRoots, logger } = options;
  const now = options.now ?? Date.now;
  const serverKey = ed25519PublicKey(state.serverSigningKey);
  const running = new Map<string, { execution?: Execution; cancelled?: boolean; done: Promise<void> }>();
  let send: Send | undefined;
  let buffer: AgentMessage[] = [];
  let bufferedBytes = 0;
  let dropped = 0;
  let stopping = false;

  const deliver = (message: AgentMessage) => {
    if (send?.(message)) return;
    if (message.type !== 'command_output') return; // reported again by command_states
    const size = Buffer.byteLength(message.data) + 100;
    if (buffer.length >= MAX_BUFFERED_MESSAGES || bufferedBytes + size > MAX_BUFFERED_BYTES) {
      if (dropped++ === 0) logger.warn('offline buffer full; dropping command output until reconnected');
      return;
    }
    buffer.push(message);
    bufferedBytes += size;
  };

  const refuse = (commandId: string, reason: RefusalReason, message: string) => {
    logger.warn('refused a command', { commandId, reason, message });
    deliver({ v: AGENT_PROTOCOL_VERSION, type: 'command_refused', commandId, reason, message });
  };

  const run = async (
    envelope: CommandEnvelope,
    verdict: Extract<Verdict, { ok: true }>,
    slot: { execution?: Execution; cancelled?: boolean },
  ) => {
    const { commandId } = envelope;
    const log = logger.child({ commandId, service: envelope.service, action: envelope.action });
    let result: ExecutionResult;
    try {
      // CMD-6: on disk before anything runs.
      await journal!.started(commandId, envelope.expiresAt);
    } catch (error) {
      log.error('could not journal the command; not running it', { error });
      result = {
        outcome: 'failed',
        exitCode: null,
        message: 'the agent could not journal the command; not run',
      };
      deliver({ v: AGENT_PROTOCOL_VERSION, type: 'command_started', commandId });
      await finish(commandId, result, log);
      return;
    }
    deliver({ v: AGENT_PROTOCOL_VERSION, type: 'command_started', commandId });
    log.info('command started', { requestedBy: envelope.requestedBy, approvedBy: envelope.approvedBy });
    let seq = 0;
    const onOutput = (stream: 'stdout' | 'stderr', data: string) => {
      deliver({ v: AGENT_PROTOCOL_VERSION, type: 'command_output', commandId, seq: seq++, stream, data });
    };
    const { secrets } = verdict;
    const timeoutMs = envelope.timeoutSeconds * 1000;
    const execution =
      verdict.kind === 'handler'
        ? invokeHandler({
            handler: verdict.action.handler,
            params: verdict.params,
            secrets,
            roots: allowedRoots,
            timeoutMs,
            outputLimitBytes: MAX_OUTPUT_LIMIT_BYTES,
            ...(options.killGraceMs !== undefined ? { graceMs: options.killGraceMs } : {}),
            onOutput,
            log,
          })
        : execute({
            argv: verdict.argv,
            env: verdict.action.exec.env,
            secrets,
            workingDirectory: verdict.action.exec.workingDirectory,
            ...(verdict.action.exec.runAs ? { runAs: verdict.action.exec.runAs } : {}),
            allowedRoots,
            timeoutMs,
            outputLimitBytes: verdict.action.exec.outputLimitBytes,
            ...(options.killGraceMs !== undefined ? { killGraceMs: options.killGraceMs } : {}),
            onSpawn(pgid) {
              journal!.spawned(commandId, pgid).catch((error: unknown) => {
                log.error('could not journal the process group', { error });
              });
            },
            onOutput,
          });
    slot.execution = execution;
    if (slot.cancelled) execution.abort('cancel');
    if (stopping) execution.abort('shutdown');
    result = await execution.result;
    await finish(commandId, result, log);
  };

  const finish = async (commandId: string, result: ExecutionResult, log: Logger) => {
    try {
      await journal!.finished(commandId, result);
    } catch (error) {
      log.error('could not journal the final state', { error });
    }
    log.info('command finished', {
      outcome: result.outcome,
      exitCode: result.exitCode,
      message: result.message,
    });
    // An interrupted command is reported by command_states at the next start, never as finished.
    if (result.interrupted) return;
    deliver({
      v: AGENT_PROTOCOL_VERSION,
      type: 'command_finished',
      commandId,
      outcome: result.outcome,
      exitCode: result.exitCode,
      message: result.message.slice(0, 500),
    });
  };

  return {
    get running() {
      return running.size;
    },
    async command(message) {
      const { envelope } = message;
      if (!journal) {
        refuse(
          envelope.commandId,
          'unknown_action',
          'this agent runs no commands: it has no command journal',
        );
        return;
      }
      if (stopping) return; // the server re-dispatches or expires it; nothing was journaled
      const verdict = verifyCommand(message, {
        agentId: state.agentId,
        serverKey,
        encryptionKey: state.encryptionKey,
        journal: { has: (id) => journal.has(id) || running.has(id) },
        actions,
        now: now(),
      });
      if (!verdict.ok) {
        refuse(envelope.commandId, verdict.reason, verdict.message);
        return;
      }
      const slot: { execution?: Execution; cancelled?: boolean; done: Promise<void> } = {
        done: Promise.resolve(),
      };
      running.set(envelope.commandId, slot);
      slot.done = run(envelope, verdict, slot)
        .catch((error: unknown) =>
          logger.error('command failed unexpectedly', { commandId: envelope.commandId, error }),
        )
        .finally(() => running.delete(envelope.commandId));
      await slot.done;
    },
    cancel(commandId) {
      const slot = running.get(commandId);
      if (!slot) {
        logger.info('cancel for a command not running here; ignored', { commandId });
        return;
      }
      logger.info('cancelling a command', { commandId });
      slot.cancelled = true;
      slot.execution?.abort('cancel');
    },
    async acknowledge(commandIds) {
      await journal?.acknowledge(commandIds);
    },
    online(sender) {
      send = sender;
      const states = journal?.unacknowledged() ?? [];
      // The last message is always shorter than a full one (empty when the list fills whole ones):
      // that is how the server knows the list has ended.
      for (let i = 0; i <= states.length; i += STATES_PER_MESSAGE) {
        sender({
          v: AGENT_PROTOCOL_VERSION,
          type: 'command_states',
          commands: states.slice(i, i + STATES_PER_MESSAGE),
        });
      }
      const pending = buffer;
      buffer = [];
      bufferedBytes = 0;
      if (dropped > 0) logger.warn('command output was dropped while offline', { messages: dropped });
      dropped = 0;
      for (const message of pending) deliver(message);
    },
    offline() {
      send = undefined;
    },
    async shutdown() {
      stopping = true;
      for (const slot of running.values()) slot.execution?.abort('shutdown');
      await Promise.all([...running.values()].map((slot) => slot.done));
    },
  };
}
