import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  hkdfSync,
  randomBytes,
  scrypt,
  timingSafeEqual,
} from 'node:crypto';
import { open } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import type { MasterKeyProvider } from '../secrets/key-provider.js';

/**
 * The encrypted envelope of a backup (PLAT-7). The construction is age's (age-encryption.org/v1,
 * https://age-encryption.org/v1 and C2SP's age.md), with node:crypto primitives in place of
 * X25519/ChaCha20-Poly1305:
 *
 *   bulwark-backup/v1                                  magic and version
 *   -> keyring <sealed file key>                       file key wrapped by the master key provider
 *   -> scrypt <salt> <log2 N> <wrapped file key>       file key wrapped under scrypt(passphrase)
 *   payload <nonce> <chunk size>
 *   --- <HMAC-SHA-256 of everything above, under HKDF(file key, "header")>
 *   <payload: STREAM chunks>
 *
 * A random 256-bit file key encrypts the payload; each recipient stanza wraps it. The header MAC is
 * keyed from the file key, so a stanza, cost, nonce or chunk size changed, added or removed — or a
 * header taken from another backup — fails before a byte of payload is trusted. The payload is the
 * STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015; age's payload, Tink's streaming
 * AEAD): AES-256-GCM chunks of 64 KiB under HKDF(file key, salt = payload nonce, "payload"), each
 * with the nonce `11-byte chunk counter ‖ last-chunk flag`, so a chunk moved, dropped, repeated, or
 * a stream cut at a chunk boundary or extended after its last chunk fails authentication.
 *
 * Deviation from age: age allows a scrypt stanza only alone. Here a backup may carry both: each
 * recipient is a holder of the whole instance (its master key, or the owner's backup passphrase), so
 * "whoever could open it could have made it" is the authenticity claim either way. But, as in age,
 * never more than one scrypt stanza, each within the writer's cost range, checked as the header is
 * parsed: otherwise a forged header of some eighty stanzas would make the reader run scrypt eighty
 * times before any MAC could be checked.
 */

export const MAGIC = 'bulwark-backup/v1';
const PURPOSE = 'bulwark backup file key v1';
const FILE_KEY_BYTES = 32;
const PAYLOAD_NONCE_BYTES = 16;
const TAG_BYTES = 16;
export const CHUNK_BYTES = 64 * 1024;
/** 2^17 × r 8 = 128 MiB and about half a second per derivation: OWASP's scrypt floor is 2^17. */
export const SCRYPT_LOG_N = 17;
/**
 * The costs a reader accepts: what the writer uses, and one step up for a later writer. Anything more
 * is a header written to make the reader spend memory and time (2^22 would be 4 GiB) before the MAC
 * can say it is forged.
 */
const MAX_SCRYPT_LOG_N = 18;
const MIN_SCRYPT_LOG_N = 17;
const SCRYPT_SALT_BYTES = 16;
/** Headers are a few hundred bytes; anything past this without the MAC line is not a backup. */
const MAX_HEADER_BYTES = 8 * 1024;

export class BackupAuthenticationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackupAuthenticationError';
  }
}

const b64 = (bytes: Buffer) => bytes.toString('base64url');
const unb64 = (text: string) => {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new BackupAuthenticationError('malformed backup header');
  return Buffer.from(text, 'base64url');
};

const hkdf = (key: Buffer, salt: Buffer, info: string): Buffer =>
  Buffer.from(hkdfSync('sha256', key, salt, info, 32));

function scryptKey(passphrase: string, salt: Buffer, logN: number): Promise<Buffer> {
  const N = 2 ** logN;
  return new Promise((resolve, reject) =>
    // The label in the salt keeps this derivation apart from any other use of the same passphrase.
    scrypt(
      passphrase.normalize('NFC'),
      Buffer.concat([Buffer.from(MAGIC), salt]),
      32,
      { N, r: 8, p: 1, maxmem: 128 * N * 8 * 2 },
      (error, key) => (error ? reject(error) : resolve(key)),
    ),
  );
}

/** AES-256-GCM of the file key under a single-use key (a fresh scrypt salt), so a zero nonce is safe, as in age. */
function wrapOnce(key: Buffer, fileKey: Buffer, label: string): Buffer {
  const cipher = createCipheriv('aes-256-gcm', key, Buffer.alloc(12));
  cipher.setAAD(Buffer.from(label));
  return Buffer.concat([cipher.update(fileKey), cipher.final(), cipher.getAuthTag()]);
}

function unwrapOnce(key: Buffer, wrapped: Buffer, label: string): Buffer | undefined {
  if (wrapped.length !== FILE_KEY_BYTES + TAG_BYTES) return undefined;
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.alloc(12), { authTagLength: TAG_BYTES });
  decipher.setAAD(Buffer.from(label));
  decipher.setAuthTag(wrapped.subarray(FILE_KEY_BYTES));
  try {
    return Buffer.concat([decipher.update(wrapped.subarray(0, FILE_KEY_BYTES)), decipher.final()]);
  } catch {
    return undefined;
  }
}

