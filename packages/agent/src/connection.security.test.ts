/**
 * Attack: an impostor server. Someone who can answer for the server's name (hijacked DNS, a
 * mis-issued or stolen TLS certificate, a TLS-terminating proxy, a compromised network path) accepts
 * the agent's connection and plays the server: to collect the agent's proof and relay it to the real
 * server as the agent, to learn the agent's services and configuration from its report, and later to
 * send it commands. Stopped by AGT-6: the server must first sign the agent's fresh nonce with the key
 * the agent pinned at registration; an impostor that signs with any other key, or replays a
 * signature made for another connection, gets the connection closed and nothing else: no proof, no
 * report. Also: ws:// (no TLS) to a non-loopback host is refused, a certificate that does not match
 * a pinned fingerprint is refused before the agent says anything, and a malformed server message
 * closes the connection.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  AGENT_PROTOCOL_VERSION,
  type AgentMessage,
  serverProofStatement,
  signStatement,
} from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackoff } from './backoff.js';
import { type RunOutcome, startAgent } from './connection.js';
import { createLogger } from './log.js';
import { InsecureServerError } from './net.js';
import { agentStateFor, tempDir } from './test-support/agent-state.js';
import { type FakeServerOptions, startFakeServer } from './test-support/fake-server.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await dir.remove();
});

/** Runs an agent against a server until `connections` connections have ended, then stops it. */
async function agentAgainst(
  options: FakeServerOptions,
  connections = 2,
  tls?: { fingerprint256?: string; caFile?: string },
) {
  const server = await startFakeServer(options);
  const lines: string[] = [];
  const logger = createLogger({ write: (line) => lines.push(line) });
  const state = agentStateFor(server);
  let closed = 0;
  const allClosed = new Promise<void>((resolve) => {
    server.events.on('connection', (_n: number, ws: import('ws').WebSocket) => {
      ws.on('close', () => {
        if (++closed === connections) resolve();
      });
    });
  });
  // random() = 0: reconnect at once, so the test waits on events, not on time.
  const agent = startAgent({
    state,
    services: [],
    logger,
    backoff: createBackoff({ random: () => 0 }),
    ...(tls ? { tls } : {}),
  });
  let outcome: RunOutcome;
  try {
    await allClosed;
  } finally {
    outcome = await agent.stop();
    await server.close();
  }
  const sent = server.received.map((entry) => entry.message.type);
  return { server, sent, lines, outcome, state };
}

const types = (messages: AgentMessage['type'][]) => new Set(messages);

describe('an impostor server', () => {
  it('that signs with another key gets no proof and no report, and the agent keeps trying the real one', async () => {
    const impostorKey = generateKeyPairSync('ed25519').privateKey;
    const { sent, lines, outcome } = await agentAgainst({ signWith: impostorKey }, 2);
    expect(sent.filter((type) => type === 'hello').length).toBeGreaterThanOrEqual(2);
    expect(types(sent)).toEqual(new Set(['hello']));
    expect(lines.join('')).toContain('the server failed to prove the pinned signing key');
    expect(outcome).toEqual({ kind: 'stopped' });
  });

  it('that replays a real signature made for another connection gets no proof', async () => {
    // A valid signature by the pinned key, but over another connection's agent nonce.
    const realKey = generateKeyPairSync('ed25519');
    const server = await startFakeServer();
    const state = agentStateFor(server, {
      serverSigningKey: realKey.publicKey.export({ format: 'jwk' }).x as string,
    });
    await server.close();
    const serverNonce = randomBytes(32).toString('base64url');
    const staleSignature = signStatement(
      realKey.privateKey,
      serverProofStatement({
        agentId: state.agentId,
        agentNonce: randomBytes(32).toString('base64url'),
        serverNonce,
      }),
    );
    const replaying = await startFakeServer({
      rawChallenge: () =>
        JSON.stringify({
          v: AGENT_PROTOCOL_VERSION,
          type: 'challenge',
          serverNonce,
          serverSignature: staleSignature,
        }),
    });
    const agent = startAgent({
      state: { ...state, server: replaying.url },
      services: [],
      logger: createLogger({ write: () => {} }),
      backoff: createBackoff({ random: () => 0 }),
    });
    await replaying.next('hello');
    await replaying.next('hello', replaying.received.length);
    await agent.stop();
    await replaying.close();
    expect(types(replaying.received.map((e) => e.message.type))).toEqual(new Set(['hello']));
  });

  it.each([
    ['not JSON', () => 'challenge please'],
    ['an unknown message type', () => JSON.stringify({ v: 1, type: 'command', run: 'rm -rf /' })],
    ['an extra field', () => JSON.stringify({ v: 1, type: 'refused', code: 'x', message: 'y', extra: true })],
    [
      'a welcome before any proof',
      () =>
        JSON.stringify({
          v: 1,
          type: 'welcome',
          heartbeatSeconds: 5,
          agent: { id: 'agt_01JB0000000000000000000000', name: 'a', labels: {} },
        }),
    ],
  ])('that sends %s has the connection closed, no proof sent', async (_what, raw) => {
    const { sent, outcome } = await agentAgainst({ rawChallenge: raw }, 2);
    expect(types(sent)).toEqual(new Set(['hello']));
    expect(outcome).toEqual({ kind: 'stopped' });
  });
});

