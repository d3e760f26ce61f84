import { createPrivateKey, createPublicKey, hash, type KeyObject, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { AgentIdShape, ed25519PublicKey, rawPublicKey } from '@bulwark/protocol';
import { z } from 'zod';
import { Fingerprint256, type TlsPin } from './net.js';

/**
 * The agent's state file: its identity (id, org, name), the server it registered with and that
 * server's pinned signing key (AGT-6), and its two private keys (AGT-2). AGT-7: the file is 0600 in a
 * 0700 directory, a file readable or writable by group or others is refused, and the keys live in
 * memory only as KeyObjects, which print and serialize as nothing useful.
 */

export const STATE_FILE_VERSION = 1;
/** `register` writes here unless told otherwise: the working directory (systemd: the StateDirectory). */
export const DEFAULT_STATE_FILE = 'bulwark-agent.state.json';

export class StateFileError extends Error {}

const Base64Url32 = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes, base64url');
const Pkcs8Der = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be a base64 PKCS#8 DER key');

const StateFileSchema = z.strictObject({
  version: z.literal(STATE_FILE_VERSION),
  agentId: AgentIdShape,
  org: z.strictObject({ id: z.string().min(1), slug: z.string().min(1) }),
  name: z.string().min(1),
  server: z.string().url(),
  serverSigningKey: Base64Url32,
  keys: z.strictObject({ signing: Pkcs8Der, encryption: Pkcs8Der }),
  tls: z
    .strictObject({ caFile: z.string().min(1).optional(), fingerprint256: Fingerprint256.optional() })
    .optional(),
  registeredAt: z.number().int().nonnegative(),
});

export interface AgentState {
  agentId: string;
  org: { id: string; slug: string };
  name: string;
  /** The server's base URL, as registered (https://…, or http:// to loopback). */
  server: string;
  /** The pinned server signing key, raw base64url (public). */
  serverSigningKey: string;
  /** Ed25519 private key: signs the handshake proof. */
  signingKey: KeyObject;
  /** X25519 private key: opens secrets sealed to the agent. */
  encryptionKey: KeyObject;
  tls?: TlsPin;
  registeredAt: number;
}

function importPrivateKey(der: string, type: 'ed25519' | 'x25519', file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: Buffer.from(der, 'base64'), format: 'der', type: 'pkcs8' });
  } catch {
    throw new StateFileError(`state file ${file}: the ${type} private key does not parse`);
  }
  if (key.asymmetricKeyType !== type) {
    throw new StateFileError(`state file ${file}: expected an ${type} private key`);
  }
  return key;
}

/** The public half of an agent key, raw base64url, as registration carries it. */
export function publicKeyOf(privateKey: KeyObject): string {
  return rawPublicKey(createPublicKey(privateKey));
}

/** Refuses a file another user owns or that grants group/others any access (AGT-7). */
function assertPrivateMode(file: string, stat: { mode: number; uid: number }): void {
  if (typeof process.getuid === 'function' && stat.uid !== process.getuid()) {
    throw new StateFileError(
      `state file ${file} belongs to another user (uid ${stat.uid}); it must belong to the user running the agent`,
    );
  }
  const mode = stat.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new StateFileError(
      `state file ${file} is accessible by group or others (mode ${mode.toString(8).padStart(4, '0')}); ` +
        `it holds the agent's private keys. Run: chmod 600 ${file}`,
    );
  }
}

export async function loadStateFile(file: string): Promise<AgentState> {
  let text: string;
  // One descriptor for the check and the read, so the file checked is the file read.
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new StateFileError(`no state file at ${file}; register the agent first: bulwark-agent register`);
    }
    if (code === 'ELOOP') throw new StateFileError(`state file ${file} is a symbolic link; refusing it`);
    throw new StateFileError(`cannot open state file ${file}: ${code ?? 'error'}`);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new StateFileError(`state file ${file} is not a regular file`);
    assertPrivateMode(file, stat);
    text = await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes a piece of the file, which holds private keys.
    throw new StateFileError(`state file ${file} is not valid JSON`);
  }
  const parsed = StateFileSchema.safeParse(json);
  if (!parsed.success) {
    // Paths and rule messages only; zod does not echo the input values.
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new StateFileError(`state file ${file} is invalid: ${problems.join('; ')}`);
  }
  const data = parsed.data;
  try {
    ed25519PublicKey(data.serverSigningKey);
  } catch {
    throw new StateFileError(`state file ${file}: serverSigningKey is not an Ed25519 public key`);
  }
  const state: AgentState = {
    agentId: data.agentId,
    org: data.org,
    name: data.name,
    server: data.server,
    serverSigningKey: data.serverSigningKey,
    signingKey: importPrivateKey(data.keys.signing, 'ed25519', file),
    encryptionKey: importPrivateKey(data.keys.encryption, 'x25519', file),
    registeredAt: data.registeredAt,
  };
  if (data.tls) state.tls = data.tls;
  return state;
}

function serialize(state: AgentState): string {
  const der = (key: KeyObject) => key.export({ format: 'der', type: 'pkcs8' }).toString('base64');
  const data: z.input<typeof StateFileSchema> = {
    version: STATE_FILE_VERSION,
    agentId: state.agentId,
    org: state.org,
    name: state.name,
    server: state.server,
    serverSigningKey: state.serverSigningKey,
    keys: { signing: der(state.signingKey), encryption: der(state.encryptionKey) },
    registeredAt: state.registeredAt,
  };
  if (state.tls && (state.tls.caFile || state.tls.fingerprint256)) data.tls = state.tls;
  return `${JSON.stringify(StateFileSchema.parse(data), null, 2)}\n`;
}

export interface WriteStateOptions {
  /** Replace an existing file. Off by default: an existing state file is an existing agent. */
  overwrite?: boolean;
}

/**
 * Atomic write: a 0600 temporary file in the same directory, fsync, then a link (no overwrite, and it
 * fails if another process created the file meanwhile) or a rename (overwrite) into place, then an
 * fsync of the directory, so a crash leaves either no file or the whole file, never a torn one.
 */
export async function writeStateFile(
  file: string,
  state: AgentState,
  options: WriteStateOptions = {},
): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    try {
      await handle.writeFile(serialize(state), 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (options.overwrite) {
      await rename(temp, file);
    } else {
      try {
        await link(temp, file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new StateFileError(`state file ${file} already exists; refusing to overwrite it`);
        }
        throw error;
      }
      await unlink(temp);
    }
  } catch (error) {
    await unlink(temp).catch(() => {});
    throw error;
  }
  await syncDirectory(dir);
}

async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, constants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the file itself is already synced.
  }
}

/** What `status` and logs may show about the state: no private key, ever. */
export function describeState(state: AgentState): Record<string, string> {
  return {
    agentId: state.agentId,
    name: state.name,
    org: `${state.org.slug} (${state.org.id})`,
    server: state.server,
    serverKey: serverKeyFingerprint(state.serverSigningKey),
  };
}

/** A short, comparable form of the pinned server key: SHA-256 of the raw key, first 16 hex digits. */
export function serverKeyFingerprint(serverSigningKey: string): string {
  return `SHA256:${hash('sha256', Buffer.from(serverSigningKey, 'base64url'), 'hex').slice(0, 16)}`;
}
