import { createHmac, timingSafeEqual } from 'node:crypto';
import { canonicalJson } from '@bulwark/protocol';
import type { DataKeyring } from './data-keyring.js';
import { SealedValueError } from './keyring.js';

/** 128-bit MACs: forging one is as hard as guessing a 128-bit key. */
const MAC_BYTES = 16;

/**
 * A MAC over a row's fields that matter, made by the server under a key derived (for `purpose`) from
 * the instance data key, so from the master key: someone who can write the database but not read the
 * master key cannot change those fields unnoticed. The seal names the data key it was made with
 * (`<key id>.<mac>`), so it outlives a data-key rotation.
 */
export function createRowSealer(
  dataKeys: Pick<DataKeyring, 'activeKeyId' | 'deriveKeyFrom'>,
  purpose: string,
) {
  const keys = new Map<string, Promise<Buffer>>();
  function keyOf(keyId: string): Promise<Buffer> {
    let key = keys.get(keyId);
    if (!key) {
      key = dataKeys.deriveKeyFrom('instance', keyId, purpose);
      key.catch(() => keys.delete(keyId));
      keys.set(keyId, key);
    }
    return key;
  }
  const mac = (key: Buffer, parts: unknown[]) =>
    createHmac('sha256', key)
      .update(canonicalJson([purpose, ...parts]))
      .digest()
      .subarray(0, MAC_BYTES)
      .toString('base64url');

  return {
    async seal(parts: unknown[]): Promise<string> {
      const keyId = await dataKeys.activeKeyId('instance');
      return `${keyId}.${mac(await keyOf(keyId), parts)}`;
    },

    /** Whether `seal` is this server's seal of `parts`. A database that does not answer is an error. */
    async holds(seal: string, parts: unknown[]): Promise<boolean> {
      const dot = seal.lastIndexOf('.');
      const keyId = seal.slice(0, dot);
      if (dot <= 0 || keyId.length > 64) return false;
      let key: Buffer;
      try {
        key = await keyOf(keyId);
      } catch (error) {
        if (error instanceof SealedValueError) return false;
        throw error;
      }
      const expected = Buffer.from(mac(key, parts));
      const given = Buffer.from(seal.slice(dot + 1));
      return expected.length === given.length && timingSafeEqual(expected, given);
    },
  };
}

export type RowSealer = ReturnType<typeof createRowSealer>;
