import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import {
  AGENT_CONNECT_PATH,
  AGENT_REGISTER_PATH,
  agentProofStatement,
  RegisterResponse,
  rawPublicKey,
  ServerMessage,
  signStatement,
} from '@bulwark/protocol';
import { WebSocket } from 'ws';

/** An agent's two key pairs, as `bulwark-agent register` makes them. */
export interface AgentKeys {
  signing: { publicKey: KeyObject; privateKey: KeyObject };
  encryption: { publicKey: KeyObject; privateKey: KeyObject };
}

export function agentKeys(): AgentKeys {
  return { signing: generateKeyPairSync('ed25519'), encryption: generateKeyPairSync('x25519') };
}

/** Registers over the real HTTP API, the way the agent does; throws with the answer when refused. */
export async function registerAgent(
  base: string,
  token: string,
  name: string,
  keys: AgentKeys = agentKeys(),
) {
  const response = await fetch(`${base}${AGENT_REGISTER_PATH}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      token,
      name,
      signingKey: rawPublicKey(keys.signing.publicKey),
      encryptionKey: rawPublicKey(keys.encryption.publicKey),
    }),
  });
  const body: unknown = await response.json();
  if (response.status !== 201)
    throw new Error(`registration answered ${response.status}: ${JSON.stringify(body)}`);
  return { ...RegisterResponse.parse(body), keys };
}

/** A WebSocket to the gateway whose server messages can be awaited one by one. */
export async function openAgentSocket(base: string): Promise<{
  socket: WebSocket;
  next(): Promise<ServerMessage>;
  closed: Promise<number>;
}> {
  const socket = new WebSocket(`${base.replace('http', 'ws')}${AGENT_CONNECT_PATH}`);
  const inbox: ServerMessage[] = [];
  const waiting: Array<(message: ServerMessage) => void> = [];
  socket.on('message', (data) => {
    const message = ServerMessage.parse(JSON.parse(data.toString()));
    const waiter = waiting.shift();
    if (waiter) waiter(message);
    else inbox.push(message);
  });
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  // Once open, a failure shows as the close code (1009 for an oversized message), which tests await.
  socket.on('error', () => {});
  return {
    socket,
    next: () => {
      const queued = inbox.shift();
      return queued ? Promise.resolve(queued) : new Promise((resolve) => waiting.push(resolve));
    },
    closed,
  };
}

/** The honest handshake, or one signed with `signWith` instead of the agent's own key. */
export async function handshake(
  base: string,
  agentId: string,
  keys: AgentKeys,
  signWith = keys.signing.privateKey,
) {
  const connection = await openAgentSocket(base);
  const agentNonce = randomBytes(32).toString('base64url');
  connection.socket.send(JSON.stringify({ v: 1, type: 'hello', agentId, agentNonce, agentVersion: 'test' }));
  const challenge = await connection.next();
  if (challenge.type !== 'challenge') throw new Error(`expected a challenge, got ${challenge.type}`);
  const nonces = { agentId, agentNonce, serverNonce: challenge.serverNonce };
  const proof = { v: 1, type: 'proof', signature: signStatement(signWith, agentProofStatement(nonces)) };
  connection.socket.send(JSON.stringify(proof));
  return { ...connection, nonces, challenge, proof, answer: await connection.next() };
}

/** Reports one service `app` with `actions`, as an agent does after its welcome; returns the server's answer. */
export async function reportApp(connection: Awaited<ReturnType<typeof handshake>>, actions: unknown[]) {
  connection.socket.send(
    JSON.stringify({
      v: 1,
      type: 'report',
      services: [{ name: 'app', kind: 'node', health: { status: 'up' }, actions }],
    }),
  );
  return connection.next();
}
