import {
  createCipheriv,
  createDecipheriv,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { z } from 'zod';

/**
 * Secrets for one command, sealed to one agent's X25519 key (SEC-3): an ephemeral X25519 key pair
 * per sealing, ECDH with the agent's key, HKDF-SHA-256 over the shared secret (salted with both
 * public keys), then AES-256-GCM. The command id and agent id are authenticated data, so a sealed
 * box lifted into another command, or sent to another agent, does not open. Only the agent holding
 * the private key reads the values; the server keeps none of this after sending it, and the signed
 * envelope that carries the box proves where it came from.
 */

export const SEALED_SECRETS_ALGORITHM = 'x25519-hkdf-sha256-aes-256-gcm';
const INFO = 'bulwark/command-secrets/v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Far above 32 secrets of 64 KiB each in base64url, still bounded. */
const MAX_CIPHERTEXT_CHARS = 3 * 1024 * 1024;

const base64url = (bytes: number) =>
  z
    .string()
    .length(Math.ceil((bytes * 4) / 3))
    .regex(/^[A-Za-z0-9_-]+$/, `must be ${bytes} bytes, base64url`);

export const SealedSecrets = z.strictObject({
  alg: z.literal(SEALED_SECRETS_ALGORITHM),
  ephemeralKey: base64url(32),
  nonce: base64url(NONCE_BYTES),
  ciphertext: z
    .string()
    .min(1)
    .max(MAX_CIPHERTEXT_CHARS)
    .regex(/^[A-Za-z0-9_-]+$/, 'must be base64url'),
  tag: base64url(TAG_BYTES),
});
export type SealedSecrets = z.infer<typeof SealedSecrets>;

export class SealedSecretsError extends Error {}

const x25519PublicKey = (raw: string) =>
  createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw }, format: 'jwk' });
const rawOf = (key: KeyObject) => key.export({ format: 'jwk' }).x as string;
const associatedData = (commandId: string, agentId: string) =>
  Buffer.from(`${INFO}\n${commandId}\n${agentId}`, 'utf8');

function boxKey(shared: Buffer, ephemeralRaw: string, recipientRaw: string): Buffer {
  const salt = Buffer.concat([
    Buffer.from(ephemeralRaw, 'base64url'),
    Buffer.from(recipientRaw, 'base64url'),
  ]);
  return Buffer.from(hkdfSync('sha256', shared, salt, INFO, 32));
}

/** Seals `secrets` (name → value) for the agent whose raw X25519 public key is `recipient`. */
export function sealSecrets(
  recipient: string,
  secrets: Record<string, string>,
  binding: { commandId: string; agentId: string },
): SealedSecrets {
  const ephemeral = generateKeyPairSync('x25519');
  const ephemeralKey = rawOf(ephemeral.publicKey);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: x25519PublicKey(recipient) });
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', boxKey(shared, ephemeralKey, recipient), nonce);
  cipher.setAAD(associatedData(binding.commandId, binding.agentId));
  const ciphertext = Buffer.concat([cipher.update(JSON.stringify(secrets), 'utf8'), cipher.final()]);
  return {
    alg: SEALED_SECRETS_ALGORITHM,
    ephemeralKey,
    nonce: nonce.toString('base64url'),
    ciphertext: ciphertext.toString('base64url'),
    tag: cipher.getAuthTag().toString('base64url'),
  };
}

/** Opens a box sealed to this agent for this command; throws SealedSecretsError on anything else. */
export function openSecrets(
  privateKey: KeyObject,
  sealed: SealedSecrets,
  binding: { commandId: string; agentId: string },
): Record<string, string> {
  try {
    const recipient = rawOf(createPublicKey(privateKey));
    const shared = diffieHellman({ privateKey, publicKey: x25519PublicKey(sealed.ephemeralKey) });
    const decipher = createDecipheriv(
      'aes-256-gcm',
      boxKey(shared, sealed.ephemeralKey, recipient),
      Buffer.from(sealed.nonce, 'base64url'),
      { authTagLength: TAG_BYTES },
    );
    decipher.setAAD(associatedData(binding.commandId, binding.agentId));
    decipher.setAuthTag(Buffer.from(sealed.tag, 'base64url'));
    const plaintext = Buffer.concat([
      decipher.update(Buffer.from(sealed.ciphertext, 'base64url')),
      decipher.final(),
    ]).toString('utf8');
    return z.record(z.string(), z.string()).parse(JSON.parse(plaintext));
  } catch {
    throw new SealedSecretsError('the command secrets do not open for this agent and command');
  }
}
