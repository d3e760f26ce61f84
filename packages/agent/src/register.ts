import { generateKeyPairSync } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { hostname as osHostname } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import {
  AGENT_REGISTER_PATH,
  AgentName,
  ed25519PublicKey,
  isWellFormedToken,
  RegisterRequest,
  RegisterResponse,
} from '@bulwark/protocol';
import {
  Fingerprint256,
  fingerprintMatches,
  parseServerUrl,
  printable,
  serverBase,
  type TlsPin,
  tlsClientOptions,
} from './net.js';
import { type AgentState, publicKeyOf, writeStateFile } from './state.js';

/**
 * `bulwark-agent register` (AGT-1, AGT-2, AGT-6): make a fresh key pair, trade a one-time
 * registration token for an agent id, and pin the server's signing key in a new state file.
 * The token travels once, over TLS (or to loopback), and is never written anywhere.
 */

export class RegisterError extends Error {}

export interface RegisterOptions {
  /** The server's base URL: https://…, or http:// to loopback only. */
  server: string;
  /** A `bwr_…` registration token. */
  token: string;
  name: string;
  /** Where to write the new state file; refused if it exists. */
  stateFile: string;
  /** Reported to the server for operators; the machine's hostname by default. */
  hostname?: string;
  caFile?: string;
  fingerprint256?: string;
  /** Give up on a silent server after this long. */
  timeoutMs?: number;
}

/** Registration answers are small; a server (or impostor) streaming more is cut off. */
const MAX_RESPONSE_BYTES = 64 * 1024;

interface HttpAnswer {
  status: number;
  body: string;
}

export async function register(options: RegisterOptions): Promise<AgentState> {
  let url: URL;
  try {
    url = parseServerUrl(options.server);
  } catch (error) {
    throw new RegisterError((error as Error).message);
  }
  const name = AgentName.safeParse(options.name);
  if (!name.success) {
    throw new RegisterError(
      `invalid agent name "${printable(options.name, 64)}": ${name.error.issues[0]?.message}`,
    );
  }
  // Caught here, the mistake costs nothing; caught by the server, it costs a failed-attempt audit entry.
  if (!isWellFormedToken(options.token, 'bwr')) {
    throw new RegisterError('the token is not a registration token (bwr_…); copy it again from the console');
  }
  const tls: TlsPin = {};
  if (options.caFile) tls.caFile = path.resolve(options.caFile);
  if (options.fingerprint256) {
    const fp = Fingerprint256.safeParse(options.fingerprint256);
    if (!fp.success) throw new RegisterError(`--fingerprint ${fp.error.issues[0]?.message}`);
    tls.fingerprint256 = fp.data;
  }
  if ((tls.caFile || tls.fingerprint256) && url.protocol !== 'https:') {
    throw new RegisterError('--ca-file and --fingerprint pin TLS; they need an https:// server');
  }
  const stateFile = path.resolve(options.stateFile);
  // Re-registration makes a new agent (AGT-2); the old identity is deleted deliberately, not clobbered.
  if (await exists(stateFile)) {
    throw new RegisterError(
      `state file ${stateFile} already exists: this host is already registered. ` +
        'To register a new agent, delete that file first (the old agent stays in the console until revoked).',
    );
  }

  const signing = generateKeyPairSync('ed25519');
  const encryption = generateKeyPairSync('x25519');
  const body = JSON.stringify(
    RegisterRequest.parse({
      token: options.token,
      name: name.data,
      hostname: (options.hostname ?? osHostname()).slice(0, 253) || undefined,
      signingKey: publicKeyOf(signing.privateKey),
      encryptionKey: publicKeyOf(encryption.privateKey),
    }),
  );
  const endpoint = `${serverBase(url)}${AGENT_REGISTER_PATH}`;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const answer =
    tls.caFile || tls.fingerprint256
      ? await postPinned(endpoint, body, tls, timeoutMs)
      : await postFetch(endpoint, body, timeoutMs);

  if (answer.status < 200 || answer.status > 299) throw new RegisterError(describeRefusal(answer));
  let json: unknown;
  try {
    json = JSON.parse(answer.body);
  } catch {
    throw new RegisterError(`the server answered ${answer.status} with something that is not JSON`);
  }
  const parsed = RegisterResponse.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new RegisterError(`the server's answer is not a registration response: ${problems}`);
  }
  try {
    ed25519PublicKey(parsed.data.serverSigningKey);
  } catch {
    throw new RegisterError("the server's signing key in its answer is not an Ed25519 public key");
  }
  const state: AgentState = {
    agentId: parsed.data.agentId,
    org: parsed.data.org,
    name: parsed.data.name,
    server: serverBase(url),
    serverSigningKey: parsed.data.serverSigningKey,
    signingKey: signing.privateKey,
    encryptionKey: encryption.privateKey,
    registeredAt: Date.now(),
  };
  if (tls.caFile || tls.fingerprint256) state.tls = tls;
  await writeStateFile(stateFile, state);
  return state;
}

async function exists(file: string): Promise<boolean> {
  try {
    await lstat(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

function describeRefusal(answer: HttpAnswer): string {
  try {
    const { error } = JSON.parse(answer.body) as { error?: { code?: unknown; message?: unknown } };
    if (error && typeof error.message === 'string') {
      const code = typeof error.code === 'string' ? ` ${printable(error.code, 64)}` : '';
      return `the server refused the registration (HTTP ${answer.status}${code}): ${printable(error.message)}`;
    }
  } catch {
    // Not our error shape (a proxy's HTML page, say): the status is all we can honestly show.
  }
  return `the server refused the registration (HTTP ${answer.status})`;
}

async function postFetch(endpoint: string, body: string, timeoutMs: number): Promise<HttpAnswer> {
  let response: Response;
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body,
      // A redirect would re-send the token to wherever the redirect points.
      redirect: 'error',
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new RegisterError(`cannot reach ${endpoint}: ${networkReason(error)}`);
  }
  const text = await response.text();
  if (text.length > MAX_RESPONSE_BYTES) throw new RegisterError('the server answered with an oversized body');
  return { status: response.status, body: text };
}

function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code) return cause.code;
  if (cause?.message) return cause.message;
  return error instanceof Error ? error.message : String(error);
}

/**
 * node:https, for a CA file or a certificate fingerprint. The body (the token) is written only after
 * the TLS handshake and the fingerprint check: until then not even the request headers leave.
 */
function postPinned(endpoint: string, body: string, tls: TlsPin, timeoutMs: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const fail = (message: string) => reject(new RegisterError(message));
    const request = httpsRequest(endpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json',
        'content-length': Buffer.byteLength(body),
      },
      ...tlsClientOptions(tls),
      // A fresh connection, so the check below sees this handshake and not a pooled one.
      agent: false,
      timeout: timeoutMs,
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', (error) =>
      fail(`cannot reach ${endpoint}: ${(error as NodeJS.ErrnoException).code ?? error.message}`),
    );
    request.on('socket', (socket) => {
      (socket as TLSSocket).once('secureConnect', () => {
        const cert = (socket as TLSSocket).getPeerCertificate();
        if (tls.fingerprint256 && !fingerprintMatches(cert, tls.fingerprint256)) {
          request.destroy(
            new Error(`certificate fingerprint ${cert?.fingerprint256 ?? '(none)'} is not the pinned one`),
          );
          return;
        }
        request.end(body);
      });
    });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
        if (text.length > MAX_RESPONSE_BYTES) {
          response.destroy();
          fail('the server answered with an oversized body');
        }
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
      response.on('error', (error) => fail(`reading the answer failed: ${error.message}`));
    });
  });
}
