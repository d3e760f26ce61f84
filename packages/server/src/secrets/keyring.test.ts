import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createKeyring, keyIdOf, SealedValueError } from './keyring.js';

describe('keyring', () => {
  const key = randomBytes(32);
  const keyring = createKeyring({ current: key });

  it('seals with AES-256-GCM under a key id and opens in the same context', () => {
    const sealed = keyring.seal('the private key', 'server_keys/key_1/audit');
    const [format, keyId, nonce] = sealed.split('.');
    expect(format).toBe('enc1');
    expect(keyId).toBe(keyIdOf(key));
    expect(Buffer.from(nonce!, 'base64url')).toHaveLength(12);
    expect(keyring.open(sealed, 'server_keys/key_1/audit').toString()).toBe('the private key');
    expect(sealed).not.toContain(Buffer.from('the private key').toString('base64url'));
  });

  it('never reuses a nonce', () => {
    const nonces = new Set(Array.from({ length: 1000 }, () => keyring.seal('x', 'c').split('.')[2]));
    expect(nonces.size).toBe(1000);
  });

  it('refuses a tampered ciphertext, nonce or tag', () => {
    // Attack: someone with write access to the database alters a sealed value to change what it decrypts to.
    const sealed = keyring.seal('value', 'ctx');
    const parts = sealed.split('.');
    for (const index of [2, 3, 4]) {
      const bytes = Buffer.from(parts[index]!, 'base64url');
      bytes[0]! ^= 0x01;
      const tampered = parts.map((part, i) => (i === index ? bytes.toString('base64url') : part)).join('.');
      expect(() => keyring.open(tampered, 'ctx')).toThrow(SealedValueError);
    }
  });

  it('refuses a truncated tag that GCM would otherwise accept', () => {
    // Attack: a 4-byte tag makes forgery a 2^32 guess instead of 2^128.
    const parts = keyring.seal('value', 'ctx').split('.');
    parts[4] = Buffer.from(parts[4]!, 'base64url').subarray(0, 4).toString('base64url');
    expect(() => keyring.open(parts.join('.'), 'ctx')).toThrow('malformed tag');
  });

  it('refuses a value moved to another context', () => {
    // Attack: copy one row's sealed key into another row to make the server use it for another purpose.
    const sealed = keyring.seal('value', 'server_keys/key_1/audit-checkpoint');
    expect(() => keyring.open(sealed, 'server_keys/key_2/command-envelope')).toThrow(SealedValueError);
  });

  it('names an unknown key and opens values sealed by a previous one', () => {
    const next = randomBytes(32);
    const sealedByOld = keyring.seal('value', 'ctx');
    expect(() => createKeyring({ current: next }).open(sealedByOld, 'ctx')).toThrow(
      `unknown key ${keyIdOf(key)}`,
    );
    expect(
      createKeyring({ current: next, previous: [key] })
        .open(sealedByOld, 'ctx')
        .toString(),
    ).toBe('value');
  });
});