export interface Recipients {
  /** Wrap the file key with the installation's master key (the keyring recipient). */
  masterKeys?: MasterKeyProvider;
  /** Wrap the file key under scrypt of this passphrase. */
  passphrase?: string;
}

export interface Sealer {
  header: Buffer;
  /** Encrypts the plaintext piped through it into STREAM chunks. */
  payload: Transform;
}

function headerMac(fileKey: Buffer, headerUpToMac: string): Buffer {
  return createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header'))
    .update(headerUpToMac)
    .digest();
}

/** Makes a new file key, the header that wraps it for each recipient, and the payload encryptor. */
export async function createSealer(recipients: Recipients): Promise<Sealer> {
  if (!recipients.masterKeys && recipients.passphrase === undefined)
    throw new Error('a backup needs at least one recipient: the master key or a passphrase');
  const fileKey = randomBytes(FILE_KEY_BYTES);
  const lines = [MAGIC];
  if (recipients.masterKeys) lines.push(`-> keyring ${recipients.masterKeys.wrap(fileKey, PURPOSE)}`);
  if (recipients.passphrase !== undefined) {
    const salt = randomBytes(SCRYPT_SALT_BYTES);
    const key = await scryptKey(recipients.passphrase, salt, SCRYPT_LOG_N);
    lines.push(`-> scrypt ${b64(salt)} ${SCRYPT_LOG_N} ${b64(wrapOnce(key, fileKey, PURPOSE))}`);
  }
  const nonce = randomBytes(PAYLOAD_NONCE_BYTES);
  lines.push(`payload ${b64(nonce)} ${CHUNK_BYTES}`);
  const upToMac = `${lines.join('\n')}\n---`;
  const header = Buffer.from(`${upToMac} ${b64(headerMac(fileKey, upToMac))}\n`);
  return { header, payload: new ChunkSealer(hkdf(fileKey, nonce, 'payload')) };
}

function chunkNonce(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  // 11-byte big-endian counter; 2^48 chunks of 64 KiB (16 EiB) is more than any backup.
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

class ChunkSealer extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private counter = 0;
  constructor(private readonly key: Buffer) {
    super();
  }
  private seal(plaintext: Buffer, last: boolean): Buffer {
    const cipher = createCipheriv('aes-256-gcm', this.key, chunkNonce(this.counter++, last));
    return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    // Strictly more than a chunk: the last chunk is known only at the end, and may be a full one.
    if (this.pendingBytes > CHUNK_BYTES) {
      let all = Buffer.concat(this.pending);
      while (all.length > CHUNK_BYTES) {
        this.push(this.seal(all.subarray(0, CHUNK_BYTES), false));
        all = all.subarray(CHUNK_BYTES);
      }
      this.pending = [all];
      this.pendingBytes = all.length;
    }
    done();
  }
  override _flush(done: TransformCallback): void {
    this.push(this.seal(Buffer.concat(this.pending), true));
    done();
  }
}

export interface Opened {
  /** Byte offset of the payload in the file. */
  payloadOffset: number;
  /** Which recipient opened it. */
  openedBy: 'keyring' | 'scrypt';
  /** Decrypts the STREAM chunks piped through it; errors on any failed chunk, or a stream with no last chunk. */
  payload(): Transform;
}

interface Stanza {
  type: string;
  args: string[];
}

function parseHeader(text: string): { stanzas: Stanza[]; nonce: Buffer; upToMac: string; mac: Buffer } {
  const lines = text.split('\n');
  if (lines[0] !== MAGIC) throw new BackupAuthenticationError('not a Bulwark backup (or a newer format)');
  const stanzas: Stanza[] = [];
  let index = 1;
  while (lines[index]?.startsWith('-> ')) {
    const [type = '', ...args] = lines[index]!.slice(3).split(' ');
    stanzas.push({ type, args });
    index++;
  }
  const payload = /^payload ([A-Za-z0-9_-]+) (\d+)$/.exec(lines[index] ?? '');
  const macLine = /^--- ([A-Za-z0-9_-]+)$/.exec(lines[index + 1] ?? '');
  if (!payload || !macLine || stanzas.length === 0)
    throw new BackupAuthenticationError('malformed backup header');
  const scrypts = stanzas.filter((stanza) => stanza.type === 'scrypt');
  if (scrypts.length > 1)
    throw new BackupAuthenticationError(
      `refusing a backup header with ${scrypts.length} passphrase (scrypt) stanzas: a backup has at most one`,
    );
  for (const { args } of scrypts) {
    const logN = args[1] ?? '';
    if (args.length !== 3) throw new BackupAuthenticationError('malformed passphrase stanza');
    if (!/^\d{1,2}$/.test(logN) || Number(logN) < MIN_SCRYPT_LOG_N || Number(logN) > MAX_SCRYPT_LOG_N)
      throw new BackupAuthenticationError(
        `refusing a passphrase cost of 2^${logN.slice(0, 10)}: backups use 2^${MIN_SCRYPT_LOG_N} to 2^${MAX_SCRYPT_LOG_N}`,
      );
  }
  if (Number(payload[2]) !== CHUNK_BYTES) throw new BackupAuthenticationError('unsupported chunk size');
  const nonce = unb64(payload[1]!);
  if (nonce.length !== PAYLOAD_NONCE_BYTES) throw new BackupAuthenticationError('malformed backup header');
  const upToMac = `${lines.slice(0, index + 1).join('\n')}\n---`;
  return { stanzas, nonce, upToMac, mac: unb64(macLine[1]!) };
}

