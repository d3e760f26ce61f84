import { type ConfinedFs, ConfinedPathError, createConfinedFs } from './confined-fs.js';
import {
  DEFAULT_KILL_GRACE_MS,
  type Execution,
  type ExecutionResult,
  OutputPipeline,
  type OutputStream,
  SecretMasker,
} from './executor.js';
import type { Logger } from './log.js';
import { printable } from './net.js';

/**
 * The in-process executor of SDK actions (EXEC-5): what `execute()` is to an exec action, this is to
 * a handler, with the same result and the same output path (masked, capped, chunked), so commands.ts
 * verifies, journals and reports both the same way.
 *
 * A handler is code of the embedding service, not a process: it cannot be killed. Cancel, timeout
 * and shutdown abort its `signal`; a handler that ignores it is left running, but its command is
 * reported after the grace period anyway (and its later output is dropped), so one stuck handler
 * never holds a command open forever. What leaves the host on failure is the error's message, masked
 * and made printable, never its stack: a stack names files, functions and sometimes values.
 */

/** What a handler can use. */
export interface ActionContext {
  /** Lines for the command's output (info → stdout, warn and error → stderr), secrets masked. */
  logger: ActionLogger;
  /** File helpers confined to the embedded agent's roots (EXEC-3); refuses everything without roots. */
  fs: ConfinedFs;
  /** Aborted on cancel, on the execution timeout and when the agent stops; `reason` is a DOMException. */
  signal: AbortSignal;
  /** Secrets granted to this command, by name (opened from the signed envelope; masked in output). */
  secrets: Readonly<Record<string, string>>;
}

export interface ActionLogger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** What a handler returns: nothing, or text for the output. */
// biome-ignore lint/suspicious/noConfusingVoidType: `async () => {}` returns Promise<void>, which must be accepted
export type HandlerReturn = Promise<void | string> | void | string;

export type ActionHandler = (params: unknown, context: ActionContext) => HandlerReturn;

export interface HandlerRequest {
  handler: ActionHandler;
  /** The params as the action's own check returned them. */
  params: unknown;
  secrets: Record<string, string>;
  /** Where `context.fs` reaches. */
  roots: string[];
  timeoutMs: number;
  outputLimitBytes: number;
  /** How long a handler has to stop once its signal is aborted; 5 s by default. */
  graceMs?: number;
  onOutput(stream: OutputStream, data: string): void;
  /** The agent's own log (never the command's output). */
  log: Logger;
}

type StopReason = 'cancel' | 'shutdown' | 'timeout';

/** File helpers for an agent declared without roots: nothing is reachable, and the handler is told so. */
function noFiles(): ConfinedFs {
  const refuse = () =>
    Promise.reject(new ConfinedPathError('this agent declares no roots: no file is reachable'));
  return { resolve: refuse, readFile: refuse, writeFile: refuse, list: refuse };
}

const MAX_MESSAGE = 500;

export function invokeHandler(request: HandlerRequest): Execution {
  const grace = request.graceMs ?? DEFAULT_KILL_GRACE_MS;
  const controller = new AbortController();
  const output = new OutputPipeline(
    request.outputLimitBytes,
    Object.values(request.secrets),
    request.onOutput,
  );
  let open = true;
  let stopReason: StopReason | undefined;
  const timers: NodeJS.Timeout[] = [];
  let resolveResult!: (result: ExecutionResult) => void;
  const result = new Promise<ExecutionResult>((resolve) => {
    resolveResult = resolve;
  });

  const write = (stream: OutputStream, text: string) => {
    if (open) output.write(stream, Buffer.from(text, 'utf8'));
  };
  const line = (stream: OutputStream, prefix: string) => (message: string) =>
    write(stream, `${prefix}${String(message)}\n`);

  const finish = (outcome: ExecutionResult) => {
    if (!open) return;
    for (const timer of timers) clearTimeout(timer);
    output.end();
    open = false;
    resolveResult(outcome);
  };

  const context: ActionContext = {
    logger: { info: line('stdout', ''), warn: line('stderr', 'warning: '), error: line('stderr', 'error: ') },
    fs: request.roots.length > 0 ? createConfinedFs(request.roots) : noFiles(),
    signal: controller.signal,
    secrets: Object.freeze({ ...request.secrets }),
  };

  const stop = (reason: StopReason) => {
    if (!open || stopReason) return;
    stopReason = reason;
    controller.abort(
      reason === 'timeout'
        ? new DOMException('the execution timeout elapsed', 'TimeoutError')
        : new DOMException(reason === 'cancel' ? 'cancelled' : 'the agent is stopping', 'AbortError'),
    );
    timers.push(
      setTimeout(() => {
        request.log.warn('the action handler did not stop within the grace period after its signal', {
          reason,
          graceMs: grace,
        });
        write('stderr', `the handler did not stop within ${grace} ms of its signal; reported anyway\n`);
        finish(stoppedOutcome(reason, ' (the handler did not stop)'));
      }, grace),
    );
  };

  timers.push(setTimeout(() => stop('timeout'), request.timeoutMs));

  // A handler that throws synchronously is a rejection like any other.
  Promise.resolve()
    .then(() => request.handler(request.params, context))
    .then(
      (returned) => {
        if (stopReason) return finish(stoppedOutcome(stopReason, ''));
        if (typeof returned === 'string' && returned !== '') {
          write('stdout', returned.endsWith('\n') ? returned : `${returned}\n`);
        }
        finish({ outcome: 'succeeded', exitCode: 0, message: '' });
      },
      (error: unknown) => {
        if (stopReason) return finish(stoppedOutcome(stopReason, ''));
        finish({ outcome: 'failed', exitCode: null, message: failureMessage(error, request.secrets) });
      },
    );

  return {
    result,
    abort(reason) {
      stop(reason);
    },
  };
}

/** The error's message only, masked (EXEC-4) and printable: never its stack, its cause or its fields. */
export function failureMessage(error: unknown, secrets: Record<string, string>): string {
  const raw = error instanceof Error ? error.message : typeof error === 'string' ? error : '';
  const masker = new SecretMasker(Object.values(secrets));
  const masked = masker.push(raw) + masker.end();
  const text = printable(masked, MAX_MESSAGE - 1);
  return text === '' ? 'the handler failed' : text;
}

function stoppedOutcome(reason: StopReason, note: string): ExecutionResult {
  if (reason === 'timeout') {
    return {
      outcome: 'timed_out',
      exitCode: null,
      message: `the execution timeout elapsed; the handler was signalled${note}`,
    };
  }
  if (reason === 'cancel') {
    return { outcome: 'cancelled', exitCode: null, message: `cancelled; the handler was signalled${note}` };
  }
  return {
    outcome: 'failed',
    exitCode: null,
    message: `interrupted: the agent stopped while the handler ran${note}`,
    interrupted: true,
  };
}
