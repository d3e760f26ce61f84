import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import {
  AGENT_CONNECT_PATH,
  AGENT_PROTOCOL_VERSION,
  AGENT_REGISTER_PATH,
  AgentMessage,
  agentProofStatement,
  type CommandEnvelope,
  commandStatement,
  ed25519PublicKey,
  newId,
  RegisterRequest,
  rawPublicKey,
  serverProofStatement,
  signStatement,
  verifyStatement,
} from '@bulwark/protocol';
import { type WebSocket, WebSocketServer } from 'ws';

/**
 * A stand-in for the server side of the agent protocol, on a real HTTP server and a real `ws`
 * WebSocketServer listening on 127.0.0.1:0. It plays the protocol honestly, or as an impostor
 * (`signWith` another key), or refuses (`refuse`), and records everything the agent sends.
 */

export interface FakeServerOptions {
  /** The key the server signs challenges with; the agent pins `serverSigningKey`. */
  signWith?: KeyObject;
  /** After `hello`, refuse with this code instead of challenging. */
  refuse?: { code: string; message: string };
  heartbeatSeconds?: number;
  /** Replaces the honest challenge with whatever this returns (an impostor's or a broken message). */
  rawChallenge?: (hello: { agentId: string; agentNonce: string }) => string;
  /** Serve HTTPS with this key and certificate (PEM) instead of plain HTTP. */
  tls?: { key: string; cert: string };
  /** Answer to POST AGENT_REGISTER_PATH: a status and body, or the default success. */
  registerAnswer?: (request: RegisterRequest) => { status: number; body: unknown };
}

export interface ReceivedMessage {
  connection: number;
  message: AgentMessage;
}

export interface FakeServer {
  url: string;
  /** The raw public key agents pin (the honest key, even when signing with another). */
  serverSigningKey: string;
  /** Every agent message, in order; `events` emits 'message' for each and 'connection' (number, socket). */
  received: ReceivedMessage[];
  registrations: RegisterRequest[];
  events: EventEmitter;
  /** Agent public keys the server accepts proofs from, by agent id. */
  agents: Map<string, string>;
  /** Resolves with the next message of this type (one already received counts if `since` is before it). */
  next(type: AgentMessage['type'], since?: number): Promise<ReceivedMessage>;
  /** Resolves with the first message (from `since`) that `match` accepts. */
  waitFor(match: (message: AgentMessage) => boolean, since?: number): Promise<ReceivedMessage>;
  /** A `command` message for this envelope (defaults filled in), signed by the pinned key or `signWith`. */
  command(
    envelope: Partial<CommandEnvelope>,
    signWith?: KeyObject,
  ): { v: 1; type: 'command'; envelope: CommandEnvelope; signature: string };
  /** Sends a message to the newest open connection. */
  send(message: object): void;
  close(): Promise<void>;
}

export const TEST_AGENT_ID = 'agt_01JB0000000000000000000000';

