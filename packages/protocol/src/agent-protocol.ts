import { createPublicKey, type JsonWebKeyInput, type KeyObject, sign, verify } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { ID_BODY_PATTERN } from './ids.js';
import { SealedSecrets } from './sealed-secrets.js';

/**
 * The agent protocol, version 1 (AGT-2, AGT-3, AGT-5), shared by the server and the agent.
 *
 * Registration is one HTTPS request carrying the registration token and the agent's two public keys;
 * the answer carries the agent id and the server's public signing key, which the agent pins (AGT-6).
 *
 * Every connection then proves both ends before anything else travels:
 *   agent → `hello`      {agentId, agentNonce}
 *   server → `challenge` {serverNonce, serverSignature over (agentId, agentNonce, serverNonce)}
 *   agent → `proof`      {signature over (agentId, agentNonce, serverNonce)}
 *   server → `welcome`   {heartbeatSeconds, agent}
 * Both nonces are fresh 256-bit values, so neither signature can be replayed on another connection,
 * and the two signed statements carry different purposes, so one side's signature can never be
 * reflected as the other's. Nothing secret travels and nothing usable by an attacker is stored.
 */

export const AGENT_PROTOCOL_VERSION = 1;
export const AGENT_CONNECT_PATH = '/agent/v1/connect';
export const AGENT_REGISTER_PATH = '/api/agent/v1/register';
/** The largest message either end accepts; a report of many services fits many times over. */
export const MAX_AGENT_MESSAGE_BYTES = 1024 * 1024;

/**
 * A raw 32-byte key or nonce, base64url without padding, in its one canonical spelling: 43 characters
 * carry 2 spare bits, so four spellings would decode to the same key, and a key's uniqueness is
 * checked on its text.
 */
const Base64Url32 = z
  .string()
  .regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes, base64url')
  .refine(
    (text) => Buffer.from(text, 'base64url').toString('base64url') === text,
    'must be canonical base64url',
  );
/** A raw 64-byte Ed25519 signature, base64url without padding. */
const Signature = z.string().regex(/^[A-Za-z0-9_-]{86}$/, 'must be 64 bytes, base64url');
export const AgentIdShape = z.string().regex(new RegExp(`^agt_${ID_BODY_PATTERN}$`), 'must be an agent id');
/** Agent and service names: what an operator reads in the console and types in a selector. */
export const AgentName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'lower-case letters, digits, dots, dashes and underscores');
/** Label keys and values, as agents carry them and selectors match them (ACC-3). */
export const LABEL_KEY_PATTERN = /^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$/i;
export const LABEL_VALUE_PATTERN = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/i;
export const LabelKey = z.string().regex(LABEL_KEY_PATTERN, 'must be a label key');
export const LabelValue = z.string().regex(LABEL_VALUE_PATTERN, 'must be a label value');
export const Labels = z.record(LabelKey, LabelValue).refine((labels) => Object.keys(labels).length <= 32, {
  message: 'at most 32 labels',
});

// --- Registration (HTTPS) ----------------------------------------------------------------------

export const RegisterRequest = z.strictObject({
  token: z.string().min(1).max(128),
  name: AgentName,
  hostname: z.string().min(1).max(253).optional(),
  /** Ed25519 public key: proves the agent's identity on every connection. */
  signingKey: Base64Url32,
  /** X25519 public key: secrets for the agent's commands are sealed to it. */
  encryptionKey: Base64Url32,
});
export type RegisterRequest = z.infer<typeof RegisterRequest>;

export const RegisterResponse = z.object({
  agentId: AgentIdShape,
  org: z.object({ id: z.string(), slug: z.string() }),
  name: z.string(),
  labels: Labels,
  /** The server's Ed25519 public key for the agent channel; the agent pins it. */
  serverSigningKey: Base64Url32,
});
export type RegisterResponse = z.infer<typeof RegisterResponse>;

