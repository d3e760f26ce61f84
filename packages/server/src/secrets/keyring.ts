import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';

/**
 * Sealing for both levels of the envelope (SEC-1): master keys wrap data keys (the Keyring below),
 * and data keys seal values (data-keyring.ts). AES-256-GCM with a random 96-bit nonce per message and
 * the key id on every ciphertext, so a rotated key can still open what it sealed and a ciphertext
 * sealed by an unknown key is refused by name. The caller's context is bound as additional
 * authenticated data: a sealed value copied to another row or purpose fails to open.
 *
 * Format: `enc1.<keyId>.<nonce>.<ciphertext>.<tag>` (base64url parts).
 */

const FORMAT = 'enc1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export class SealedValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SealedValueError';
  }
}

export function keyIdOf(key: Buffer): string {
  // An HMAC of a fixed label: identifies the key without revealing anything about it.
  return createHmac('sha256', key).update('bulwark key id v1').digest('hex').slice(0, 16);
}

/** Seals under one key, naming it by `keyId` in the output (a master key's hash id, or a data key's id). */
export function sealUnder(key: Buffer, keyId: string, plaintext: Buffer | string, context: string): string {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag();
  return [FORMAT, keyId, nonce, ciphertext, tag]
    .map((part) => (typeof part === 'string' ? part : part.toString('base64url')))
    .join('.');
}

/** The id of the key a sealed value names; throws on anything that is not a sealed value. */
export function sealedKeyId(sealed: string): string {
  const parts = sealed.split('.');
  if (parts.length !== 5 || parts[0] !== FORMAT || !parts[1])
    throw new SealedValueError('not a sealed value');
  return parts[1];
}

/** Opens a sealed value with `key`, which the caller looked up by the value's key id. */
export function openUnder(key: Buffer, sealed: string, context: string): Buffer {
  sealedKeyId(sealed);
  const [, , nonce, ciphertext, tag] = sealed.split('.') as [string, string, string, string, string];
  const tagBytes = Buffer.from(tag, 'base64url');
  // GCM accepts truncated tags unless told otherwise; a short tag would make forgery cheap.
  if (tagBytes.length !== TAG_BYTES) throw new SealedValueError('sealed value has a malformed tag');
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(nonce, 'base64url'), {
    authTagLength: TAG_BYTES,
  });
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(tagBytes);
  try {
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]);
  } catch {
    throw new SealedValueError('sealed value failed authentication (tampered, or wrong context)');
  }
}

/** A set of master keys: seals under the current one, opens under any of them. */
export interface Keyring {
  readonly currentKeyId: string;
  /** Every key id this ring can open, the current one first. */
  readonly keyIds: readonly string[];
  seal(plaintext: Buffer | string, context: string): string;
  open(sealed: string, context: string): Buffer;
}

export function createKeyring(keys: { current: Buffer; previous?: Buffer[] }): Keyring {
  const byId = new Map<string, Buffer>();
  for (const key of [keys.current, ...(keys.previous ?? [])]) {
    if (key.length !== 32) throw new SealedValueError('keyring keys must be 32 bytes');
    byId.set(keyIdOf(key), key);
  }
  const currentKeyId = keyIdOf(keys.current);

  return {
    currentKeyId,
    keyIds: [...byId.keys()],
    seal: (plaintext, context) => sealUnder(keys.current, currentKeyId, plaintext, context),
    open(sealed, context) {
      const keyId = sealedKeyId(sealed);
      const key = byId.get(keyId);
      if (!key) throw new SealedValueError(`sealed by unknown key ${keyId}`);
      return openUnder(key, sealed, context);
    },
  };
}
