import { createHmac, timingSafeEqual } from 'node:crypto';
import { canonicalJson } from '@bulwark/protocol';
import type { DataKeyLookup } from './data-keyring.js';
import { SealedValueError } from './keyring.js';

/** 128-bit MACs: forging one is as hard as guessing a 128-bit key. */
const MAC_BYTES = 16;

function sameMac(expected: string, given: unknown): boolean {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}

interface FieldSeal {
  v: 1;
  key: string;
  macs: Record<string, string>;
}

/**
 * MACs over the fields of a row that matter, made by the server under a key derived (for `purpose`)
 * from the instance data key, so from the master key: someone who can write the database but not read
 * the master key cannot change those fields unnoticed. A seal names the data key it was made with, so
 * it outlives a data-key rotation. `seal`/`holds` cover a row with one MAC (`<key id>.<mac>`);
 * `sealFields`/`fieldMismatches` give each named field its own MAC, so a check can say which differ.
 */
export function createRowSealer(dataKeys: DataKeyLookup, purpose: string) {
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

  async function activeKey(): Promise<{ keyId: string; key: Buffer }> {
    const keyId = await dataKeys.activeKeyId('instance');
    return { keyId, key: await keyOf(keyId) };
  }

  /** The key a seal names, or undefined when it names none of this server's. A database error is thrown. */
  async function keyNamed(keyId: unknown): Promise<Buffer | undefined> {
    if (typeof keyId !== 'string' || keyId.length === 0 || keyId.length > 64) return undefined;
    try {
      return await keyOf(keyId);
    } catch (error) {
      // A key this server does not have is a broken seal; a database that did not answer is not.
      if (error instanceof SealedValueError) return undefined;
      throw error;
    }
  }

  return {
    async seal(parts: unknown[]): Promise<string> {
      const { keyId, key } = await activeKey();
      return `${keyId}.${mac(key, parts)}`;
    },

    /** Whether `seal` is this server's seal of `parts`. */
    async holds(seal: string, parts: unknown[]): Promise<boolean> {
      const dot = seal.lastIndexOf('.');
      const key = dot > 0 ? await keyNamed(seal.slice(0, dot)) : undefined;
      return key !== undefined && sameMac(mac(key, parts), seal.slice(dot + 1));
    },

    async sealFields(fields: Record<string, unknown[]>): Promise<string> {
      const { keyId, key } = await activeKey();
      const macs = Object.fromEntries(Object.entries(fields).map(([name, parts]) => [name, mac(key, parts)]));
      return JSON.stringify({ v: 1, key: keyId, macs } satisfies FieldSeal);
    },

    /** The names of the fields that differ from their seal; `['seal']` when there is no valid seal. */
    async fieldMismatches(seal: string, fields: Record<string, unknown[]>): Promise<string[]> {
      let parsed: Partial<FieldSeal>;
      try {
        parsed = JSON.parse(seal) as Partial<FieldSeal>;
      } catch {
        return ['seal'];
      }
      const macs = parsed?.v === 1 && typeof parsed.macs === 'object' ? parsed.macs : undefined;
      const key = macs ? await keyNamed(parsed.key) : undefined;
      if (!macs || !key) return ['seal'];
      const differing = Object.entries(fields)
        .filter(([name, parts]) => !sameMac(mac(key, parts), macs[name]))
        .map(([name]) => name);
      // A field the seal vouches for that the row no longer has (an optional one set back to null)
      // differs as much as a changed one.
      const dropped = Object.keys(macs).filter((name) => !Object.hasOwn(fields, name));
      return [...differing, ...dropped];
    },
  };
}
