import { spawn } from 'node:child_process';
import { realpath } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { type CommandOutcome, MAX_OUTPUT_CHUNK_CHARS } from '@bulwark/protocol';
import { isInside } from './config.js';
import { inaccessibleDirectory, type RunAsIdentity } from './run-as.js';

/**
 * The executor (EXEC-1, EXEC-2, EXEC-4): runs one command's argv as a process of its own, never
 * through a shell, and supervises it to the end.
 *
 * - No shell (`shell: false`): each argv element reaches the program as exactly one argument, so
 *   `;`, `$(…)`, backticks, quotes and spaces in a parameter are just characters.
 * - Its own process group (`detached: true`): timeout, cancel and the end of the command signal the
 *   whole group, so a child the command started cannot outlive it.
 * - A scrubbed environment: only {@link ENV_ALLOW_LIST} from the agent's own environment, then the
 *   action's declared env, then the secrets granted to this command. Nothing else of the agent's
 *   (its config paths, a supervisor's credentials, proxies, tokens) reaches the command.
 * - A working directory whose realpath is inside an allowed root (or the default `/`), checked at
 *   each run, so a symlink swapped in since the config was loaded does not lead outside.
 * - Timeout and cancel: SIGTERM to the group, then SIGKILL to the group after a grace period.
 * - Output: stdout and stderr forwarded in chunks, secret values replaced by `[masked]` before they
 *   leave (also when a value is split across reads), forwarding stopped at the output limit with one
 *   marker chunk while the pipes keep being drained (a blocked pipe would hang the command).
 * - When the command's first process exits, anything it left in its group is SIGKILLed.
 * - Run-as (optional): the process starts with the action's uid and gid and no supplementary groups
 *   (run-as.ts). The agent is root then, so it still signals the group on timeout and cancel. The
 *   environment is the same allow-list: HOME, USER and LOGNAME are not in it, so nothing of the
 *   agent's own account (root's home) reaches the command; an action that needs them declares them.
 */

/** The only variables of the agent's environment a command inherits. */
export const ENV_ALLOW_LIST = ['PATH', 'LANG', 'LC_ALL', 'TZ'] as const;
export const DEFAULT_KILL_GRACE_MS = 5000;
export const MASK = '[masked]';
export const TRUNCATION_MARKER = '\n[output truncated by the agent]\n';

export interface ExecutionResult {
  outcome: CommandOutcome;
  exitCode: number | null;
  message: string;
  /** The agent stopped while the command ran (shutdown): the command did not finish. */
  interrupted?: boolean;
}

export type OutputStream = 'stdout' | 'stderr';

export interface ExecutionRequest {
  /** The program and its arguments, placeholders already substituted. */
  argv: string[];
  /** The action's declared environment. */
  env: Record<string, string>;
  /** Secrets granted to this command: variable name → value. Added to the environment, masked in output. */
  secrets: Record<string, string>;
  workingDirectory: string;
  /** Run as this user and group (the agent must be root); absent: as the agent. */
  runAs?: RunAsIdentity;
  /** The roots `workingDirectory` must be inside (after realpath); `/` (the default) is always allowed. */
  allowedRoots: string[];
  timeoutMs: number;
  outputLimitBytes: number;
  killGraceMs?: number;
  /** The process exists and leads group `pgid` (the journal records it before anything else happens). */
  onSpawn?(pgid: number): void;
  /** A piece of output, masked, at most MAX_OUTPUT_CHUNK_CHARS long. */
  onOutput(stream: OutputStream, data: string): void;
}

export interface Execution {
  readonly result: Promise<ExecutionResult>;
  /** Stops the command: SIGTERM to its group, SIGKILL after the grace period. */
  abort(reason: 'cancel' | 'shutdown'): void;
}

/** The environment a command gets (EXEC-2). */
export function commandEnvironment(
  declared: Record<string, string>,
  secrets: Record<string, string>,
  own: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ENV_ALLOW_LIST) {
    const value = own[name];
    if (value !== undefined) env[name] = value;
  }
  return Object.assign(env, declared, secrets);
}

/**
 * The real working directory, or null when it is not inside an allowed root. `/`, the default,
 * is allowed without a root: it is owned by root and holds nothing of the agent's.
 */
