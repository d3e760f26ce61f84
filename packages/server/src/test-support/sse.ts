import { expect } from 'vitest';

/** One server-sent event: its name and its JSON data. */
export interface ServerSentEvent {
  name: string;
  data: Record<string, unknown>;
}

/** A reader of an event stream, collecting its events as they come. */
export function collectEvents(response: Response) {
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  const events: ServerSentEvent[] = [];
  let buffer = '';
  let ended = false;
  let notify: (() => void) | undefined;
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const name = /^event: (.*)$/m.exec(frame)?.[1] ?? 'message';
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        events.push({ name, data: data ? (JSON.parse(data) as Record<string, unknown>) : {} });
        end = buffer.indexOf('\n\n');
      }
      notify?.();
    }
    ended = true;
    notify?.();
  })();
  return {
    events,
    /** Waits (as long as the test may run) until an event matches. */
    async until(match: (event: ServerSentEvent) => boolean): Promise<ServerSentEvent> {
      for (;;) {
        const found = events.find(match);
        if (found) return found;
        if (ended) throw new Error(`the stream ended first: ${JSON.stringify(events)}`);
        await new Promise<void>((resolve) => {
          notify = resolve;
        });
      }
    },
    close: () => reader.cancel().catch(() => {}),
  };
}
