import { randomBytes } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  AGENT_CONNECT_PATH,
  AGENT_PROTOCOL_VERSION,
  AgentMessage,
  agentProofStatement,
  ed25519VerificationKey,
  type HandshakeNonces,
  MAX_AGENT_MESSAGE_BYTES,
  type ServerMessage,
  serverProofStatement,
  verifyStatement,
} from '@bulwark/protocol';
import type { Logger } from 'pino';
import { type WebSocket, WebSocketServer } from 'ws';
import { type AgentPrincipal, decide } from '../access/authorize.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import { createWindowLimiter, type LimiterStore, RateLimitUnavailableError } from '../http/rate-limiters.js';
import { type ClusterBus, type HeldConnection, heldConnection } from '../ops/cluster-bus.js';
import type { AgentMetrics } from '../ops/metrics.js';
import type { ServerKeysService } from '../secrets/server-keys.service.js';
import type { AgentKeySeals } from './agent-keys.js';
import { parseLabels } from './agents.service.js';
import type { AgentRow, AgentsStore } from './agents.store.js';
import { createMisbehaviourRecorder, type MisbehaviourKind } from './misbehaviour.js';
import type { ServicesService } from './services.service.js';

/**
 * The agent gateway (AGT-2, AGT-3, AGT-4): agents connect out to `/agent/v1/connect` and never listen
 * themselves. Every connection starts with the mutual proof of agent-protocol.ts; until the agent's
 * proof verifies, the only messages accepted are `hello` and `proof`, and the connection closes after
 * HANDSHAKE_MS. Refusals are audited; the refusal given to an unknown agent or a bad signature is the
 * same, and an agent's state (disabled, revoked) is told only to the holder of its key.
 *
 * Liveness is kept in memory on the instance holding the connection; an agent that misses three
 * heartbeats is closed and offline. Last-seen times reach the database in batches. With several
 * instances (HA-1), each tells the others over the cluster bus which agents it holds (and keeps a
 * holder key with the same lifetime in Redis), so that an agent is online on every instance, and the
 * instance holding it delivers what another was asked to send.
 *
 * Once welcomed, an agent acts as itself and nothing more (invariant 5): whether a command it reports
 * on is its own is decided by `decide` (access/authorize.ts) on the command's owner, before the
 * commands module sees the message. A report about anything not its own is ignored, as though the
 * command did not exist; it and every other misbehaviour (an invalid, unknown or oversized frame, a
 * handshake message out of turn) is logged and audited as `agent.misbehaved` (misbehaviour.ts).
 */

const HANDSHAKE_MS = 10_000;
const MISSED_HEARTBEATS = 3;
const LAST_SEEN_FLUSH_MS = 30_000;
/** WebSocket close codes: 1008 policy violation, 4000+ application-defined. */
const CLOSE_POLICY = 1008;
const CLOSE_REFUSED = 4401;
const CLOSE_REPLACED = 4409;
const CLOSE_OFFLINE = 4408;
/** Commands an agent's connection has been found to own; their owner never changes, so it is asked once. */
const OWN_COMMANDS_KEPT = 1024;
/** The message types of the protocol: a frame of any other type is `unknown_type`, not merely invalid. */
const MESSAGE_TYPES: ReadonlySet<string> = new Set(
  AgentMessage.options.map((option) => option.shape.type.value),
);

/** Why a frame that failed validation failed, as far as can be said without echoing its content. */
function invalidKind(parsed: unknown): MisbehaviourKind {
  const type = (parsed as { type?: unknown } | null)?.type;
  return typeof parsed === 'object' && typeof type === 'string' && !MESSAGE_TYPES.has(type)
    ? 'unknown_type'
    : 'invalid_message';
}

export interface GatewayOptions {
  heartbeatSeconds: number;
  connectsPerMinute: number;
  /** Whether this server terminates TLS itself; otherwise only loopback peers may connect (AGT-3). */
  tls: boolean;
  /** Proxies whose X-Forwarded-Proto/For are believed (they terminate TLS in front of us). */
  trustedProxies: string[];
}

export type AgentCommandMessage = Extract<
  AgentMessage,
  { type: 'command_started' | 'command_output' | 'command_finished' | 'command_refused' | 'command_states' }
>;

export interface CommandHandlers {
  welcomed(agent: AgentRow): Promise<void>;
  message(agent: AgentRow, message: AgentCommandMessage): Promise<void>;
}

