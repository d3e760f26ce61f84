import { type KeyObject, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import {
  AGENT_CONNECT_PATH,
  AGENT_PROTOCOL_VERSION,
  type AgentMessage,
  agentProofStatement,
  ed25519PublicKey,
  MAX_AGENT_MESSAGE_BYTES,
  ServerMessage,
  type ServiceReport,
  serverProofStatement,
  signStatement,
  verifyStatement,
} from '@bulwark/protocol';
import WebSocket, { type RawData } from 'ws';
import { type Backoff, createBackoff } from './backoff.js';
import { createCommandRunner } from './commands.js';
import type { ActionCatalog } from './config.js';
import type { CommandJournal } from './journal.js';
import type { Logger } from './log.js';
import { fingerprintMatches, printable, type TlsPin, tlsClientOptions, websocketUrl } from './net.js';
import type { AgentState } from './state.js';
import { AGENT_VERSION } from './version.js';

/**
 * The agent's connection to the server (AGT-3, AGT-6): outbound only, one WebSocket, and a
 * handshake in which the SERVER proves itself first. The agent answers a challenge only after
 * checking the server's signature against the key pinned at registration, so an impostor (a hijacked
 * DNS name, a mis-issued certificate, a TLS-terminating proxy) learns nothing it could use: not the
 * agent's proof, not its service report.
 */

/** How a single connection ended. */
export type SessionEnd =
  | { kind: 'closed'; welcomed: boolean; reason: string }
  | { kind: 'refused'; welcomed: boolean; code: string; message: string }
  | { kind: 'stopped'; welcomed: boolean };

export interface Welcome {
  heartbeatSeconds: number;
  agent: { id: string; name: string; labels: Record<string, string> };
}

interface SessionOptions {
  state: AgentState;
  /** Overrides the pin recorded in the state file. */
  tls?: TlsPin;
  logger: Logger;
  signal: AbortSignal;
  agentVersion: string;
  handshakeTimeoutMs: number;
  /** Called once the server has welcomed the agent; `send` writes to this connection (false: it is closed). */
  onWelcome(welcome: Welcome, session: { send(message: AgentMessage): boolean; end(): void }): void;
  onReportResult?(result: { accepted: string[]; refused: { service: string; problems: string[] }[] }): void;
  /** Command traffic, only once welcomed. */
  onCommandMessage?(message: CommandTraffic): void;
}

type CommandTraffic = Extract<ServerMessage, { type: 'command' | 'cancel' | 'command_ack' }>;

/** Close codes the agent uses (RFC 6455 §7.4.1). */
const CLOSE_NORMAL = 1000;
const CLOSE_GOING_AWAY = 1001;
const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_POLICY = 1008;

/** A server that stays silent this many heartbeat intervals (no message, no pong) is gone. */
const MISSED_INTERVALS_BEFORE_DEAD = 3;

function tlsPinOf(options: { state: AgentState; tls?: TlsPin }): TlsPin | undefined {
  return options.tls && (options.tls.caFile || options.tls.fingerprint256) ? options.tls : options.state.tls;
}

/** One connection, from dial to close. Never rejects: every ending is a SessionEnd. */
function runSession(options: SessionOptions): Promise<SessionEnd> {
  const { state, logger, signal } = options;
  const pinnedServerKey: KeyObject = ed25519PublicKey(state.serverSigningKey);
  const pin = tlsPinOf(options);
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve({ kind: 'stopped', welcomed: false });
      return;
    }
    let phase: 'connecting' | 'hello' | 'proof' | 'online' = 'connecting';
    let welcomed = false;
    let ending: SessionEnd | undefined;
    let agentNonce = '';
    let heartbeat: NodeJS.Timeout | undefined;
    let lastHeard = Date.now();

    const ws = new WebSocket(websocketUrl(state.server, AGENT_CONNECT_PATH), {
      maxPayload: MAX_AGENT_MESSAGE_BYTES,
      handshakeTimeout: options.handshakeTimeoutMs,
      // Compression of attacker-influenced data next to secrets is how CRIME/BREACH work; messages are small.
      perMessageDeflate: false,
      followRedirects: false,
      ...tlsClientOptions(pin),
    });

    const handshakeTimer = setTimeout(
      () =>
        end({ kind: 'closed', welcomed, reason: 'handshake timed out' }, CLOSE_POLICY, 'handshake timeout'),
      options.handshakeTimeoutMs,
    );

    const end = (result: SessionEnd, code = CLOSE_NORMAL, reason = '') => {
      ending ??= result;
      clearTimeout(handshakeTimer);
      clearInterval(heartbeat);
      if (ws.readyState === WebSocket.OPEN) {
        ws.close(code, reason);
        // A server that does not answer the close frame is not waited for long.
        setTimeout(() => ws.terminate(), 5000).unref();
      } else if (ws.readyState === WebSocket.CONNECTING) {
        ws.terminate();
      }
    };
    const violation = (what: string) => {
      logger.warn('protocol violation by the server; closing', { reason: what });
      end({ kind: 'closed', welcomed, reason: what }, CLOSE_PROTOCOL_ERROR, 'protocol violation');
    };
    const send = (message: AgentMessage): boolean => {
      if (ws.readyState !== WebSocket.OPEN || ending) return false;
      ws.send(JSON.stringify(message));
      return true;
    };
    const onAbort = () => end({ kind: 'stopped', welcomed }, CLOSE_GOING_AWAY, 'agent stopping');
    signal.addEventListener('abort', onAbort, { once: true });

    ws.on('upgrade', (response: IncomingMessage) => {
      // With a pinned fingerprint, nothing but the HTTP upgrade request (no credential) has left yet.
      if (pin?.fingerprint256) {
        const cert = (response.socket as TLSSocket).getPeerCertificate?.();
        if (!fingerprintMatches(cert, pin.fingerprint256)) {
          logger.error('server certificate does not match the pinned fingerprint; closing', {
            fingerprint256: cert?.fingerprint256 ?? null,
          });
          end({ kind: 'closed', welcomed, reason: 'certificate fingerprint mismatch' });
        }
      }
    });

    ws.on('open', () => {
      phase = 'hello';
      agentNonce = randomBytes(32).toString('base64url');
      send({
        v: AGENT_PROTOCOL_VERSION,
        type: 'hello',
        agentId: state.agentId,
        agentNonce,
        agentVersion: options.agentVersion,
      });
    });

    ws.on('pong', () => {
      lastHeard = Date.now();
    });

    ws.on('message', (data: RawData, isBinary: boolean) => {
      lastHeard = Date.now();
      if (ending) return;
      if (isBinary) return violation('binary message');
      let json: unknown;
      try {
        json = JSON.parse(data.toString());
      } catch {
        return violation('message is not JSON');
      }
      const parsed = ServerMessage.safeParse(json);
      if (!parsed.success) {
        return violation(
          `invalid message: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
        );
      }
      const message = parsed.data;
      switch (message.type) {
        case 'refused':
          end({ kind: 'refused', welcomed, code: message.code, message: message.message });
          return;
        case 'challenge': {
          if (phase !== 'hello') return violation(`unexpected challenge in phase ${phase}`);
          const nonces = { agentId: state.agentId, agentNonce, serverNonce: message.serverNonce };
          // AGT-6: the server proves it holds the pinned key BEFORE the agent proves anything.
          if (!verifyStatement(pinnedServerKey, serverProofStatement(nonces), message.serverSignature)) {
            logger.error('the server failed to prove the pinned signing key; not answering it', {
              server: state.server,
            });
            end(
              { kind: 'closed', welcomed, reason: 'server signature does not verify against the pinned key' },
              CLOSE_POLICY,
              'server not authenticated',
            );
            return;
          }
          phase = 'proof';
          send({
            v: AGENT_PROTOCOL_VERSION,
            type: 'proof',
            signature: signStatement(state.signingKey, agentProofStatement(nonces)),
          });
          return;
        }
        case 'welcome': {
          if (phase !== 'proof') return violation(`unexpected welcome in phase ${phase}`);
          if (message.agent.id !== state.agentId) return violation('welcome names another agent');
          phase = 'online';
          welcomed = true;
          clearTimeout(handshakeTimer);
          const intervalMs = message.heartbeatSeconds * 1000;
          lastHeard = Date.now();
          heartbeat = setInterval(() => {
            // Heartbeats are not answered by the protocol; a ping is, by any RFC 6455 server.
            if (Date.now() - lastHeard > MISSED_INTERVALS_BEFORE_DEAD * intervalMs) {
              logger.warn('server silent for too long; reconnecting');
              ending ??= { kind: 'closed', welcomed, reason: 'server unresponsive' };
              clearInterval(heartbeat);
              ws.terminate();
              return;
            }
            send({ v: AGENT_PROTOCOL_VERSION, type: 'heartbeat' });
            ws.ping();
          }, intervalMs);
          options.onWelcome(
            { heartbeatSeconds: message.heartbeatSeconds, agent: message.agent },
            { send, end: () => end({ kind: 'stopped', welcomed }) },
          );
          return;
        }
        case 'report_result':
          if (phase !== 'online') return violation(`unexpected report_result in phase ${phase}`);
          options.onReportResult?.(message);
          return;
        case 'command':
        case 'cancel':
        case 'command_ack':
          // Nothing before the server has proved the pinned key and welcomed the agent.
          if (phase !== 'online') return violation(`unexpected ${message.type} in phase ${phase}`);
          options.onCommandMessage?.(message);
          return;
      }
    });

    ws.on('error', (error: Error) => {
      ending ??= { kind: 'closed', welcomed, reason: printable(error.message, 200) };
    });

    ws.on('close', (code: number, reason: Buffer) => {
      clearTimeout(handshakeTimer);
      clearInterval(heartbeat);
      signal.removeEventListener('abort', onAbort);
      const why = reason.length > 0 ? ` ${printable(reason.toString(), 120)}` : '';
      resolve(ending ?? { kind: 'closed', welcomed, reason: `closed by the server (${code}${why})` });
    });
  });
}

export type RunOutcome = { kind: 'stopped' } | { kind: 'revoked'; message: string };

export interface AgentRunOptions {
  state: AgentState;
  /**
   * The services reported after each welcome; a function is asked before each connection (an
   * embedded agent's live health), and must not reject.
   */
  services: ServiceReport[] | (() => Promise<ServiceReport[]>);
  /** The exec actions this agent runs (agent.yaml); none by default. */
  actions?: ActionCatalog;
  /** Where exec actions may run (agent.yaml `allowedRoots`). */
  allowedRoots?: string[];
  /** The command journal (CMD-6), opened (and recovered) by the caller; without one no command runs. */
  journal?: CommandJournal;
  /** SIGTERM → SIGKILL grace when a command times out, is cancelled or the agent stops; 5 s. */
  killGraceMs?: number;
  /** Overrides the TLS pin recorded in the state file. */
  tls?: TlsPin;
  logger: Logger;
  agentVersion?: string;
  backoff?: Backoff;
  handshakeTimeoutMs?: number;
  /** Told when the agent comes online and goes offline (e.g. for a readiness probe). */
  onStatus?(status: 'online' | 'offline'): void;
}

export interface AgentRunner {
  /** Settles when the agent stops for good: stopped by `stop()`, or revoked by the server. */
  readonly done: Promise<RunOutcome>;
  /** Closes the connection (if any), stops reconnecting, and resolves with the outcome. */
  stop(): Promise<RunOutcome>;
}

/** A refusal that retrying cannot fix: the agent's identity is gone for good (AGT-4). */
const TERMINAL_REFUSALS = new Set(['agent_revoked']);

/**
 * The run loop: connect, prove, report, heartbeat; on any ending back off (full jitter) and reconnect,
 * forever, until stopped or revoked. Throws at once if the state's server URL is not allowed.
 */
export function startAgent(options: AgentRunOptions): AgentRunner {
  // Validates the URL (ws:// only to loopback) before any attempt, so a bad state file fails fast.
  websocketUrl(options.state.server, AGENT_CONNECT_PATH);
  // And reads the CA file once now, so a missing one is a start-up error rather than a retry loop.
  tlsClientOptions(tlsPinOf(options));
  const logger = options.logger.child({ agentId: options.state.agentId });
  const backoff = options.backoff ?? createBackoff();
  const controller = new AbortController();
  const signal = controller.signal;
  const fixed = Array.isArray(options.services) ? options.services.map(redactSecrets) : undefined;
  const current = async () =>
    fixed ?? (await (options.services as () => Promise<ServiceReport[]>)()).map(redactSecrets);
  const commands = createCommandRunner({
    state: options.state,
    ...(options.journal ? { journal: options.journal } : {}),
    actions: options.actions ?? new Map(),
    allowedRoots: options.allowedRoots ?? [],
    logger,
    ...(options.killGraceMs !== undefined ? { killGraceMs: options.killGraceMs } : {}),
  });

  const loop = async (): Promise<RunOutcome> => {
    while (!signal.aborted) {
      // Asked before dialing, so the report goes out at once after `welcome`, before command_states.
      const services = await current();
      logger.info('connecting', { server: options.state.server });
      const ended = await runSession({
        state: options.state,
        ...(options.tls ? { tls: options.tls } : {}),
        logger,
        signal,
        agentVersion: options.agentVersion ?? AGENT_VERSION,
        handshakeTimeoutMs: options.handshakeTimeoutMs ?? 30_000,
        onWelcome(welcome, session) {
          backoff.reset();
          logger.info('online', { heartbeatSeconds: welcome.heartbeatSeconds, name: welcome.agent.name });
          options.onStatus?.('online');
          session.send({ v: AGENT_PROTOCOL_VERSION, type: 'report', services });
          commands.online(session.send);
        },
        onCommandMessage(message) {
          if (message.type === 'command') void commands.command(message);
          else if (message.type === 'cancel') commands.cancel(message.commandId);
          else
            commands.acknowledge(message.commandIds).catch((error: unknown) => {
              logger.error('could not journal an acknowledgement', { error });
            });
        },
        onReportResult(result) {
          const fields = { accepted: result.accepted, refused: result.refused };
          if (result.refused.length > 0) logger.warn('the server refused part of the report', fields);
          else logger.info('report accepted', fields);
        },
      });
      commands.offline();
      if (ended.welcomed) options.onStatus?.('offline');
      if (ended.kind === 'stopped') break;
      if (ended.kind === 'refused') {
        if (TERMINAL_REFUSALS.has(ended.code)) {
          logger.error('the server revoked this agent; stopping for good', {
            code: ended.code,
            reason: ended.message,
          });
          await commands.shutdown();
          return { kind: 'revoked', message: printable(ended.message) };
        }
        logger.warn('the server refused the connection', {
          code: ended.code,
          reason: printable(ended.message),
        });
      }
      const wait = backoff.next();
      logger.warn('disconnected; will reconnect', {
        reason: ended.kind === 'refused' ? ended.code : ended.reason,
        retryInMs: wait,
        attempt: backoff.attempt,
      });
      try {
        await delay(wait, undefined, { signal });
      } catch {
        // Aborted by stop(): the loop condition ends it.
      }
    }
    // Running commands are stopped (and journaled interrupted), not left to run unsupervised.
    await commands.shutdown();
    logger.info('stopped');
    return { kind: 'stopped' };
  };

  const done = loop();
  return {
    done,
    stop() {
      controller.abort();
      return done;
    },
  };
}

/**
 * AGT-5: secret config values never leave the host. The server would discard them anyway; not
 * sending them means a compromised server or a logging proxy never sees them either. A placeholder
 * keeps "configured" distinguishable from "not configured" (value absent).
 */
export const REDACTED_VALUE = '[redacted]';

export function redactSecrets(service: ServiceReport): ServiceReport {
  return {
    ...service,
    config: service.config.map((item) =>
      item.secret && item.value !== undefined ? { ...item, value: REDACTED_VALUE } : item,
    ),
  };
}

export type HandshakeCheck = { ok: true; welcome: Welcome } | { ok: false; reason: string };

/** `status`: connect, run the full handshake, and close at once (no report, no heartbeat). */
export async function checkHandshake(options: {
  state: AgentState;
  tls?: TlsPin;
  logger: Logger;
  timeoutMs?: number;
}): Promise<HandshakeCheck> {
  const controller = new AbortController();
  let welcome: Welcome | undefined;
  const ended = await runSession({
    state: options.state,
    ...(options.tls ? { tls: options.tls } : {}),
    logger: options.logger,
    signal: controller.signal,
    agentVersion: AGENT_VERSION,
    handshakeTimeoutMs: options.timeoutMs ?? 10_000,
    onWelcome(w, session) {
      welcome = w;
      session.end();
    },
  });
  if (welcome) return { ok: true, welcome };
  if (ended.kind === 'refused')
    return { ok: false, reason: `refused: ${ended.code}: ${printable(ended.message)}` };
  if (ended.kind === 'closed') return { ok: false, reason: ended.reason };
  return { ok: false, reason: 'stopped' };
}
