/**
 * Attack (and accident): making a command run twice, or run unsupervised. The agent crashes, is
 * SIGKILLed by an OOM killer or restarted by an operator while a command runs; the command's
 * process, which leads its own group, keeps running with nobody to time it out or cancel it, and
 * the restarted agent, had it forgotten the id, would run the same command again when the server
 * (or an attacker replaying the channel) sends it again. Stopped by CMD-6: the id is on disk before
 * the process exists, the restarted agent kills what was left of the group (never a group that is
 * provably someone else's: another boot, or a reused pid) and reports the command `interrupted`;
 * a journal others can write, or with a corrupt entry, is refused rather than trusted.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  currentBootId,
  JOURNAL_RETENTION_MS,
  JournalError,
  journalFileFor,
  openJournal,
  processStartTime,
} from './journal.js';
import { createLogger } from './log.js';
import { tempDir } from './test-support/agent-state.js';
import { isAlive, NODE, untilDead } from './test-support/command-agent.js';

const logger = createLogger({ write: () => {} });
let dir: Awaited<ReturnType<typeof tempDir>>;
let n = 0;
const fresh = () => path.join(dir.path, `j${++n}.journal.jsonl`);
const ID = 'cmd_01JB0000000000000000000000';

beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await dir.remove();
});

/** A process group like the executor makes: a detached leader and a child, both sleeping. */
async function leftoverGroup(): Promise<{ leader: number; child: number }> {
  const leader = spawn(
    NODE,
    [
      '-e',
      "const c = require('child_process').spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' }); process.stdout.write(String(c.pid)); setInterval(() => {}, 1000)",
    ],
    { detached: true, stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const [data] = (await once(leader.stdout!, 'data')) as [Buffer];
  leader.stdout!.destroy();
  leader.unref();
  return { leader: leader.pid!, child: Number(data.toString()) };
}

async function writeJournal(file: string, lines: object[]): Promise<void> {
  await writeFile(file, lines.map((line) => `${JSON.stringify(line)}\n`).join(''), { mode: 0o600 });
}

describe('the command journal', () => {
  it('kills the process group a crashed agent left running and reports the command interrupted', async () => {
    const file = fresh();
    const group = await leftoverGroup();
    const at = Date.now();
    await writeJournal(file, [
      { event: 'started', commandId: ID, expiresAt: at + 60_000, at },
      {
        event: 'spawned',
        commandId: ID,
        pgid: group.leader,
        startTime: processStartTime(group.leader),
        bootId: currentBootId(),
        at,
      },
    ]);
    const journal = await openJournal(file, { logger });
    expect(await untilDead(group.leader)).toBe(true);
    expect(await untilDead(group.child)).toBe(true);
    expect(journal.unacknowledged()).toEqual([{ commandId: ID, state: 'interrupted', exitCode: null }]);
    expect(journal.has(ID)).toBe(true);
    await journal.close();
    // On disk: reopening does not kill again, and still knows the id and its state.
    const reopened = await openJournal(file, { logger });
    expect(reopened.unacknowledged()).toEqual([{ commandId: ID, state: 'interrupted', exitCode: null }]);
    await reopened.acknowledge([ID]);
    expect(reopened.unacknowledged()).toEqual([]);
    expect(reopened.has(ID)).toBe(true);
    await reopened.close();
  });

  it('never signals a group that is provably not its own (a reused pid, another boot)', async () => {
    const group = await leftoverGroup();
    try {
      for (const spawned of [
        { startTime: 'not-its-start-time', bootId: currentBootId() },
        { startTime: processStartTime(group.leader), bootId: 'another-boot' },
      ]) {
        const file = fresh();
        const at = Date.now();
        await writeJournal(file, [
          { event: 'started', commandId: ID, expiresAt: at + 60_000, at },
          { event: 'spawned', commandId: ID, pgid: group.leader, ...spawned, at },
        ]);
        const journal = await openJournal(file, { logger });
        expect(journal.unacknowledged()[0]?.state).toBe('interrupted');
        await journal.close();
        expect(isAlive(group.leader)).toBe(true);
      }
    } finally {
      process.kill(-group.leader, 'SIGKILL');
    }
  });

  it('journals before it resolves, one line per event, and refuses an id twice', async () => {
    const file = fresh();
    const journal = await openJournal(file, { logger });
    await journal.started(ID, Date.now() + 1000);
    expect(() => journal.started(ID, Date.now() + 1000)).toThrow(JournalError);
    expect((await readFile(file, 'utf8')).trim().split('\n')).toHaveLength(1);
    expect(journal.unacknowledged()).toEqual([{ commandId: ID, state: 'running', exitCode: null }]);
    await journal.finished(ID, { outcome: 'failed', exitCode: 3, message: 'exited with code 3' });
    expect(journal.unacknowledged()).toEqual([{ commandId: ID, state: 'failed', exitCode: 3 }]);
    await journal.close();
  });

  it('drops a torn last line, refuses a corrupt one in the middle and a file others can write', async () => {
    const torn = fresh();
    const at = Date.now();
    await writeFile(
      torn,
      `${JSON.stringify({ event: 'started', commandId: ID, expiresAt: at, at })}\n{"event":"sta`,
      { mode: 0o600 },
    );
    const journal = await openJournal(torn, { logger });
    expect(journal.has(ID)).toBe(true);
    await journal.close();
    expect((await readFile(torn, 'utf8')).endsWith('\n')).toBe(true);

    const corrupt = fresh();
    await writeFile(corrupt, `garbage\n${JSON.stringify({ event: 'acked', commandId: ID, at })}\n`, {
      mode: 0o600,
    });
    await expect(openJournal(corrupt, { logger })).rejects.toThrow(/line 1 is not a journal entry/);

    const open = fresh();
    await writeFile(open, '', { mode: 0o600 });
    await chmod(open, 0o622);
    await expect(openJournal(open, { logger })).rejects.toThrow(/accessible by group or others/);
  });

  it('forgets an id only once acknowledged and past both its expiry and the retention', async () => {
    const file = fresh();
    let clock = Date.now();
    const journal = await openJournal(file, { logger, now: () => clock });
    const acked = 'cmd_01JB0000000000000000000001';
    const unacked = 'cmd_01JB0000000000000000000002';
    const longLived = 'cmd_01JB0000000000000000000003';
    for (const id of [acked, unacked]) {
      await journal.started(id, clock + 60_000);
      await journal.finished(id, { outcome: 'succeeded', exitCode: 0, message: '' });
    }
    await journal.started(longLived, clock + 30 * JOURNAL_RETENTION_MS);
    await journal.finished(longLived, { outcome: 'succeeded', exitCode: 0, message: '' });
    await journal.acknowledge([acked, longLived]);
    await journal.close();
    clock += 2 * JOURNAL_RETENTION_MS;
    const later = await openJournal(file, { logger, now: () => clock });
    expect(later.has(acked)).toBe(false);
    expect(later.has(unacked)).toBe(true);
    expect(later.has(longLived)).toBe(true);
    await later.close();
    expect(await readFile(file, 'utf8')).not.toContain(acked);
  });

  it('lives next to the state file', () => {
    expect(journalFileFor('/var/lib/bulwark-agent/state.json')).toBe(
      '/var/lib/bulwark-agent/state.journal.jsonl',
    );
  });
});
