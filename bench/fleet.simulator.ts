/**
 * The simulated fleet of bench/fleet, in a process of its own (forked by the bench). Each simulated
 * agent is what `bulwark-agent` is on the wire: it registers with a token and its own Ed25519 and
 * X25519 keys, checks the server's proof against the key it pinned, proves its own key, reports a
 * service, heartbeats at the interval the server asks, and reconnects with the agent's own backoff
 * (exponential, full jitter, capped at 60 s). Only the process is shared: up to the process's
 * open-files limit of agents in one (the cluster run uses several such processes).
 *
 * Given several server addresses, the agents reach them through a simulated load balancer
 * (fleet.balancer.ts): each connection goes to the next instance in its rotation, so an agent whose
 * instance dies reconnects to another.
 *
 * Commands arrive over IPC from the bench; progress goes back the same way.
 */
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { type Balancer, createBalancer } from './fleet.balancer.js';

type BackoffModule = typeof import('../packages/agent/src/backoff.js');
type ProtocolModule = typeof import('../packages/protocol/src/index.js');
const { createBackoff } = (await import(
  new URL('../packages/agent/dist/backoff.js', import.meta.url).href
)) as BackoffModule;
const protocol = (await import(
  new URL('../packages/protocol/dist/index.js', import.meta.url).href
)) as ProtocolModule;

export type SimulatorCommand =
  /** Registers `count` agents named from `first` on, using the tokens from `first` on in rotation. */
  | { cmd: 'register'; url: string; tokens: string[]; count: number; first?: number }
  /** One address, or several behind the simulated load balancer. */
  | { cmd: 'connect'; url: string | string[]; mode: 'bulwark' | 'bare'; count: number }
  /** Stops agents for good (no reconnect) until each address holds at most `keepPerUrl` of ours. */
  | { cmd: 'retire'; keepPerUrl: number }
  /** Up to `perUrl` ids of agents online on each address. */
  | { cmd: 'sample'; perUrl: number }
  | { cmd: 'disconnect' };

export type SimulatorReport =
  | { type: 'registered'; count: number; seconds: number }
  | {
      type: 'online';
      count: number;
      /** Attempts that ended without a welcome, as the agents saw them (each followed by a backoff). */
      failures: number;
      /** Online agents per server address. */
      byUrl: Record<string, number>;
      /** Connections an instance refused that the balancer passed to the next one (never seen by agents). */
      passedOn: number;
    }
  | { type: 'retired'; count: number }
  | { type: 'sample'; byUrl: Record<string, string[]> }
  | { type: 'disconnected' }
  | { type: 'error'; message: string };

interface SimulatedAgent {
  id: string;
  signingKey: KeyObject;
  serverKey: KeyObject;
  /** Where the agent is connected and welcomed now, if it is. */
  onlineAt?: string;
  socket?: WebSocket;
  /** Stopped for good by `retire`: it does not reconnect. */
  retired?: boolean;
}

const report = (message: SimulatorReport) => process.send?.(message);
const agents: SimulatedAgent[] = [];
const sockets = new Set<WebSocket>();
const onlineByUrl = new Map<string, number>();
let online = 0;
let failures = 0;
let stopping = false;
let balancer: Balancer | undefined;