/** Cluster bus messages (ops/cluster-bus.ts): ids only; the database says the rest. */
interface PresenceMessage {
  /** Agents the sender holds, with when each was last heard from. */
  held?: Array<[agentId: string, at: number]>;
  /** How long `held` stands unless said again (the sender's heartbeat period, three times). */
  ttlMs?: number;
  /** The agents in `held` have just connected to the sender. */
  welcomed?: boolean;
  /** With `welcomed`: each one's connection, for its page on every instance. */
  connections?: Record<string, HeldConnection>;
  /** Agents the sender no longer holds. */
  released?: string[];
}
interface WorkMessage {
  agentId: string;
}
interface CancelMessage {
  agentId: string;
  orgId: string;
  commandId: string;
}
interface DisconnectMessage {
  agentId: string;
}

interface Connection {
  socket: WebSocket;
  agent: AgentRow & { org_slug: string };
  lastHeartbeat: number;
  context: AuditRequestContext;
  /** For the agent's page: since when, and the agent software's version it said in its hello. */
  connectedAt: number;
  agentVersion: string;
}

const shownConnection = (connection: Connection): HeldConnection => ({
  connectedAt: connection.connectedAt,
  address: connection.context.ip ?? '',
  agentVersion: connection.agentVersion,
});

const isLoopback = (address: string | undefined) =>
  address !== undefined &&
  (address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.'));

function send(socket: WebSocket, message: ServerMessage): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
}

/** An agent's own connection coming or going, in its organization's chain. */
function connectionEvent(
  agent: Pick<AgentRow, 'id' | 'name' | 'org_id'>,
  action: 'agent.connected' | 'agent.disconnected',
  context: AuditRequestContext,
): AuditInput {
  const self = { type: 'agent' as const, id: agent.id, display: agent.name };
  return { orgId: agent.org_id, actor: self, action, target: self, outcome: 'success', context, details: {} };
}

function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