export async function confinedWorkingDirectory(
  workingDirectory: string,
  allowedRoots: string[],
): Promise<{ ok: true; path: string } | { ok: false; message: string }> {
  let real: string;
  try {
    real = await realpath(workingDirectory);
  } catch (error) {
    return {
      ok: false,
      message: `working directory ${workingDirectory}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
    };
  }
  if (workingDirectory === '/' && real === '/') return { ok: true, path: real };
  for (const root of allowedRoots) {
    const realRoot = await realpath(root).catch(() => undefined);
    if (realRoot && isInside(realRoot, real)) return { ok: true, path: real };
  }
  return {
    ok: false,
    message: `working directory ${workingDirectory} resolves to ${real}, outside the allowed roots`,
  };
}

/** Splits text into chunks of at most `max` UTF-16 units without separating a surrogate pair. */
export function splitChunks(text: string, max = MAX_OUTPUT_CHUNK_CHARS): string[] {
  const chunks: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(start + max, text.length);
    if (end < text.length && end - start > 1) {
      const code = text.charCodeAt(end - 1);
      if (code >= 0xd800 && code <= 0xdbff) end--;
    }
    chunks.push(text.slice(start, end));
    start = end;
  }
  return chunks;
}

/**
 * Masks secret values in a stream of text (EXEC-4). Text that could still be the beginning of a
 * secret (the last longest-secret-length - 1 characters) is held back until more text or the end
 * arrives, so a value split across two reads is masked too.
 */
export class SecretMasker {
  private readonly secrets: string[];
  private readonly firsts: Set<string>;
  private readonly keep: number;
  private pending = '';

  constructor(secrets: string[]) {
    // Longest first: a secret containing another is masked whole.
    this.secrets = [...new Set(secrets.filter((s) => s.length > 0))].sort((a, b) => b.length - a.length);
    this.firsts = new Set(this.secrets.map((s) => s[0]!));
    this.keep = Math.max(0, (this.secrets[0]?.length ?? 0) - 1);
  }

  /** Masked text that can be emitted now. */
  push(text: string): string {
    this.pending += text;
    return this.take(Math.max(0, this.pending.length - this.keep));
  }

  /**
   * Everything held back. `cut`: the text was cut short (output limit), so a trailing piece that
   * could be the beginning of a secret is masked as well.
   */
  end(cut = false): string {
    let tail = '';
    if (cut) {
      for (let n = Math.min(this.keep, this.pending.length); n > 0; n--) {
        const suffix = this.pending.slice(-n);
        if (this.secrets.some((s) => s.length > n && s.startsWith(suffix))) {
          this.pending = this.pending.slice(0, -n);
          tail = MASK;
          break;
        }
      }
    }
    return this.take(this.pending.length) + tail;
  }

  private take(limit: number): string {
    const text = this.pending;
    let out = '';
    let plain = 0;
    let i = 0;
    while (i < limit) {
      const secret = this.firsts.has(text[i]!) ? this.secrets.find((s) => text.startsWith(s, i)) : undefined;
      if (secret) {
        out += text.slice(plain, i) + MASK;
        i += secret.length;
        plain = i;
      } else {
        i++;
      }
    }
    out += text.slice(plain, i);
    this.pending = text.slice(i);
    return out;
  }
}

/** Output of one command: decoded, masked, capped and chunked. */
export class OutputPipeline {
  private forwarded = 0;
  private truncated = false;
  private readonly streams: Record<OutputStream, { decoder: StringDecoder; masker: SecretMasker }>;

  constructor(
    private readonly limitBytes: number,
    secrets: string[],
    private readonly emit: (stream: OutputStream, data: string) => void,
  ) {
    const make = () => ({ decoder: new StringDecoder('utf8'), masker: new SecretMasker(secrets) });
    this.streams = { stdout: make(), stderr: make() };
  }

  write(stream: OutputStream, chunk: Buffer): void {
    if (this.truncated) return; // still drained by the caller, no longer forwarded
    const room = this.limitBytes - this.forwarded;
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.forwarded += part.length;
    const s = this.streams[stream];
    this.send(stream, s.masker.push(s.decoder.write(part)));
    if (chunk.length > room) {
      this.truncated = true;
      for (const name of ['stdout', 'stderr'] as const) {
        const other = this.streams[name];
        this.send(name, other.masker.push(other.decoder.end()) + other.masker.end(true));
      }
      this.send(stream, TRUNCATION_MARKER);
    }
  }

  end(): void {
    if (this.truncated) return;
    for (const name of ['stdout', 'stderr'] as const) {
      const s = this.streams[name];
      this.send(name, s.masker.push(s.decoder.end()) + s.masker.end());
    }
  }

  private send(stream: OutputStream, text: string): void {
    for (const chunk of splitChunks(text)) this.emit(stream, chunk);
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

export function execute(request: ExecutionRequest): Execution {
  let abortReason: 'cancel' | 'shutdown' | 'timeout' | undefined;
  let stop: ((reason: 'cancel' | 'shutdown' | 'timeout') => void) | undefined;

  const result = (async (): Promise<ExecutionResult> => {
    const cwd = await confinedWorkingDirectory(request.workingDirectory, request.allowedRoots);
    if (!cwd.ok) return { outcome: 'failed', exitCode: null, message: `not started: ${cwd.message}` };
    const { runAs } = request;
    if (runAs) {
      // Node enters the directory as root, before switching: check that the user could have.
      const blocked = await inaccessibleDirectory(cwd.path, runAs);
      if (blocked) {
        return {
          outcome: 'failed',
          exitCode: null,
          message: `not started: working directory ${cwd.path} is not accessible to ${runAs.user} (uid ${runAs.uid}, gid ${runAs.gid}): ${blocked}`,
        };
      }
    }
    if (abortReason) return stoppedBeforeSpawn(abortReason);
    return new Promise<ExecutionResult>((resolve) => {
      const grace = request.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
      const output = new OutputPipeline(
        request.outputLimitBytes,
        Object.values(request.secrets),
        request.onOutput,
      );
      const program = request.argv[0]!;
      let child: ReturnType<typeof spawn>;
      try {
        child = spawn(program, request.argv.slice(1), {
          cwd: cwd.path,
          env: commandEnvironment(request.env, request.secrets),
          shell: false,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
          ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
        });
      } catch (error) {
        resolve({
          outcome: 'failed',
          exitCode: null,
          message: `cannot start ${program}: ${(error as Error).message}`,
        });
        return;
      }
      const pid = child.pid;
      const timers: NodeJS.Timeout[] = [];
      let settled = false;
      let spawnError: string | undefined;
      let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

      const finish = () => {
        if (settled) return;
        settled = true;
        for (const timer of timers) clearTimeout(timer);
        output.end();
        resolve(outcomeOf(abortReason, exit, spawnError, program));
      };

      stop = (reason) => {
        if (abortReason || exit || pid === undefined) return;
        abortReason = reason;
        killGroup(pid, 'SIGTERM');
        timers.push(setTimeout(() => killGroup(pid, 'SIGKILL'), grace));
      };

      child.stdout?.on('data', (chunk: Buffer) => output.write('stdout', chunk));
      child.stderr?.on('data', (chunk: Buffer) => output.write('stderr', chunk));
      child.on('error', (error: NodeJS.ErrnoException) => {
        spawnError = error.code ?? error.message;
        // A spawn failure emits 'close' too, but not always 'exit'.
        if (pid === undefined) finish();
      });
      if (pid !== undefined) {
        request.onSpawn?.(pid);
        timers.push(setTimeout(() => stop?.('timeout'), request.timeoutMs));
      }
      child.on('exit', (code, signal) => {
        exit = { code, signal };
        if (pid === undefined) return;
        // The command is over: whatever it left in its group would run unsupervised.
        killGroup(pid, 'SIGKILL');
        // A process that left the group (setsid) may hold the pipes open: stop waiting after the grace.
        timers.push(
          setTimeout(() => {
            child.stdout?.destroy();
            child.stderr?.destroy();
            finish();
          }, grace),
        );
      });
      child.on('close', finish);
    });
  })();

  return {
    result,
    abort(reason) {
      // Before the spawn, the reason is remembered and the command never starts.
      if (stop) stop(reason);
      else abortReason ??= reason;
    },
  };
}

function stoppedBeforeSpawn(reason: 'cancel' | 'shutdown' | 'timeout'): ExecutionResult {
  if (reason === 'cancel')
    return { outcome: 'cancelled', exitCode: null, message: 'cancelled before it started' };
  if (reason === 'shutdown') {
    return {
      outcome: 'failed',
      exitCode: null,
      message: 'interrupted: the agent stopped',
      interrupted: true,
    };
  }
  return { outcome: 'timed_out', exitCode: null, message: 'timed out before it started' };
}

function outcomeOf(
  reason: 'cancel' | 'shutdown' | 'timeout' | undefined,
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined,
  spawnError: string | undefined,
  program: string,
): ExecutionResult {
  const exitCode = exit?.code ?? null;
  if (reason === 'timeout') {
    return {
      outcome: 'timed_out',
      exitCode,
      message: 'the execution timeout elapsed; the process group was stopped',
    };
  }
  if (reason === 'cancel')
    return { outcome: 'cancelled', exitCode, message: 'cancelled; the process group was stopped' };
  if (reason === 'shutdown') {
    return {
      outcome: 'failed',
      exitCode,
      message: 'interrupted: the agent stopped while the command ran',
      interrupted: true,
    };
  }
  if (spawnError && !exit)
    return { outcome: 'failed', exitCode: null, message: `cannot start ${program}: ${spawnError}` };
  if (exitCode === 0) return { outcome: 'succeeded', exitCode: 0, message: '' };
  if (exitCode !== null) return { outcome: 'failed', exitCode, message: `exited with code ${exitCode}` };
  return { outcome: 'failed', exitCode: null, message: `killed by ${exit?.signal ?? 'a signal'}` };
}