// --- Service reports (AGT-5) ---------------------------------------------------------------------

export const HEALTH_STATUSES = ['up', 'degraded', 'down', 'unknown'] as const;
export const RISKS = ['low', 'medium', 'high', 'critical'] as const;

export const ConfigItem = z.strictObject({
  key: z.string().min(1).max(128),
  /** Absent: not configured. A value marked secret, or that looks like one, is never stored. */
  value: z.string().max(2048).optional(),
  secret: z.boolean().optional(),
});

/** An action's execution timeout when it declares none (CMD-5). */
export const DEFAULT_EXECUTION_TIMEOUT_SECONDS = 300;

export const ActionDeclaration = z.strictObject({
  name: AgentName,
  description: z.string().max(500),
  /** JSON Schema (draft 2020-12) of the action's parameters; checked for validity when reported. */
  params: z.record(z.string(), z.unknown()),
  risk: z.enum(RISKS),
  /** The execution timeout (CMD-5): 5 minutes when the action does not declare one, at most 24 hours. */
  timeoutSeconds: z.number().int().min(1).max(86_400).default(DEFAULT_EXECUTION_TIMEOUT_SECONDS),
  /** Names of the secrets the action may receive. */
  secrets: z.array(z.string().min(1).max(128)).max(32).default([]),
  /**
   * A short-lived workload-identity JWT for this audience (SEC-4), handed to the action's process
   * in {@link WORKLOAD_IDENTITY_TOKEN_ENV}. The server mints it only for an audience its
   * configuration allows for the agent's organization: an agent cannot pick any audience it likes.
   */
  workloadIdentity: z
    .strictObject({
      audience: z
        .string()
        .min(1)
        .max(256)
        .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'),
    })
    .optional(),
});
export type ActionDeclaration = z.infer<typeof ActionDeclaration>;

/** Where an action's process finds its workload-identity JWT (and the name it is masked under in output). */
export const WORKLOAD_IDENTITY_TOKEN_ENV = 'BULWARK_WORKLOAD_IDENTITY_TOKEN';

export const ServiceReport = z.strictObject({
  name: AgentName,
  kind: z.string().min(1).max(64),
  version: z.string().max(64).default(''),
  health: z.strictObject({
    status: z.enum(HEALTH_STATUSES),
    message: z.string().max(500).default(''),
  }),
  config: z.array(ConfigItem).max(200).default([]),
  actions: z.array(ActionDeclaration).max(100).default([]),
});
export type ServiceReport = z.infer<typeof ServiceReport>;

// --- Messages on the connection ------------------------------------------------------------------

const message = <T extends string, S extends z.ZodRawShape>(type: T, shape: S) =>
  z.strictObject({ v: z.literal(AGENT_PROTOCOL_VERSION), type: z.literal(type), ...shape });

export const HelloMessage = message('hello', {
  agentId: AgentIdShape,
  agentNonce: Base64Url32,
  agentVersion: z.string().max(64),
});
export const ProofMessage = message('proof', { signature: Signature });
export const HeartbeatMessage = message('heartbeat', {});
export const ReportMessage = message('report', {
  services: z.array(ServiceReport).max(200),
});

// --- Commands (CMD-4 to CMD-7) ----------------------------------------------------------------------

export const CommandIdShape = z
  .string()
  .regex(new RegExp(`^cmd_${ID_BODY_PATTERN}$`), 'must be a command id');
export const COMMAND_OUTCOMES = ['succeeded', 'failed', 'timed_out', 'cancelled'] as const;
export type CommandOutcome = (typeof COMMAND_OUTCOMES)[number];
/** The longest a signed command may stay deliverable (the server gives 10 minutes after approval). */
export const MAX_DELIVERY_WINDOW_MS = 24 * 3600_000;
/** Output chunks are at most this large; the agent splits longer output. */
export const MAX_OUTPUT_CHUNK_CHARS = 16 * 1024;

