import { AGENT_CONNECT_PATH, MAX_AGENT_MESSAGE_BYTES } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import { openAgentSocket } from '../test-support/agents.js';
import { type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * The gateway's limits (AGT-3), before any agent is known.
 *
 * Attacks: an agent channel carried in clear across a network (plain ws:// seen by a proxy as plain
 * HTTP from a remote client), where anyone on the path could watch or tamper with commands; a flood
 * of connection attempts from one address; one oversized message to exhaust the server's memory.
 *
 * SQLite only: every limit here acts before an agent is looked up, in the process and its memory (the
 * transport check on the upgrade, the per-address limiter's memory store, the socket's size cap, the
 * handshake counters), so no step reaches the database and PostgreSQL would run the same code again.
 * gateway.security.test.ts and gateway-misbehaviour.security.test.ts run what does on both.
 */

let world: OrgWorld;
const METRICS_TOKEN = 'f3a9c1e7b2d4086a5e9f1c3b7d2a4e6f8091b3c5';

beforeAll(async () => {
  world = await startOrgWorld({
    BULWARK_TRUSTED_PROXIES: '127.0.0.1',
    BULWARK_AGENT_CONNECTS_PER_MINUTE: '5',
    BULWARK_METRICS_TOKEN: METRICS_TOKEN,
  });
});
afterAll(() => world.close());

/** The HTTP status the upgrade was answered with (101 when the WebSocket opened). */
function upgradeStatus(headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${world.server.url.replace('http', 'ws')}${AGENT_CONNECT_PATH}`, {
      headers,
    });
    socket.on('open', () => {
      socket.close();
      resolve(101);
    });
    socket.on('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0);
      response.resume();
    });
    socket.on('error', (error) => {
      if (!/Unexpected server response/.test(error.message)) reject(error);
    });
  });
}

describe('gateway limits', () => {
  it('takes plain ws:// only from loopback; a remote client behind the proxy must have come over TLS', async () => {
    const remote = { 'x-forwarded-for': '203.0.113.7' };
    expect(await upgradeStatus({ ...remote, 'x-forwarded-proto': 'http' })).toBe(403);
    expect(await upgradeStatus({ ...remote, 'x-forwarded-proto': 'https' })).toBe(101);
  });

  it('answers 429 beyond the connection attempts allowed per address and minute', async () => {
    const from = { 'x-forwarded-for': '198.51.100.20', 'x-forwarded-proto': 'https' };
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) statuses.push(await upgradeStatus(from));
    expect(statuses).toEqual([101, 101, 101, 101, 101, 429, 429]);
    expect(await upgradeStatus({ 'x-forwarded-for': '198.51.100.21', 'x-forwarded-proto': 'https' })).toBe(
      101,
    );
  });

  it('closes a connection that sends a message over the size cap, before parsing it, and keeps serving', async () => {
    const connection = await openAgentSocket(world.server.url);
    connection.socket.send('x'.repeat(MAX_AGENT_MESSAGE_BYTES + 1));
    expect(await connection.closed).toBe(1009);
    // The server took it in its stride (an unhandled socket error would have ended the process).
    expect((await fetch(`${world.server.url}/healthz`)).status).toBe(200);
    expect(world.server.logs.text).toContain('agent connection error');
  });

  it('answers 404 to an upgrade on any other path', async () => {
    const status = await new Promise<number>((resolve) => {
      const socket = new WebSocket(`${world.server.url.replace('http', 'ws')}/agent/v0/connect`);
      socket.on('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
      socket.on('error', () => {});
    });
    expect(status).toBe(404);
  });

  it('counts handshakes by how they ended, for operators to see a storm or an attack', async () => {
    const connection = await openAgentSocket(world.server.url);
    connection.socket.send(JSON.stringify({ v: 1, type: 'heartbeat' })); // before any proof: refused
    await connection.closed;
    const metrics = async () =>
      (
        await fetch(`${world.server.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      ).text();
    const count = (text: string, outcome: string) =>
      Number(
        new RegExp(`^bulwark_agent_handshakes_total\\{outcome="${outcome}"\\} (\\d+)`, 'm').exec(text)?.[1] ??
          0,
      );
    // The server counts when its side of the socket has closed, a moment after the client's.
    await vi.waitFor(async () => {
      const text = await metrics();
      expect(count(text, 'refused')).toBeGreaterThanOrEqual(1);
      expect(count(text, 'closed')).toBeGreaterThanOrEqual(1); // the oversized message of the test above
      expect(text).toMatch(/^bulwark_agents_connected 0$/m);
    });
  });
});
