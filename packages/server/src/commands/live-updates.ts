import type { EventEmitter } from 'node:events';
import type { LiveOutput } from './commands.service.js';

/**
 * One reader's subscription to a command's live updates. Updates wait in a queue until the reader
 * takes them; a reader that falls `maxQueued` updates behind (a client that stopped reading its
 * event stream) is dropped with a final `overflow`, so a stalled connection cannot make the server
 * hold a command's whole output for it. The stored output is still there to read.
 */
export function subscribeLive(live: EventEmitter, commandId: string, maxQueued: number) {
  const queue: LiveOutput[] = [];
  let overflowed = false;
  let wake: (() => void) | undefined;
  const listener = (update: LiveOutput) => {
    if (queue.length >= maxQueued) {
      overflowed = true;
      live.off(commandId, listener);
    } else {
      queue.push(update);
    }
    wake?.();
  };
  // Subscribed at once: whatever happens after this call is queued, even before the reader starts.
  live.on(commandId, listener);

  return async function* updates(signal: AbortSignal): AsyncGenerator<LiveOutput | 'overflow'> {
    try {
      while (!signal.aborted) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (overflowed) {
          yield 'overflow';
          return;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
        wake = undefined;
      }
    } finally {
      live.off(commandId, listener);
    }
  };
}
