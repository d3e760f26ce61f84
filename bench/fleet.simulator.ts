/**
 * The simulated fleet of bench/fleet, in a process of its own (forked by the bench). Each simulated
 * agent is what `bulwark-agent` is on the wire: it registers with a token and its own Ed25519 and
 * X25519 keys, checks the server's proof against the key it pinned, proves its own key, reports a
 * service, heartbeats at the interval the server asks, and reconnects with the agent's own backoff
 * (exponential, full jitter, capped at 60 s). Only the process is shared: 10,000 agents in one.
 *
 * Commands arrive over IPC from the bench; progress goes back the same way.
 */
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import WebSocket from 'ws';

type BackoffModule = typeof import('../packages/agent/src/backoff.js');
type ProtocolModule = typeof import('../packages/protocol/src/index.js');
const { createBackoff } = (await import(
  new URL('../packages/agent/dist/backoff.js', import.meta.url).href
)) as BackoffModule;
const protocol = (await import(
  new URL('../packages/protocol/dist/index.js', import.meta.url).href
)) as ProtocolModule;

export type SimulatorCommand =
  | { cmd: 'register'; url: string; tokens: string[]; count: number }
  | { cmd: 'connect'; url: string; mode: 'bulwark' | 'bare'; count: number }
  | { cmd: 'disconnect' };

export type SimulatorReport =
  | { type: 'registered'; count: number; seconds: number }
  | { type: 'online'; count: number; failures: number }
  | { type: 'disconnected' }
  | { type: 'error'; message: string };

interface SimulatedAgent {
  id: string;
  signingKey: KeyObject;
  serverKey: KeyObject;
}

const report = (message: SimulatorReport) => process.send?.(message);
const agents: SimulatedAgent[] = [];
const sockets = new Set<WebSocket>();
let online = 0;
let failures = 0;
let stopping = false;

/** Runs `work` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function register(url: string, tokens: string[], count: number): Promise<void> {
  const started = performance.now();
  const indexes = Array.from({ length: count }, (_, i) => i);
  await pool(indexes, 16, async (i) => {
    const signing = generateKeyPairSync('ed25519');
    const encryption = generateKeyPairSync('x25519');
    const response = await fetch(`${url}${protocol.AGENT_REGISTER_PATH}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        token: tokens[i % tokens.length],
        name: `sim-${String(i).padStart(5, '0')}`,
        signingKey: protocol.rawPublicKey(signing.publicKey),
        encryptionKey: protocol.rawPublicKey(encryption.publicKey),
      }),
    });
    const body = (await response.json()) as { agentId: string; serverSigningKey: string };
    if (response.status !== 201)
      throw new Error(`registration answered ${response.status}: ${JSON.stringify(body)}`);
    agents.push({
      id: body.agentId,
      signingKey: signing.privateKey,
      serverKey: protocol.ed25519PublicKey(body.serverSigningKey),
    });
  });
  report({ type: 'registered', count: agents.length, seconds: (performance.now() - started) / 1000 });
}

let reportTimer: NodeJS.Timeout | undefined;
/** Progress at most every 100 ms: 10,000 changes must not become 10,000 IPC messages. */
function progress(): void {
  if (reportTimer) return;
  reportTimer = setTimeout(() => {
    reportTimer = undefined;
    report({ type: 'online', count: online, failures });
  }, 100);
}

const SERVICE = {
  name: 'app',
  kind: 'node',
  version: '1.0.0',
  health: { status: 'up', message: '' },
  config: [{ key: 'region', value: 'eu-west-1' }],
  actions: [
    {
      name: 'restart',
      description: 'Restart',
      params: { type: 'object', properties: {}, additionalProperties: false },
      risk: 'medium',
      timeoutSeconds: 60,
      secrets: [],
    },
  ],
};