/** Runs `work` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function register(url: string, tokens: string[], count: number, first: number): Promise<void> {
  const started = performance.now();
  const indexes = Array.from({ length: count }, (_, i) => first + i);
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
    report({
      type: 'online',
      count: online,
      failures,
      byUrl: Object.fromEntries(onlineByUrl),
      passedOn: balancer?.passedOn ?? 0,
    });
  }, 100);
}

function countOnline(url: string, change: 1 | -1): void {
  online += change;
  onlineByUrl.set(url, (onlineByUrl.get(url) ?? 0) + change);
  progress();
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
function runAgent(lb: Balancer, agent: SimulatedAgent, first: () => void): void {
  const backoff = createBackoff();
  const connect = () => {
    if (stopping || agent.retired) return;
    lb.open(
      (url) => {
        const socket = new WebSocket(`${url.replace('http', 'ws')}${protocol.AGENT_CONNECT_PATH}`, {
          // As bulwark-agent run does: a connection that is not upgraded in time is abandoned and retried.
          handshakeTimeout: 30_000,
          maxPayload: protocol.MAX_AGENT_MESSAGE_BYTES,
          perMessageDeflate: false,
        });
        sockets.add(socket);
        socket.once('close', () => sockets.delete(socket));
        return socket;
      },
      attach,
      () => {
        // No instance took the connection: one failed attempt for the agent, then its backoff.
        if (stopping) return;
        failures++;
        progress();
        setTimeout(connect, backoff.next());
      },
    );
  };

  const attach = (socket: WebSocket, url: string) => {
    agent.socket = socket;
    const agentNonce = randomBytes(32).toString('base64url');
    let heartbeat: NodeJS.Timeout | undefined;
    socket.send(
      JSON.stringify({ v: 1, type: 'hello', agentId: agent.id, agentNonce, agentVersion: 'fleet-sim' }),
    );
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
        agent.onlineAt = url;
        countOnline(url, 1);
        backoff.reset();
        first();
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
      clearTimeout(heartbeat);
      agent.socket = undefined;
      if (stopping) return;
      if (agent.onlineAt) countOnline(agent.onlineAt, -1);
      else {
        // Opened, but closed before the welcome: a failed attempt.
        failures++;
        progress();
      }
      agent.onlineAt = undefined;
      if (!agent.retired) setTimeout(connect, backoff.next());
    });
  };
  connect();
}

async function connectFleet(url: string | string[], mode: 'bulwark' | 'bare', count: number): Promise<void> {
  stopping = false;
  if (mode === 'bare') {
    // Idle connections to a bare ws server: the memory baseline.
    const address = Array.isArray(url) ? url[0]! : url;
    await pool(
      Array.from({ length: count }, (_, i) => i),
      200,
      () =>
        new Promise<void>((resolve) => {
          const socket = new WebSocket(address, { perMessageDeflate: false });
          sockets.add(socket);
          socket.on('open', () => {
            countOnline(address, 1);
            resolve();
          });
          socket.on('error', () => resolve());
          socket.on('close', () => sockets.delete(socket));
        }),
    );
    return;
  }
  const lb = createBalancer(Array.isArray(url) ? url : [url]);
  balancer = lb;
  // The first connection of each agent is staggered 200 at a time, like a fleet that starts over a
  // few seconds; after that each agent reconnects on its own schedule.
  await pool(
    agents.slice(0, count),
    200,
    (agent) => new Promise<void>((resolve) => runAgent(lb, agent, resolve)),
  );
}

/** Stops agents for good, the newest first on each address, until it holds at most `keepPerUrl` of ours. */
function retire(keepPerUrl: number): number {
  const kept = new Map<string, number>();
  let retired = 0;
  for (const agent of agents) {
    if (!agent.onlineAt || agent.retired) continue;
    const held = kept.get(agent.onlineAt) ?? 0;
    if (held < keepPerUrl) {
      kept.set(agent.onlineAt, held + 1);
      continue;
    }
    agent.retired = true;
    agent.socket?.close(1000, 'retired');
    retired++;
  }
  return retired;
}

function sample(perUrl: number): Record<string, string[]> {
  const byUrl: Record<string, string[]> = {};
  for (const agent of agents) {
    if (!agent.onlineAt) continue;
    const ids = byUrl[agent.onlineAt] ?? [];
    byUrl[agent.onlineAt] = ids;
    if (ids.length < perUrl) ids.push(agent.id);
  }
  return byUrl;
}

process.on('message', (command: SimulatorCommand) => {
  const run = async () => {
    if (command.cmd === 'register')
      await register(command.url, command.tokens, command.count, command.first ?? 0);
    else if (command.cmd === 'connect') await connectFleet(command.url, command.mode, command.count);
    else if (command.cmd === 'retire') report({ type: 'retired', count: retire(command.keepPerUrl) });
    else if (command.cmd === 'sample') report({ type: 'sample', byUrl: sample(command.perUrl) });
    else {
      stopping = true;
      for (const socket of sockets) socket.terminate();
      online = 0;
      failures = 0;
      onlineByUrl.clear();
      for (const agent of agents) agent.onlineAt = undefined;
      report({ type: 'disconnected' });
    }
  };
  run().catch((error: unknown) => report({ type: 'error', message: String(error) }));
});