async function fileKeyFrom(
  stanza: Stanza,
  recipients: Recipients,
): Promise<{ fileKey: Buffer; by: 'keyring' | 'scrypt' } | undefined> {
  if (stanza.type === 'keyring' && recipients.masterKeys && stanza.args.length === 1) {
    try {
      const fileKey = recipients.masterKeys.unwrap(stanza.args[0]!, PURPOSE);
      return fileKey.length === FILE_KEY_BYTES ? { fileKey, by: 'keyring' } : undefined;
    } catch {
      // Another installation's master key, or a rotated-away one: try the next stanza.
      return undefined;
    }
  }
  if (stanza.type === 'scrypt' && recipients.passphrase !== undefined && stanza.args.length === 3) {
    // Its cost is within the accepted range: parseHeader checked.
    const [salt, logN, wrapped] = stanza.args as [string, string, string];
    const key = await scryptKey(recipients.passphrase, unb64(salt), Number(logN));
    const fileKey = unwrapOnce(key, unb64(wrapped), PURPOSE);
    return fileKey ? { fileKey, by: 'scrypt' } : undefined;
  }
  return undefined;
}

/** The recipients a backup names, without opening it: to ask for what is needed before trying. */
export async function stanzaTypesOf(file: string): Promise<string[]> {
  return parseHeader(await readHeaderText(file)).stanzas.map((stanza) => stanza.type);
}

async function readHeaderText(file: string): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(MAX_HEADER_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, MAX_HEADER_BYTES, 0);
    const text = buffer.subarray(0, bytesRead).toString('latin1');
    const end = text.indexOf('\n', text.indexOf('\n--- ') + 1);
    if (text.indexOf('\n--- ') < 0 || end < 0) throw new BackupAuthenticationError('not a Bulwark backup');
    return text.slice(0, end);
  } finally {
    await handle.close();
  }
}

/**
 * Reads and authenticates a backup's header with whichever recipient the caller holds. Throws
 * {@link BackupAuthenticationError} when none opens it, or when the header MAC does not match.
 */
export async function openHeader(file: string, recipients: Recipients): Promise<Opened> {
  const text = await readHeaderText(file);
  const { stanzas, nonce, upToMac, mac } = parseHeader(text);
  for (const stanza of stanzas) {
    const found = await fileKeyFrom(stanza, recipients);
    if (!found) continue;
    const expected = headerMac(found.fileKey, upToMac);
    if (mac.length !== expected.length || !timingSafeEqual(mac, expected))
      throw new BackupAuthenticationError(
        'backup header failed authentication (tampered, or from another backup)',
      );
    const key = hkdf(found.fileKey, nonce, 'payload');
    return {
      payloadOffset: Buffer.byteLength(text, 'latin1') + 1,
      openedBy: found.by,
      payload: () => new ChunkOpener(key),
    };
  }
  const offered = [
    recipients.masterKeys && 'the master key',
    recipients.passphrase !== undefined && 'the passphrase',
  ]
    .filter(Boolean)
    .join(' or ');
  throw new BackupAuthenticationError(
    `${offered || 'nothing'} does not open this backup (it is for: ${stanzas.map((s) => s.type).join(', ')})`,
  );
}

class ChunkOpener extends Transform {
  private buffered: Buffer = Buffer.alloc(0);
  private counter = 0;
  constructor(private readonly key: Buffer) {
    super();
  }
  private open(sealed: Buffer, last: boolean): Buffer {
    if (sealed.length < TAG_BYTES || (last && sealed.length === TAG_BYTES && this.counter > 0))
      throw new BackupAuthenticationError('backup is truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.key, chunkNonce(this.counter++, last), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES)),
        decipher.final(),
      ]);
    } catch {
      throw new BackupAuthenticationError(
        `backup chunk ${this.counter - 1} failed authentication (tampered, truncated or reordered)`,
      );
    }
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    try {
      // Strictly more than a sealed chunk: only the stream's end says which chunk is the last.
      while (this.buffered.length > CHUNK_BYTES + TAG_BYTES) {
        this.push(this.open(this.buffered.subarray(0, CHUNK_BYTES + TAG_BYTES), false));
        this.buffered = this.buffered.subarray(CHUNK_BYTES + TAG_BYTES);
      }
      done();
    } catch (error) {
      done(error as Error);
    }
  }
  override _flush(done: TransformCallback): void {
    try {
      this.push(this.open(this.buffered, true));
      done();
    } catch (error) {
      done(error as Error);
    }
  }
}