describe('transport', () => {
  it('refuses ws:// (no TLS) to a non-loopback host', async () => {
    const server = await startFakeServer();
    try {
      const state = agentStateFor(server, { server: 'http://bulwark.example.com' });
      expect(() => startAgent({ state, services: [], logger: createLogger({ write: () => {} }) })).toThrow(
        InsecureServerError,
      );
    } finally {
      await server.close();
    }
  });

  describe('with a pinned certificate fingerprint', () => {
    let tls: { key: string; cert: string; fingerprint256: string };
    beforeAll(() => {
      const key = path.join(dir.path, 'key.pem');
      const cert = path.join(dir.path, 'cert.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-days',
          '1',
          '-subj',
          '/CN=bulwark-test',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
        ],
        { stdio: 'ignore' },
      );
      const fingerprint = execFileSync(
        'openssl',
        ['x509', '-in', cert, '-noout', '-fingerprint', '-sha256'],
        { encoding: 'utf8' },
      );
      tls = {
        key: readFileSync(key, 'utf8'),
        cert: readFileSync(cert, 'utf8'),
        fingerprint256: fingerprint.trim().split('=')[1] ?? '',
      };
    });

    it('connects to the server whose certificate matches', async () => {
      const server = await startFakeServer({ tls });
      const state = agentStateFor(server);
      const agent = startAgent({
        state,
        services: [],
        logger: createLogger({ write: () => {} }),
        tls: { fingerprint256: tls.fingerprint256 },
      });
      await server.next('report');
      await agent.stop();
      await server.close();
    });

    it('says nothing to a server with another certificate', async () => {
      const wrong = `${'00:'.repeat(31)}00`;
      const { sent, lines } = await agentAgainst({ tls }, 2, { fingerprint256: wrong });
      expect(sent).toEqual([]);
      expect(lines.join('')).toContain('does not match the pinned fingerprint');
    });

    it('trusts the certificate through a pinned CA file', async () => {
      const server = await startFakeServer({ tls });
      const agent = startAgent({
        state: agentStateFor(server),
        services: [],
        logger: createLogger({ write: () => {} }),
        tls: { caFile: path.join(dir.path, 'cert.pem') },
      });
      await server.next('report');
      await agent.stop();
      await server.close();
    });

    it('without a pin, refuses the self-signed certificate (system CAs only)', async () => {
      const server = await startFakeServer({ tls });
      let sawRefusal: () => void = () => {};
      const refused = new Promise<void>((resolve) => {
        sawRefusal = resolve;
      });
      const lines: string[] = [];
      const logger = createLogger({
        write: (line) => {
          lines.push(line);
          if (line.includes('disconnected; will reconnect')) sawRefusal();
        },
      });
      const agent = startAgent({
        state: agentStateFor(server),
        services: [],
        logger,
        backoff: createBackoff({ random: () => 0 }),
      });
      await refused;
      await agent.stop();
      await server.close();
      expect(server.received).toEqual([]);
      expect(lines.join('')).toMatch(/self.signed certificate/i);
    });
  });
});
