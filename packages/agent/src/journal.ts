import { randomBytes } from 'node:crypto';
import { constants, readFileSync } from 'node:fs';
import { type FileHandle, mkdir, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { CommandOutcome } from '@bulwark/protocol';
import { z } from 'zod';
import type { Logger } from './log.js';

/**
 * The command journal (CMD-6, at most once): an append-only JSON-lines file next to the state file,
 * mode 0600. A command id is journaled `started` and the file fsync'ed BEFORE its process is spawned,
 * so no crash, restart or replayed message can make a command run twice; the id is never forgotten
 * while its envelope could still be accepted.
 *
 * Lines: `started` {expiresAt}; `spawned` {pgid, startTime, bootId} once the process exists (so a
 * restarted agent can find and kill what a crashed one left running); `finished` {outcome, exitCode,
 * message, interrupted?}; `acked` once the server has recorded the final state.
 *
 * At open, a command `started` without `finished` was interrupted by the agent stopping: its process
 * group, if still alive (same boot, same process start time, so a reused pid is never hit), is
 * SIGKILLed, and the command is journaled finished (failed, interrupted), which is what
 * `command_states` reports until the server acknowledges it.
 */

/** Entries finished and acknowledged are dropped this long after both their run and their expiry. */
export const JOURNAL_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

export class JournalError extends Error {}

const CommandId = z.string().min(1).max(64);
const Line = z.discriminatedUnion('event', [
  z.object({
    event: z.literal('started'),
    commandId: CommandId,
    expiresAt: z.number(),
    at: z.number(),
  }),
  z.object({
    event: z.literal('spawned'),
    commandId: CommandId,
    pgid: z.number().int().positive(),
    startTime: z.string().nullable(),
    bootId: z.string().nullable(),
    at: z.number(),
  }),
  z.object({
    event: z.literal('finished'),
    commandId: CommandId,
    outcome: z.enum(['succeeded', 'failed', 'timed_out', 'cancelled']),
    exitCode: z.number().int().nullable(),
    message: z.string(),
    interrupted: z.boolean().optional(),
    at: z.number(),
  }),
  z.object({ event: z.literal('acked'), commandId: CommandId, at: z.number() }),
]);
type Line = z.infer<typeof Line>;

export interface Finished {
  outcome: CommandOutcome;
  exitCode: number | null;
  message: string;
  /** The agent stopped while the command ran: the command did not finish. */
  interrupted?: boolean;
}

interface Entry {
  commandId: string;
  expiresAt: number;
  startedAt: number;
  spawned?: { pgid: number; startTime: string | null; bootId: string | null };
  finished?: Finished & { at: number };
  acked: boolean;
}

export type CommandStateReport = {
  commandId: string;
  state: CommandOutcome | 'running' | 'interrupted';
  exitCode: number | null;
};

export interface CommandJournal {
  readonly file: string;
  /** Whether this id was ever started here (within the retention). */
  has(commandId: string): boolean;
  /**
   * Records the id at once (a second call for the same id throws, synchronously) and resolves once
   * the line is on disk; only then may the command's process be spawned.
   */
  started(commandId: string, expiresAt: number): Promise<void>;
  spawned(commandId: string, pgid: number): Promise<void>;
  finished(commandId: string, finished: Finished): Promise<void>;
  /** The server recorded these final states; unknown or unfinished ids are ignored. */
  acknowledge(commandIds: string[]): Promise<void>;
  /** What `command_states` says: running commands and final states not yet acknowledged, oldest first. */
  unacknowledged(): CommandStateReport[];
  close(): Promise<void>;
}

/** `state.json` → `state.journal.jsonl`, in the same (0700) directory. */
export function journalFileFor(stateFile: string): string {
  const parsed = path.parse(stateFile);
  const base = parsed.ext === '.json' ? parsed.name : parsed.base;
  return path.join(parsed.dir, `${base}.journal.jsonl`);
}

/** The boot this process runs in (Linux), so a pid recorded before a reboot is never signalled after it. */
export function currentBootId(): string | null {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return null;
  }
}

/** A process's start time in clock ticks since boot (Linux /proc/<pid>/stat field 22), or null. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * SIGKILLs a process group a previous agent left behind, unless it is provably not ours: another
 * boot, or a live process with that pid which started at another time (the pid was reused, which
 * the kernel does only once our group is empty). When the leader is gone but the group is not, the
 * kernel keeps the number reserved for the group, so signalling it reaches only our survivors.
 */