/**
 * What the server signs for each command (CMD-7). The agent runs a command only when the signature
 * verifies against the key it pinned, the command names this agent, it has not expired, and its id
 * is not in the agent's journal (CMD-6).
 */
/**
 * The fewest approvals by people other than the requester a command of each risk needs (CMD-3): the
 * server's policy may ask more, never less. The agent holds the server to it for the risk its own
 * configuration declares, so a risk lowered in the server's database still needs its approvals.
 */
export const MIN_APPROVALS: Record<(typeof RISKS)[number], number> = {
  low: 0,
  medium: 0,
  high: 1,
  critical: 2,
};

export const CommandEnvelope = z
  .strictObject({
    v: z.literal(AGENT_PROTOCOL_VERSION),
    commandId: CommandIdShape,
    agentId: AgentIdShape,
    orgId: z.string().min(1).max(64),
    service: AgentName,
    action: AgentName,
    params: z.record(z.string(), z.unknown()),
    requestedBy: z.string().min(1).max(64),
    approvedBy: z.array(z.string().min(1).max(64)).max(16),
    issuedAt: z.number().int().nonnegative(),
    /** The agent refuses to start the command after this instant (delivery timeout). */
    expiresAt: z.number().int().nonnegative(),
    timeoutSeconds: z.number().int().min(1).max(86_400),
    nonce: Base64Url32,
    /** The secrets the action declared, sealed to this agent for this command; absent when none. */
    secrets: SealedSecrets.optional(),
    /**
     * The workload-identity JWT for an action that declares one (SEC-4), sealed to this agent for
     * this command like the secrets: `{ [WORKLOAD_IDENTITY_TOKEN_ENV]: jwt }`.
     */
    workloadIdentity: SealedSecrets.optional(),
  })
  .refine((envelope) => envelope.expiresAt - envelope.issuedAt <= MAX_DELIVERY_WINDOW_MS, {
    // The agent keeps every id it has seen until its expiry has long passed: the window is bounded.
    message: 'a command cannot stay deliverable for more than a day',
  });
export type CommandEnvelope = z.infer<typeof CommandEnvelope>;

/** The statement the server signs and the agent verifies for a command. */
export const commandStatement = (envelope: CommandEnvelope) =>
  canonicalJson({ purpose: 'bulwark/command/v1', ...envelope });

/** The agent started the command (it is journaled first: it will never start it again). */
export const CommandStartedMessage = message('command_started', { commandId: CommandIdShape });
/** A piece of the command's output, in order per command; secret values already masked on the host. */
export const CommandOutputMessage = message('command_output', {
  commandId: CommandIdShape,
  seq: z.number().int().nonnegative(),
  stream: z.enum(['stdout', 'stderr']),
  data: z.string().max(MAX_OUTPUT_CHUNK_CHARS),
});
export const CommandFinishedMessage = message('command_finished', {
  commandId: CommandIdShape,
  outcome: z.enum(COMMAND_OUTCOMES),
  exitCode: z.number().int().nullable(),
  message: z.string().max(500),
});
/** The agent would not run it: bad signature, another agent's, expired, replayed, unknown action, invalid params. */
export const CommandRefusedMessage = message('command_refused', {
  commandId: CommandIdShape,
  reason: z.enum([
    'bad_signature',
    'wrong_agent',
    'expired',
    'replayed',
    'unknown_action',
    'invalid_params',
    'bad_secrets',
    'insufficient_approvals',
  ]),
  message: z.string().max(500),
});
/**
 * Sent after `welcome`: what the journal says of commands whose final state the server has not yet
 * acknowledged, so a restart on either side is reconciled from the facts (CMD-6). `interrupted`: the
 * agent stopped while the command ran; the command did not finish.
 */
