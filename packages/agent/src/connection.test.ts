import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { type Backoff, createBackoff } from './backoff.js';
import { checkHandshake, startAgent } from './connection.js';
import { createLogger } from './log.js';
import { agentStateFor } from './test-support/agent-state.js';
import { startFakeServer } from './test-support/fake-server.js';

const quiet = createLogger({ write: () => {} });

/** A backoff that reconnects at once and counts resets, so tests wait on events, never on time. */
function countingBackoff(): Backoff & { resets: number } {
  const inner = createBackoff({ random: () => 0 });
  const counter = {
    resets: 0,
    next: () => inner.next(),
    reset: () => {
      counter.resets++;
      inner.reset();
    },
    get attempt() {
      return inner.attempt;
    },
  };
  return counter;
}

describe('the agent connection', () => {
  it('proves itself, reports its services (secrets redacted) and sends heartbeats', async () => {
    const server = await startFakeServer({ heartbeatSeconds: 1 });
    const statuses: string[] = [];
    const agent = startAgent({
      state: agentStateFor(server),
      services: [
        {
          name: 'web',
          kind: 'nginx',
          version: '1.27',
          health: { status: 'up', message: '' },
          config: [
            { key: 'workers', value: '4' },
            { key: 'tls_key', secret: true, value: 'PRIVATE' },
            { key: 'unset', secret: true },
          ],
          actions: [],
        },
      ],
      logger: quiet,
      onStatus: (status) => statuses.push(status),
    });
    const proof = await server.next('proof');
    const report = await server.next('report');
    await server.next('heartbeat');
    expect(report.connection).toBe(proof.connection);
    expect(report.message.type === 'report' && report.message.services[0]?.config).toEqual([
      { key: 'workers', value: '4' },
      { key: 'tls_key', secret: true, value: '[redacted]' },
      { key: 'unset', secret: true },
    ]);
    expect(await agent.stop()).toEqual({ kind: 'stopped' });
    expect(statuses).toEqual(['online', 'offline']);
    await server.close();
  });

  it('reconnects after the server drops it, with the backoff reset by the welcome', async () => {
    const server = await startFakeServer();
    const backoff = countingBackoff();
    server.events.once('connection', (_n: number, ws: WebSocket) => {
      server.next('report').then(() => ws.close(1012, 'restarting'));
    });
    const agent = startAgent({ state: agentStateFor(server), services: [], logger: quiet, backoff });
    const first = await server.next('report');
    const second = await server.next('report', server.received.indexOf(first) + 1);
    expect(second.connection).toBe(first.connection + 1);
    expect(backoff.resets).toBe(2);
    await agent.stop();
    await server.close();
  });

  it('stops for good when the server says the agent is revoked', async () => {
    const server = await startFakeServer({
      refuse: { code: 'agent_revoked', message: 'This agent was revoked.' },
    });
    const lines: string[] = [];
    const agent = startAgent({
      state: agentStateFor(server),
      services: [],
      logger: createLogger({ write: (line) => lines.push(line) }),
      backoff: createBackoff({ random: () => 0 }),
    });
    expect(await agent.done).toEqual({ kind: 'revoked', message: 'This agent was revoked.' });
    expect(server.received.map((e) => e.message.type)).toEqual(['hello']);
    expect(lines.join('')).toContain('revoked this agent; stopping for good');
    await server.close();
  });

  it('backs off and retries when the server refuses for another reason (disabled)', async () => {
    const server = await startFakeServer({ refuse: { code: 'agent_disabled', message: 'disabled' } });
    const agent = startAgent({
      state: agentStateFor(server),
      services: [],
      logger: quiet,
      backoff: createBackoff({ random: () => 0 }),
    });
    const first = await server.next('hello');
    const again = await server.next('hello', server.received.indexOf(first) + 1);
    expect(again.connection).toBeGreaterThan(first.connection);
    expect(await agent.stop()).toEqual({ kind: 'stopped' });
    await server.close();
  });

  it('checkHandshake reports success without reporting services, and failure when nobody listens', async () => {
    const server = await startFakeServer({ heartbeatSeconds: 7 });
    const state = agentStateFor(server);
    const closed = new Promise((resolve) =>
      server.events.once('connection', (_n: number, ws: WebSocket) => resolve(once(ws, 'close'))),
    );
    const check = await checkHandshake({ state, logger: quiet });
    expect(check).toMatchObject({ ok: true, welcome: { heartbeatSeconds: 7 } });
    await closed;
    expect(server.received.map((e) => e.message.type)).toEqual(['hello', 'proof']);
    await server.close();
    const down = await checkHandshake({ state, logger: quiet });
    expect(down).toMatchObject({ ok: false, reason: expect.stringMatching(/ECONNREFUSED/) });
  });
});