export function killLeftoverGroup(spawned: NonNullable<Entry['spawned']>): 'killed' | 'gone' | 'not_ours' {
  const boot = currentBootId();
  if (spawned.bootId && boot && spawned.bootId !== boot) return 'gone';
  const startTime = processStartTime(spawned.pgid);
  if (startTime !== null && spawned.startTime !== null && startTime !== spawned.startTime) return 'not_ours';
  try {
    process.kill(-spawned.pgid, 'SIGKILL');
    return 'killed';
  } catch {
    return 'gone';
  }
}

function assertPrivate(file: string, stat: { mode: number; uid: number }): void {
  if (typeof process.getuid === 'function' && stat.uid !== process.getuid()) {
    throw new JournalError(`journal ${file} belongs to another user (uid ${stat.uid})`);
  }
  if ((stat.mode & 0o077) !== 0) {
    // Whoever can write it can make the agent forget a command id and run it again.
    throw new JournalError(
      `journal ${file} is accessible by group or others (mode ${(stat.mode & 0o777).toString(8)}); run: chmod 600 ${file}`,
    );
  }
}

export interface OpenJournalOptions {
  logger: Logger;
  now?: () => number;
}

export async function openJournal(file: string, options: OpenJournalOptions): Promise<CommandJournal> {
  const { logger } = options;
  const now = options.now ?? Date.now;
  const absolute = path.resolve(file);
  await mkdir(path.dirname(absolute), { recursive: true, mode: 0o700 });

  let handle: FileHandle;
  try {
    handle = await open(
      absolute,
      constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new JournalError(`journal ${absolute} is a symbolic link; refusing it`);
    throw new JournalError(`cannot open journal ${absolute}: ${code ?? 'error'}`);
  }

  const entries = new Map<string, Entry>();
  let lines = 0;
  let needsRewrite = false;
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new JournalError(`journal ${absolute} is not a regular file`);
    assertPrivate(absolute, stat);
    const text = await handle.readFile('utf8');
    const rows = text.split('\n');
    const last = rows.pop();
    // A torn last line is a write the crash interrupted: its `started` never reached disk whole, so
    // its process was never spawned. It is dropped (the file is rewritten without it).
    if (last !== undefined && last !== '') needsRewrite = true;
    rows.forEach((row, index) => {
      if (row === '') return;
      let line: Line;
      try {
        line = Line.parse(JSON.parse(row));
      } catch {
        throw new JournalError(
          `journal ${absolute}: line ${index + 1} is not a journal entry; refusing to start rather than forget command ids`,
        );
      }
      lines++;
      apply(entries, line);
    });
  } catch (error) {
    await handle.close();
    throw error;
  }

  let chain: Promise<void> = Promise.resolve();
  let closed = false;
  /** Appends in order; each line is on disk (fdatasync) when its promise resolves. */
  const append = (line: Line): Promise<void> => {
    const run = chain.then(async () => {
      if (closed) throw new JournalError('journal closed');
      await handle.write(`${JSON.stringify(line)}\n`);
      await handle.datasync();
      lines++;
    });
    chain = run.catch(() => {});
    return run;
  };

  const rewrite = async (): Promise<void> => {
    const dir = path.dirname(absolute);
    const temp = path.join(dir, `.${path.basename(absolute)}.${randomBytes(6).toString('hex')}.tmp`);
    const out = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      const rows = [...entries.values()].flatMap(linesOf);
      await out.writeFile(rows.map((line) => `${JSON.stringify(line)}\n`).join(''), 'utf8');
      await out.sync();
    } catch (error) {
      await out.close();
      await unlink(temp).catch(() => {});
      throw error;
    }
    await out.close();
    await rename(temp, absolute);
    await handle.close();
    handle = await open(absolute, constants.O_RDWR | constants.O_APPEND | constants.O_NOFOLLOW);
    lines = countLines(entries);
    const dirHandle = await open(dir, constants.O_RDONLY).catch(() => undefined);
    await dirHandle
      ?.sync()
      .catch(() => {})
      .finally(() => dirHandle.close());
  };

  const compactable = (entry: Entry, at: number) =>
    entry.acked &&
    entry.finished !== undefined &&
    at > Math.max(entry.expiresAt, entry.finished.at) + JOURNAL_RETENTION_MS;

  const compact = async (): Promise<void> => {
    const at = now();
    let dropped = 0;
    for (const [id, entry] of entries) {
      if (compactable(entry, at)) {
        entries.delete(id);
        dropped++;
      }
    }
    if (dropped > 0 || needsRewrite) {
      needsRewrite = false;
      await rewrite();
    }
  };

  // Recovery: whatever a previous agent left running is killed and recorded as interrupted.
  for (const entry of entries.values()) {
    if (entry.finished) continue;
    const killed = entry.spawned ? killLeftoverGroup(entry.spawned) : 'gone';
    logger.warn('a command was interrupted by the agent stopping; it will not be run again', {
      commandId: entry.commandId,
      processGroup: entry.spawned ? killed : 'never spawned',
    });
    const finished: Finished = {
      outcome: 'failed',
      exitCode: null,
      message: 'interrupted: the agent stopped while the command ran',
      interrupted: true,
    };
    entry.finished = { ...finished, at: now() };
    if (needsRewrite) continue; // written by the rewrite below
    await append({ event: 'finished', commandId: entry.commandId, ...finished, at: entry.finished.at });
  }
  await compact();

  const maybeCompact = async () => {
    // Bounded: the file is rewritten once it holds four times the lines it needs (and at least 1000).
    if (lines > Math.max(1000, 4 * countLines(entries))) {
      chain = chain.then(compact).catch((error: unknown) => {
        logger.error('journal compaction failed', { error });
      });
      await chain;
    }
  };

  return {
    file: absolute,
    has: (commandId) => entries.has(commandId),
    started(commandId, expiresAt) {
      if (entries.has(commandId)) throw new JournalError(`command ${commandId} is already journaled`);
      const at = now();
      entries.set(commandId, { commandId, expiresAt, startedAt: at, acked: false });
      return append({ event: 'started', commandId, expiresAt, at });
    },
    spawned(commandId, pgid) {
      const entry = entries.get(commandId);
      if (!entry) throw new JournalError(`command ${commandId} is not journaled`);
      entry.spawned = { pgid, startTime: processStartTime(pgid), bootId: currentBootId() };
      return append({ event: 'spawned', commandId, ...entry.spawned, at: now() });
    },
    async finished(commandId, finished) {
      const entry = entries.get(commandId);
      if (!entry) throw new JournalError(`command ${commandId} is not journaled`);
      if (entry.finished) return;
      entry.finished = { ...finished, at: now() };
      await append({ event: 'finished', commandId, ...finished, at: entry.finished.at });
    },
    async acknowledge(commandIds) {
      for (const commandId of commandIds) {
        const entry = entries.get(commandId);
        if (!entry?.finished || entry.acked) continue;
        entry.acked = true;
        await append({ event: 'acked', commandId, at: now() });
      }
      await maybeCompact();
    },
    unacknowledged() {
      return [...entries.values()]
        .filter((entry) => !entry.acked)
        .sort((a, b) => a.startedAt - b.startedAt)
        .map((entry) => ({
          commandId: entry.commandId,
          state: !entry.finished
            ? 'running'
            : entry.finished.interrupted
              ? 'interrupted'
              : entry.finished.outcome,
          exitCode: entry.finished?.exitCode ?? null,
        }));
    },
    async close() {
      await chain;
      closed = true;
      await handle.close();
    },
  };
}