export const CommandStatesMessage = message('command_states', {
  commands: z
    .array(
      z.strictObject({
        commandId: CommandIdShape,
        state: z.enum([...COMMAND_OUTCOMES, 'running', 'interrupted']),
        exitCode: z.number().int().nullable(),
      }),
    )
    .max(1000),
});

/** Everything an agent may send; anything else closes the connection. */
export const AgentMessage = z.discriminatedUnion('type', [
  HelloMessage,
  ProofMessage,
  HeartbeatMessage,
  ReportMessage,
  CommandStartedMessage,
  CommandOutputMessage,
  CommandFinishedMessage,
  CommandRefusedMessage,
  CommandStatesMessage,
]);
export type AgentMessage = z.infer<typeof AgentMessage>;

export const ChallengeMessage = message('challenge', {
  serverNonce: Base64Url32,
  serverSignature: Signature,
});
export const WelcomeMessage = message('welcome', {
  heartbeatSeconds: z.number().int().min(1).max(300),
  agent: z.object({ id: AgentIdShape, name: z.string(), labels: Labels }),
});
export const ReportResultMessage = message('report_result', {
  accepted: z.array(z.string()),
  refused: z.array(z.object({ service: z.string(), problems: z.array(z.string()) })),
});
export const RefusedMessage = message('refused', { code: z.string(), message: z.string() });

export const CommandMessage = message('command', {
  envelope: CommandEnvelope,
  /** Ed25519 over commandStatement(envelope), by the server's agent-channel key. */
  signature: Signature,
});
export const CancelMessage = message('cancel', { commandId: CommandIdShape });
/** The server has recorded these final states; the agent may forget them. */
export const CommandAckMessage = message('command_ack', { commandIds: z.array(CommandIdShape).max(1000) });

/** Everything the server may send. */
export const ServerMessage = z.discriminatedUnion('type', [
  ChallengeMessage,
  WelcomeMessage,
  ReportResultMessage,
  RefusedMessage,
  CommandMessage,
  CancelMessage,
  CommandAckMessage,
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

// --- The handshake's signed statements -------------------------------------------------------------

export interface HandshakeNonces {
  agentId: string;
  agentNonce: string;
  serverNonce: string;
}

/** What the server signs to prove it holds the key the agent pinned. */
export const serverProofStatement = (n: HandshakeNonces) =>
  canonicalJson({ purpose: 'bulwark/agent-handshake/server/v1', ...n });

/** What the agent signs to prove it holds its registered key. */
export const agentProofStatement = (n: HandshakeNonces) =>
  canonicalJson({ purpose: 'bulwark/agent-handshake/agent/v1', ...n });

/** An Ed25519 public key from its raw base64url form (as registration carries it). */
export function ed25519PublicKey(raw: string): KeyObject {
  return createPublicKey(ed25519VerificationKey(raw));
}

/**
 * An Ed25519 public key from its raw base64url form, for one verification: unlike a KeyObject, whose
 * native key lives until a garbage collection, it holds no memory once the check is done. The
 * gateway checks a proof with a different key on every agent connection.
 */
export function ed25519VerificationKey(raw: string): JsonWebKeyInput {
  return { key: { kty: 'OKP', crv: 'Ed25519', x: raw }, format: 'jwk' };
}

/** The raw base64url form of an Ed25519 or X25519 public key. */
export function rawPublicKey(key: KeyObject): string {
  const { x } = key.export({ format: 'jwk' });
  if (typeof x !== 'string') throw new Error('not an OKP public key');
  return x;
}

export function signStatement(privateKey: KeyObject, statement: string): string {
  return sign(null, Buffer.from(statement, 'utf8'), privateKey).toString('base64url');
}

export function verifyStatement(
  publicKey: KeyObject | JsonWebKeyInput,
  statement: string,
  signature: string,
): boolean {
  try {
    return verify(null, Buffer.from(statement, 'utf8'), publicKey, Buffer.from(signature, 'base64url'));
  } catch {
    return false;
  }
}