/** One agent's life: connect, prove, report, heartbeat; on any loss, back off and start again. */
function runAgent(url: string, agent: SimulatedAgent, first: () => void): void {
  const backoff = createBackoff();
  const connect = () => {
    if (stopping) return;
    const socket = new WebSocket(`${url.replace('http', 'ws')}${protocol.AGENT_CONNECT_PATH}`, {
      // As bulwark-agent run does: a connection that is not upgraded in time is abandoned and retried.
      handshakeTimeout: 30_000,
      maxPayload: protocol.MAX_AGENT_MESSAGE_BYTES,
      perMessageDeflate: false,
    });
    sockets.add(socket);
    const agentNonce = randomBytes(32).toString('base64url');
    let isOnline = false;
    let heartbeat: NodeJS.Timeout | undefined;
    socket.on('open', () => {
      socket.send(
        JSON.stringify({ v: 1, type: 'hello', agentId: agent.id, agentNonce, agentVersion: 'fleet-sim' }),
      );
    });
    socket.on('message', (data) => {
      const message = protocol.ServerMessage.parse(JSON.parse(data.toString()));
      if (message.type === 'challenge') {
        const nonces = { agentId: agent.id, agentNonce, serverNonce: message.serverNonce };
        if (
          !protocol.verifyStatement(
            agent.serverKey,
            protocol.serverProofStatement(nonces),
            message.serverSignature,
          )
        ) {
          socket.close();
          return;
        }
        const signature = protocol.signStatement(agent.signingKey, protocol.agentProofStatement(nonces));
        socket.send(JSON.stringify({ v: 1, type: 'proof', signature }));
      } else if (message.type === 'command') {
        // A trivial action: checked as the agent checks it (signature, target, expiry), then started
        // and finished at once, so that what is measured is the control plane's path.
        const { envelope } = message;
        const valid =
          envelope.agentId === agent.id &&
          envelope.expiresAt > Date.now() &&
          protocol.verifyStatement(agent.serverKey, protocol.commandStatement(envelope), message.signature);
        const commandId = envelope.commandId;
        if (!valid) {
          socket.send(
            JSON.stringify({
              v: 1,
              type: 'command_refused',
              commandId,
              reason: 'bad_signature',
              message: '',
            }),
          );
          return;
        }
        socket.send(JSON.stringify({ v: 1, type: 'command_started', commandId }));
        socket.send(
          JSON.stringify({
            v: 1,
            type: 'command_finished',
            commandId,
            outcome: 'succeeded',
            exitCode: 0,
            message: '',
          }),
        );
      } else if (message.type === 'welcome') {
        isOnline = true;
        online++;
        backoff.reset();
        first();
        progress();
        socket.send(JSON.stringify({ v: 1, type: 'report', services: [SERVICE] }));
        // Heartbeats start at a random point of the interval, as agents that came up at different times do.
        const everyMs = message.heartbeatSeconds * 1000;
        heartbeat = setTimeout(function beat() {
          socket.send(JSON.stringify({ v: 1, type: 'heartbeat' }));
          heartbeat = setTimeout(beat, everyMs);
        }, Math.random() * everyMs);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      clearTimeout(heartbeat);
      if (isOnline) online--;
      else failures++;
      progress();
      if (!stopping) setTimeout(connect, backoff.next());
    });
  };
  connect();
}

async function connectFleet(url: string, mode: 'bulwark' | 'bare', count: number): Promise<void> {
  stopping = false;
  if (mode === 'bare') {
    // Idle connections to a bare ws server: the memory baseline.
    await pool(
      Array.from({ length: count }, (_, i) => i),
      200,
      () =>
        new Promise<void>((resolve) => {
          const socket = new WebSocket(url, { perMessageDeflate: false });
          sockets.add(socket);
          socket.on('open', () => {
            online++;
            progress();
            resolve();
          });
          socket.on('error', () => resolve());
          socket.on('close', () => sockets.delete(socket));
        }),
    );
    return;
  }
  // The first connection of each agent is staggered 200 at a time, like a fleet that starts over a
  // few seconds; after that each agent reconnects on its own schedule.
  await pool(
    agents.slice(0, count),
    200,
    (agent) => new Promise<void>((resolve) => runAgent(url, agent, resolve)),
  );
}

process.on('message', (command: SimulatorCommand) => {
  const run = async () => {
    if (command.cmd === 'register') await register(command.url, command.tokens, command.count);
    else if (command.cmd === 'connect') await connectFleet(command.url, command.mode, command.count);
    else {
      stopping = true;
      for (const socket of sockets) socket.terminate();
      online = 0;
      failures = 0;
      report({ type: 'disconnected' });
    }
  };
  run().catch((error: unknown) => report({ type: 'error', message: String(error) }));
});
