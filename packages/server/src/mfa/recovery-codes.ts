import { randomBytes } from 'node:crypto';
import { tokenHash } from '@bulwark/protocol';

/**
 * Recovery codes (MFA-3): ten single-use codes of 80 random bits, shown once, stored as SHA-256. With
 * 80 bits there is nothing to brute-force from a copy of the database, so a fast hash is enough (as
 * for tokens). Written in Crockford's base32 in groups of four; read back forgiving case, spaces,
 * dashes and the letters people confuse with digits.
 */

export const RECOVERY_CODE_COUNT = 10;
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const CODE_CHARS = 16;

function newCode(): string {
  const bytes = randomBytes(CODE_CHARS);
  // 256 is a multiple of 32: each byte's low 5 bits are uniform.
  const chars = [...bytes].map((byte) => ALPHABET[byte % 32]).join('');
  return chars.match(/.{4}/g)!.join('-');
}

export const newRecoveryCodes = (): string[] => Array.from({ length: RECOVERY_CODE_COUNT }, newCode);

/** The canonical form of what someone typed, or undefined when it cannot be a recovery code. */
export function normalizeRecoveryCode(input: string): string | undefined {
  const code = input.toUpperCase().replace(/[\s-]/g, '').replace(/[IL]/g, '1').replace(/O/g, '0');
  return code.length === CODE_CHARS && [...code].every((c) => ALPHABET.includes(c)) ? code : undefined;
}

export const recoveryCodeHash = (normalized: string): string => tokenHash(normalized);