export function createAgentGateway(deps: {
  agents: AgentsStore;
  services: ServicesService;
  /**
   * The agent a command names, looked up in one organization (the reporting agent's): what the
   * gateway asks `decide` about before a command report goes any further.
   */
  commandOwner: (
    orgId: string,
    commandId: string,
  ) => Promise<{ org_id: string; agent_id: string } | undefined>;
  /** The server's seals of agents' keys, checked at every handshake. */
  agentKeys: Pick<AgentKeySeals, 'holds'>;
  serverKeys: ServerKeysService;
  audit: AuditService;
  logger: Logger;
  clock: () => number;
  metrics: AgentMetrics;
  options: GatewayOptions;
  /** Told when an agent comes online, goes offline, or was seen (in the last-seen batches): the console shows it live. */
  presence?: (orgId: string, agentId: string, online: boolean, lastSeenAt: number) => void;
  /** Where connection attempts are counted: Redis shared by every instance when configured (HA-1). */
  limiterStore?: LimiterStore;
  /**
   * The other instances (HA-1): which agents each holds, and work or a cancel for an agent held here.
   * Without it (or with a lone instance's bus) the gateway knows only its own connections.
   */
  cluster?: ClusterBus;
}) {
  const { agents, services, commandOwner, agentKeys, serverKeys, audit, logger, clock, metrics, options } =
    deps;
  const misbehaviour = createMisbehaviourRecorder({ audit, logger, clock });
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_AGENT_MESSAGE_BYTES,
    perMessageDeflate: false,
  });
  const connections = new Map<string, Connection>();
  const seen = new Map<string, number>();
  // Disconnections are audited as sockets close; shutdown waits for them before the audit log closes.
  const pendingAudits = new Set<Promise<unknown>>();
  // Agent messages being handled: shutdown waits for them (PLAT-8), so that what an agent reported
  // before the server stopped is committed, with its audit events, before the audit log closes.
  const handling = new Set<Promise<void>>();
  // Fails closed (503) while Redis is down: this is the channel's unauthenticated front door, where
  // each attempt costs a signature check and a lookup. Open connections are not affected, and agents
  // retry with backoff.
  const connectLimiter = createWindowLimiter(deps.limiterStore ?? {}, {
    name: 'agent:connect',
    points: options.connectsPerMinute,
    windowSeconds: 60,
    whenStoreDown: 'refuse',
  });
  const trusted = new Set(options.trustedProxies);
  let commandHandlers: CommandHandlers | undefined;
  const refusedSockets = new WeakSet<WebSocket>();
  // HA-1: the agents other instances hold, as they last said. An entry lasts as long as an agent
  // lasts here without a heartbeat, so an instance that died leaves nobody online for longer.
  const cluster = deps.cluster?.shared ? deps.cluster : undefined;
  const presenceTtlMs = MISSED_HEARTBEATS * options.heartbeatSeconds * 1000;
  const remote = new Map<
    string,
    { instance: string; at: number; until: number; connection: HeldConnection | undefined }
  >();
  const remoteHolder = (agentId: string) => {
    const entry = remote.get(agentId);
    if (!entry || entry.until > clock()) return entry;
    remote.delete(agentId);
    return undefined;
  };
  const clusterUnsubscribers: Array<() => void> = [];
  /** Runs `work` as part of the agent messages being handled, so that shutdown waits for it. */
  const handled = (what: string, work: () => Promise<void>) => {
    const running = work().catch((error: unknown) => logger.error({ err: error }, what));
    handling.add(running);
    void running.finally(() => handling.delete(running));
  };

  function clientAddress(request: IncomingMessage): string {
    const peer = request.socket.remoteAddress ?? '';
    const forwarded = request.headers['x-forwarded-for'];
    if (trusted.has(peer) && typeof forwarded === 'string') {
      const last = forwarded.split(',').at(-1)?.trim() ?? '';
      if (isIP(last)) return last;
    }
    return peer;
  }

  /** Plain ws:// is for loopback only; anything else must arrive over TLS, here or at a trusted proxy. */
  function transportAllowed(request: IncomingMessage): boolean {
    if (options.tls) return true;
    const peer = request.socket.remoteAddress;
    if (trusted.has(peer ?? ''))
      return request.headers['x-forwarded-proto'] === 'https' || isLoopback(clientAddress(request));
    return isLoopback(peer);
  }

  const refusedEvent = (
    context: AuditRequestContext,
    reason: string,
    agent?: Pick<AgentRow, 'id' | 'name' | 'org_id'>,
  ) =>
    audit.record({
      orgId: agent?.org_id ?? null,
      actor: agent
        ? { type: 'agent', id: agent.id, display: agent.name }
        : { type: 'anonymous', display: 'agent connection' },
      action: 'agent.connection_refused',
      target: agent ? { type: 'agent', id: agent.id, display: agent.name } : null,
      outcome: 'denied',
      context,
      details: { reason },
    });

  function refuse(socket: WebSocket, code: string, message: string): void {
    refusedSockets.add(socket);
    send(socket, { v: AGENT_PROTOCOL_VERSION, type: 'refused', code, message });
    socket.close(CLOSE_REFUSED, code);
  }

  async function welcome(
    socket: WebSocket,
    agent: AgentRow & { org_slug: string },
    context: AuditRequestContext,
    agentVersion: string,
  ) {
    const previous = connections.get(agent.id);
    if (previous) previous.socket.close(CLOSE_REPLACED, 'replaced by a newer connection');
    else metrics.connected.inc();
    const now = clock();
    connections.set(agent.id, { socket, agent, lastHeartbeat: now, context, connectedAt: now, agentVersion });
    seen.set(agent.id, now);
    remote.delete(agent.id);
    const shown: HeldConnection = { connectedAt: now, address: context.ip ?? '', agentVersion };
    cluster?.hold([[agent.id, now, shown]], presenceTtlMs);
    cluster?.publish('presence', {
      held: [[agent.id, now]],
      ttlMs: presenceTtlMs,
      welcomed: true,
      connections: { [agent.id]: shown },
    } satisfies PresenceMessage);
    send(socket, {
      v: AGENT_PROTOCOL_VERSION,
      type: 'welcome',
      heartbeatSeconds: options.heartbeatSeconds,
      agent: { id: agent.id, name: agent.name, labels: parseLabels(agent.labels) },
    });
    await audit.record(connectionEvent(agent, 'agent.connected', context));
    deps.presence?.(agent.org_id, agent.id, true, now);
    await commandHandlers?.welcomed(agent);
  }

  function onConnection(socket: WebSocket, context: AuditRequestContext): void {
    let nonces: HandshakeNonces | undefined;
    let agentVersion = '';
    let authenticated: (AgentRow & { org_slug: string }) | undefined;
    // How the handshake ended, counted once: a welcome or the deadline when they happen; a refusal,
    // or the agent gone first, when the socket closes.
    let handshakeOutcome: 'welcome' | 'timeout' | undefined;
    const upgradedAt = performance.now();
    const handshakeTimer = setTimeout(() => {
      if (authenticated) return;
      handshakeOutcome = 'timeout';
      metrics.handshakes.inc({ outcome: 'timeout' });
      logger.info({ ip: context.ip, agentId: nonces?.agentId }, 'agent handshake timed out');
      socket.close(CLOSE_POLICY, 'handshake timed out');
    }, HANDSHAKE_MS);
    handshakeTimer.unref();

    // A protocol violation (an oversized frame, bad UTF-8) is an 'error' on the socket, which ws then
    // closes; unhandled, that event would throw and take the whole server down with it.
    socket.on('error', (error: Error & { code?: string }) => {
      if (!authenticated || error.code !== 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        logger.warn({ err: error, ip: context.ip }, 'agent connection error');
        return;
      }
      const recorded = misbehaviour
        .record(authenticated, 'oversized_message', context)
        .catch((failure: unknown) => logger.error({ err: failure }, 'could not audit an agent misbehaviour'))
        .finally(() => pendingAudits.delete(recorded));
      pendingAudits.add(recorded);
    });
    // Messages are handled one at a time, in order: a proof never overtakes its hello.
    let queue = Promise.resolve();
    socket.on('message', (data, isBinary) => {
      const handled = queue
        .then(() => handle(data.toString(), isBinary))
        .catch((error: unknown) => {
          logger.error({ err: error }, 'agent message handling failed');
          socket.close(1011, 'internal error');
        });
      queue = handled;
      handling.add(handled);
      void handled.finally(() => handling.delete(handled));
    });
    socket.on('close', () => {
      clearTimeout(handshakeTimer);
      if (!handshakeOutcome)
        metrics.handshakes.inc({ outcome: refusedSockets.has(socket) ? 'refused' : 'closed' });
      if (authenticated && connections.get(authenticated.id)?.socket === socket) metrics.connected.dec();
      const current = authenticated && connections.get(authenticated.id);
      if (current?.socket !== socket || !authenticated) return;
      connections.delete(authenticated.id);
      seen.set(authenticated.id, current.lastHeartbeat);
      cluster?.release([authenticated.id]);
      cluster?.publish('presence', { released: [authenticated.id] } satisfies PresenceMessage);
      deps.presence?.(authenticated.org_id, authenticated.id, false, current.lastHeartbeat);
      const recorded = audit
        .record(connectionEvent(authenticated, 'agent.disconnected', context))
        .catch((error: unknown) => logger.error({ err: error }, 'could not audit an agent disconnection'))
        .finally(() => pendingAudits.delete(recorded));
      pendingAudits.add(recorded);
    });

    // The commands found to be this agent's own, so that a stream of output asks the database once.
    const ownCommands = new Set<string>();

    /** Whether the command names this agent, as `decide` sees it; anything else is recorded. */
    async function ownsCommand(
      agent: AgentRow,
      commandId: string,
      messageType: AgentCommandMessage['type'],
    ): Promise<boolean> {
      if (ownCommands.has(commandId)) return true;
      const self: AgentPrincipal = { kind: 'agent', orgId: agent.org_id, agentId: agent.id };
      const row = await commandOwner(agent.org_id, commandId);
      if (
        row &&
        decide(self, 'commands:report', { kind: 'command', orgId: row.org_id, agentId: row.agent_id }).allowed
      ) {
        if (ownCommands.size >= OWN_COMMANDS_KEPT) ownCommands.clear();
        ownCommands.add(commandId);
        return true;
      }
      await misbehaviour.record(agent, row ? 'foreign_command' : 'unknown_command', context, {
        messageType,
        commandId,
      });
      return false;
    }

    /** The message with only what concerns this agent's own commands; undefined when nothing does. */
    async function ownPart(
      agent: AgentRow,
      message: AgentCommandMessage,
    ): Promise<AgentCommandMessage | undefined> {
      if (message.type !== 'command_states')
        return (await ownsCommand(agent, message.commandId, message.type)) ? message : undefined;
      const commands: typeof message.commands = [];
      for (const state of message.commands)
        if (await ownsCommand(agent, state.commandId, message.type)) commands.push(state);
      return commands.length > 0 || message.commands.length === 0 ? { ...message, commands } : undefined;
    }

    async function handle(text: string, isBinary: boolean): Promise<void> {
      let parsed: unknown;
      try {
        parsed = isBinary ? undefined : JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      const result = AgentMessage.safeParse(parsed);
      if (!result.success) {
        // Before the proof nobody is known to blame: the refusal and the connection limit suffice.
        if (authenticated) await misbehaviour.record(authenticated, invalidKind(parsed), context);
        refuse(socket, 'invalid_message', 'The message does not follow the agent protocol.');
        return;
      }
      const message = result.data;
      if (!authenticated) {
        if (message.type === 'hello' && !nonces) {
          agentVersion = message.agentVersion;
          nonces = {
            agentId: message.agentId,
            agentNonce: message.agentNonce,
            serverNonce: randomBytes(32).toString('base64url'),
          };
          const signer = await serverKeys.signer('agent-channel');
          send(socket, {
            v: AGENT_PROTOCOL_VERSION,
            type: 'challenge',
            serverNonce: nonces.serverNonce,
            serverSignature: signer.sign(serverProofStatement(nonces)),
          });
          return;
        }
        if (message.type === 'proof' && nonces) {
          const agent = await agents.findForConnection(nonces.agentId);
          const valid =
            agent !== undefined &&
            verifyStatement(
              ed25519VerificationKey(agent.signing_key),
              agentProofStatement(nonces),
              message.signature,
            );
          if (!agent || !valid) {
            await refusedEvent(context, agent ? 'bad_signature' : 'unknown_agent', agent);
            refuse(socket, 'authentication_failed', 'The agent could not prove its identity.');
            return;
          }
          // A key put in the agent's row by someone who can write the database is not the agent's.
          if (!(await agentKeys.holds(agent))) {
            logger.error(
              { agentId: agent.id },
              "an agent's keys in the database are not the ones it registered",
            );
            await refusedEvent(context, 'key_seal_mismatch', agent);
            refuse(socket, 'authentication_failed', 'The agent could not prove its identity.');
            return;
          }
          if (agent.status !== 'active') {
            await refusedEvent(context, `agent_${agent.status}`, agent);
            refuse(socket, `agent_${agent.status}`, `This agent is ${agent.status}.`);
            return;
          }
          // The deadline passed while the proof was being checked (a slow database): the socket is closed
          // or closing, and registering it would stand for an agent nobody is connected as (shown
          // online, sent commands that go nowhere, and replacing the agent's live connection).
          if (handshakeOutcome === 'timeout' || socket.readyState !== socket.OPEN) {
            logger.info(
              { ip: context.ip, agentId: agent.id },
              'agent proof checked after the handshake ended',
            );
            return;
          }
          authenticated = agent;
          handshakeOutcome = 'welcome';
          metrics.handshakes.inc({ outcome: 'welcome' });
          clearTimeout(handshakeTimer);
          metrics.handshakeSeconds.observe((performance.now() - upgradedAt) / 1000);
          await welcome(socket, agent, context, agentVersion);
          return;
        }
        refuse(socket, 'handshake_expected', 'Prove the agent identity first.');
        return;
      }
      const connection = connections.get(authenticated.id);
      if (connection?.socket !== socket) return;
      if (message.type === 'heartbeat') {
        connection.lastHeartbeat = clock();
        seen.set(authenticated.id, connection.lastHeartbeat);
        return;
      }
      if (message.type === 'report') {
        const { foreign, ...result } = await services.applyReport(authenticated, message.services, context);
        if (foreign.length > 0)
          await misbehaviour.record(authenticated, 'foreign_service', context, { messageType: 'report' });
        send(socket, { v: AGENT_PROTOCOL_VERSION, type: 'report_result', ...result });
        return;
      }
      if (message.type === 'hello' || message.type === 'proof') {
        await misbehaviour.record(authenticated, 'unexpected_message', context, {
          messageType: message.type,
        });
        refuse(socket, 'unexpected_message', `A ${message.type} message is not expected now.`);
        return;
      }
      const own = await ownPart(authenticated, message);
      if (own) await commandHandlers?.message(authenticated, own);
    }
  }

  async function onUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://gateway');
    if (url.pathname !== AGENT_CONNECT_PATH) return refuseUpgrade(socket, 404, 'Not Found');
    const ip = clientAddress(request);
    const context: AuditRequestContext = { ip, userAgent: request.headers['user-agent'] ?? null };
    if (!transportAllowed(request)) {
      await refusedEvent(context, 'plain_transport');
      return refuseUpgrade(socket, 403, 'Forbidden');
    }
    try {
      if (!(await connectLimiter.take(ip)).allowed) return refuseUpgrade(socket, 429, 'Too Many Requests');
    } catch (error) {
      // The Redis client logs the outage itself; one line per refused agent would flood the log.
      if (!(error instanceof RateLimitUnavailableError)) throw error;
      return refuseUpgrade(socket, 503, 'Service Unavailable');
    }
    wss.handleUpgrade(request, socket, head, (ws) => onConnection(ws, context));
  }

  /** Closes connections whose agents missed their heartbeats: they are offline (AGT-4). */
  const sweeper = setInterval(() => {
    const deadline = clock() - MISSED_HEARTBEATS * options.heartbeatSeconds * 1000;
    for (const connection of connections.values()) {
      if (connection.lastHeartbeat < deadline) connection.socket.close(CLOSE_OFFLINE, 'missed heartbeats');
    }
    // Every agent held here, once per heartbeat period: the holder keys' TTL refreshed, the others told.
    if (cluster && connections.size > 0) {
      const held = [...connections.entries()].map(([id, c]) => [id, c.lastHeartbeat] as [string, number]);
      // The keys keep each connection's details for instances that start later; the message, ids only.
      cluster.hold(
        [...connections.entries()].map(([id, c]) => [id, c.lastHeartbeat, shownConnection(c)] as const),
        presenceTtlMs,
      );
      cluster.publish('presence', { held, ttlMs: presenceTtlMs } satisfies PresenceMessage);
    }
    // What was counted while a misbehaviour's window was open reaches the audit log once it closes.
    misbehaviour
      .flush()
      .catch((error: unknown) => logger.error({ err: error }, 'could not audit agent misbehaviour'));
  }, options.heartbeatSeconds * 1000);
  sweeper.unref();

  async function flushLastSeen(): Promise<void> {
    if (seen.size === 0) return;
    const batch = new Map(seen);
    seen.clear();
    await agents.touch(batch);
    for (const [id, at] of batch) {
      const connection = connections.get(id);
      if (connection) deps.presence?.(connection.agent.org_id, id, true, at);
    }
  }
  const flusher = setInterval(() => {
    flushLastSeen().catch((error: unknown) =>
      logger.error({ err: error }, 'could not record agents last seen'),
    );
  }, LAST_SEEN_FLUSH_MS);
  flusher.unref();

  if (cluster) {
    clusterUnsubscribers.push(
      cluster.subscribe('presence', (body, from) => {
        const message = body as PresenceMessage;
        const until = clock() + (message.ttlMs ?? presenceTtlMs);
        for (const [agentId, at] of message.held ?? []) {
          const mine = connections.get(agentId);
          // The agent connected there after it connected here: what is left here is a dead connection,
          // which would swallow what is sent to it until its heartbeats were missed.
          if (mine && message.welcomed && at >= mine.connectedAt)
            mine.socket.close(CLOSE_REPLACED, 'replaced by a newer connection');
          const known = remote.get(agentId);
          const connection =
            heldConnection(message.connections?.[agentId]) ??
            (known?.instance === from ? known.connection : undefined);
          remote.set(agentId, { instance: from, at, until, connection });
        }
        for (const agentId of message.released ?? [])
          if (remote.get(agentId)?.instance === from) remote.delete(agentId);
      }),
      cluster.subscribe('work', (body) => {
        const connection = connections.get((body as WorkMessage).agentId);
        const handlers = commandHandlers;
        if (connection && handlers)
          handled('could not deliver commands another instance announced', () =>
            handlers.welcomed(connection.agent),
          );
      }),
      cluster.subscribe('disconnect', (body) => {
        const { agentId } = body as DisconnectMessage;
        const connection = connections.get(agentId);
        if (!connection) return;
        handled('could not end the connection of an agent disabled elsewhere', async () => {
          // The agent's state in the database decides, not the message.
          const row = await agents.findForConnection(agentId);
          if (row && row.status !== 'active' && connections.get(agentId) === connection)
            refuse(connection.socket, `agent_${row.status}`, `This agent is ${row.status}.`);
        });
      }),
      cluster.subscribe('cancel', (body) => {
        const { agentId, orgId, commandId } = body as CancelMessage;
        const connection = connections.get(agentId);
        if (!connection || connection.agent.org_id !== orgId) return;
        handled('could not relay a cancel from another instance', async () => {
          // Sent only for a cancel the audit log holds: a message on the bus alone cancels nothing.
          if (await audit.hasEventAbout(orgId, commandId, ['command.cancel_requested']))
            send(connection.socket, { v: AGENT_PROTOCOL_VERSION, type: 'cancel', commandId });
        });
      }),
    );
    // What the others held before this instance started; from now on, their messages keep it current.
    cluster
      .holders()
      .then((holders) => {
        const now = clock();
        for (const { agentId, instance, at, ttlMs, connection } of holders)
          if (instance !== cluster.instanceId && !remote.has(agentId))
            remote.set(agentId, { instance, at, until: Math.min(at, now) + ttlMs, connection });
      })
      .catch((error: unknown) => logger.warn({ err: error }, 'could not read which instances hold agents'));
  }

  return {
    attach(server: Server): void {
      server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
        onUpgrade(request, socket, head).catch((error: unknown) => {
          logger.error({ err: error }, 'agent connection upgrade failed');
          socket.destroy();
        });
      });
    },
    /** The commands module: told when an agent is welcomed, and given the agent's command messages. */
    attachCommands(handlers: CommandHandlers): void {
      commandHandlers = handlers;
    },
    /** Sends to the agent if it is connected to this instance; false otherwise. */
    send(agentId: string, message: ServerMessage): boolean {
      const connection = connections.get(agentId);
      if (!connection || connection.socket.readyState !== connection.socket.OPEN) return false;
      send(connection.socket, message);
      return true;
    },
    /** Whether the agent is connected to any instance (to this one only, without a shared cluster bus). */
    isOnline: (agentId: string) => connections.has(agentId) || remoteHolder(agentId) !== undefined,
    /** Whether the agent is connected to this instance: only this instance can send to it. */
    holds: (agentId: string) => connections.has(agentId),
    lastHeartbeat: (agentId: string) => connections.get(agentId)?.lastHeartbeat ?? remoteHolder(agentId)?.at,
    /** The agents connected to this instance. */
    held: (): Map<string, AgentRow> =>
      new Map([...connections.entries()].map(([id, connection]) => [id, connection.agent])),
    /**
     * Tells the instance holding the agent, if another does, that commands wait for it: that instance
     * delivers them from the database as it does when the agent connects. Without a shared bus, a no-op.
     */
    wakeElsewhere(agentId: string): void {
      if (!connections.has(agentId)) cluster?.publish('work', { agentId } satisfies WorkMessage);
    },
    /**
     * Asks the instance holding the agent to send it a cancel: false when no instance is known to
     * hold it. The holder sends it only once the cancel is in the audit log (recorded by the caller).
     */
    cancelElsewhere(agentId: string, orgId: string, commandId: string): boolean {
      if (!cluster || remoteHolder(agentId) === undefined) return false;
      cluster.publish('cancel', { agentId, orgId, commandId } satisfies CancelMessage);
      return true;
    },
    /** The agent's live connection to this instance. */
    connectionOf(agentId: string): HeldConnection | undefined {
      const connection = connections.get(agentId);
      return connection ? shownConnection(connection) : undefined;
    },
    /** The agent's live connection, as its page shows it, on whichever instance holds it (HA-1). */
    connectionAnywhere(agentId: string): HeldConnection | undefined {
      const connection = connections.get(agentId);
      return connection ? shownConnection(connection) : remoteHolder(agentId)?.connection;
    },
    onlineCount: () => connections.size,
    /** Ends an agent's live connection, e.g. when it is disabled or revoked, on whichever instance holds it. */
    disconnect(agentId: string, code: string): void {
      const connection = connections.get(agentId);
      if (connection) refuse(connection.socket, code, `This agent is ${code.replace('agent_', '')}.`);
      else cluster?.publish('disconnect', { agentId } satisfies DisconnectMessage);
    },
    async close(): Promise<void> {
      clearInterval(sweeper);
      clearInterval(flusher);
      for (const unsubscribe of clusterUnsubscribers.splice(0)) unsubscribe();
      for (const connection of connections.values()) connection.socket.close(1001, 'server shutting down');
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      while (handling.size > 0) await Promise.all([...handling]);
      await Promise.all(pendingAudits);
      await misbehaviour.flush(true);
      await flushLastSeen();
    },
  };
}

export type AgentGateway = ReturnType<typeof createAgentGateway>;