export async function startFakeServer(options: FakeServerOptions = {}): Promise<FakeServer> {
  const honest = generateKeyPairSync('ed25519');
  const signWith = options.signWith ?? honest.privateKey;
  const received: ReceivedMessage[] = [];
  const registrations: RegisterRequest[] = [];
  const events = new EventEmitter();
  const agents = new Map<string, string>();
  const sockets = new Set<WebSocket>();
  let newest: WebSocket | undefined;
  let connections = 0;

  const handler: RequestListener = (req, res) => {
    if (req.method !== 'POST' || req.url !== AGENT_REGISTER_PATH) {
      res.writeHead(404).end();
      return;
    }
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      const request = RegisterRequest.parse(JSON.parse(body));
      registrations.push(request);
      const answer = options.registerAnswer?.(request) ?? {
        status: 201,
        body: {
          agentId: TEST_AGENT_ID,
          org: { id: 'org_01JB0000000000000000000000', slug: 'acme' },
          name: request.name,
          labels: {},
          serverSigningKey: rawPublicKey(honest.publicKey),
        },
      };
      if (answer.status < 300) agents.set((answer.body as { agentId: string }).agentId, request.signingKey);
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body));
    });
  };
  const http: Server = options.tls ? createHttpsServer(options.tls, handler) : createServer(handler);

  const wss = new WebSocketServer({ noServer: true });
  http.on('upgrade', (req: IncomingMessage, socket, head) => {
    if (req.url !== AGENT_CONNECT_PATH) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws));
  });

  wss.on('connection', (ws: WebSocket) => {
    const connection = ++connections;
    sockets.add(ws);
    newest = ws;
    ws.on('close', () => sockets.delete(ws));
    events.emit('connection', connection, ws);
    let nonces: { agentId: string; agentNonce: string; serverNonce: string } | undefined;
    const send = (message: Record<string, unknown>) =>
      ws.send(JSON.stringify({ v: AGENT_PROTOCOL_VERSION, ...message }));
    ws.on('message', (data) => {
      const message = AgentMessage.parse(JSON.parse(data.toString()));
      const entry = { connection, message };
      received.push(entry);
      events.emit('message', entry);
      if (message.type === 'hello') {
        if (options.refuse) {
          send({ type: 'refused', ...options.refuse });
          ws.close(1008, options.refuse.code);
          return;
        }
        if (options.rawChallenge) {
          ws.send(options.rawChallenge(message));
          return;
        }
        nonces = {
          agentId: message.agentId,
          agentNonce: message.agentNonce,
          serverNonce: randomBytes(32).toString('base64url'),
        };
        send({
          type: 'challenge',
          serverNonce: nonces.serverNonce,
          serverSignature: signStatement(signWith, serverProofStatement(nonces)),
        });
      } else if (message.type === 'proof') {
        const key = nonces && agents.get(nonces.agentId);
        if (
          !nonces ||
          !key ||
          !verifyStatement(ed25519PublicKey(key), agentProofStatement(nonces), message.signature)
        ) {
          send({ type: 'refused', code: 'proof_invalid', message: 'bad proof' });
          ws.close(1008);
          return;
        }
        send({
          type: 'welcome',
          heartbeatSeconds: options.heartbeatSeconds ?? 30,
          agent: { id: nonces.agentId, name: 'test-agent', labels: {} },
        });
      } else if (message.type === 'report') {
        send({ type: 'report_result', accepted: message.services.map((s) => s.name), refused: [] });
      }
    });
  });

  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const { port } = http.address() as AddressInfo;

  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    serverSigningKey: rawPublicKey(honest.publicKey),
    received,
    registrations,
    events,
    agents,
    next(type, since = received.length) {
      const already = received.slice(since).find((entry) => entry.message.type === type);
      if (already) return Promise.resolve(already);
      return new Promise((resolve) => {
        const listener = (entry: ReceivedMessage) => {
          if (entry.message.type !== type) return;
          events.off('message', listener);
          resolve(entry);
        };
        events.on('message', listener);
      });
    },
    waitFor(match, since = received.length) {
      const already = received.slice(since).find((entry) => match(entry.message));
      if (already) return Promise.resolve(already);
      return new Promise((resolve) => {
        const listener = (entry: ReceivedMessage) => {
          if (!match(entry.message)) return;
          events.off('message', listener);
          resolve(entry);
        };
        events.on('message', listener);
      });
    },
    command(overrides, key = honest.privateKey) {
      const now = Date.now();
      const envelope: CommandEnvelope = {
        v: AGENT_PROTOCOL_VERSION,
        commandId: newId('cmd'),
        agentId: TEST_AGENT_ID,
        orgId: 'org_01JB0000000000000000000000',
        service: 'app',
        action: 'run',
        params: {},
        requestedBy: 'usr_alice',
        approvedBy: [],
        issuedAt: now,
        expiresAt: now + 10 * 60_000,
        timeoutSeconds: 60,
        nonce: randomBytes(32).toString('base64url'),
        ...overrides,
      };
      return { v: 1, type: 'command', envelope, signature: signStatement(key, commandStatement(envelope)) };
    },
    send(message) {
      newest?.send(JSON.stringify(message));
    },
    async close() {
      for (const ws of sockets) ws.terminate();
      wss.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