function countLines(entries: Map<string, Entry>): number {
  let count = 0;
  for (const entry of entries.values()) count += linesOf(entry).length;
  return count;
}

function apply(entries: Map<string, Entry>, line: Line): void {
  if (line.event === 'started') {
    entries.set(line.commandId, {
      commandId: line.commandId,
      expiresAt: line.expiresAt,
      startedAt: line.at,
      acked: false,
    });
    return;
  }
  const entry = entries.get(line.commandId);
  if (!entry) return;
  if (line.event === 'spawned') {
    entry.spawned = { pgid: line.pgid, startTime: line.startTime, bootId: line.bootId };
  } else if (line.event === 'finished') {
    const { event: _event, commandId: _id, at, ...finished } = line;
    entry.finished = { ...finished, at };
  } else {
    entry.acked = true;
  }
}

function linesOf(entry: Entry): Line[] {
  const out: Line[] = [
    { event: 'started', commandId: entry.commandId, expiresAt: entry.expiresAt, at: entry.startedAt },
  ];
  if (entry.spawned)
    out.push({ event: 'spawned', commandId: entry.commandId, ...entry.spawned, at: entry.startedAt });
  if (entry.finished) out.push({ event: 'finished', commandId: entry.commandId, ...entry.finished });
  if (entry.acked)
    out.push({ event: 'acked', commandId: entry.commandId, at: entry.finished?.at ?? entry.startedAt });
  return out;
}
