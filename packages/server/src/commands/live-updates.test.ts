import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { LiveOutput } from './commands.service.js';
import { subscribeLive } from './live-updates.js';

const output = (seq: number): LiveOutput => ({
  kind: 'output',
  seq,
  stream: 'stdout',
  data: `line ${seq}\n`,
  at: seq,
});

describe('live updates for one reader', () => {
  it('keeps updates in order until the reader takes them, and unsubscribes when it stops', async () => {
    const live = new EventEmitter();
    const updates = subscribeLive(live, 'cmd_1', 10)(new AbortController().signal);
    live.emit('cmd_1', output(0));
    live.emit('cmd_1', output(1));
    live.emit('cmd_2', output(9)); // another command's
    expect((await updates.next()).value).toMatchObject({ seq: 0 });
    expect((await updates.next()).value).toMatchObject({ seq: 1 });
    const waiting = updates.next();
    live.emit('cmd_1', { kind: 'status', status: 'succeeded' } satisfies LiveOutput);
    expect((await waiting).value).toEqual({ kind: 'status', status: 'succeeded' });
    await updates.return(undefined);
    expect(live.listenerCount('cmd_1')).toBe(0);
  });

  it('drops a reader that falls too far behind, with a final overflow, and holds no more for it', async () => {
    // Attack: a client opens the event stream of a chatty command and never reads from it.
    const live = new EventEmitter();
    const updates = subscribeLive(live, 'cmd_1', 3)(new AbortController().signal);
    for (let seq = 0; seq < 1000; seq++) live.emit('cmd_1', output(seq));
    expect(live.listenerCount('cmd_1')).toBe(0);
    const seen: unknown[] = [];
    for await (const update of updates) seen.push(update);
    expect(seen).toEqual([output(0), output(1), output(2), 'overflow']);
  });

  it('ends when the reader goes away', async () => {
    const live = new EventEmitter();
    const stop = new AbortController();
    const updates = subscribeLive(live, 'cmd_1', 10)(stop.signal);
    const waiting = updates.next();
    stop.abort();
    expect((await waiting).done).toBe(true);
    expect(live.listenerCount('cmd_1')).toBe(0);
  });
});
