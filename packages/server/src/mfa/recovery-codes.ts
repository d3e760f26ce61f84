import { randomBytes } from 'node:crypto';
import { tokenHash } from '@bulwark/protocol';

/**
 * Recovery codes (MFA-3): ten single-use codes of 120 random bits, shown once, stored as SHA-256.
 * OWASP ASVS 5.0 (6.5.2) allows a plain hash for a lookup secret only from 112 bits of entropy:
 * below that, a copy of the database could be searched for the codes, and each would need a salted
 * slow hash, which cannot be looked up by value (every attempt would verify against every unused
 * code). At 120 bits there is nothing to brute-force, so a code is found by its hash and spent by one
 * guarded UPDATE, as for tokens. Written in Crockford's base32 in six groups of four; read back
 * forgiving case, spaces, dashes and the letters people confuse with digits.
 */

export const RECOVERY_CODE_COUNT = 10;
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const BITS_PER_CHAR = Math.log2(ALPHABET.length);
export const RECOVERY_CODE_CHARS = 24;
/** What a code holds: 24 characters of 5 bits. */
export const RECOVERY_CODE_BITS = RECOVERY_CODE_CHARS * BITS_PER_CHAR;

function newCode(): string {
  const bytes = randomBytes(RECOVERY_CODE_CHARS);
  // 256 is a multiple of 32: each byte's low 5 bits are uniform.
  const chars = [...bytes].map((byte) => ALPHABET[byte % 32]).join('');
  return chars.match(/.{4}/g)!.join('-');
}

export const newRecoveryCodes = (): string[] => Array.from({ length: RECOVERY_CODE_COUNT }, newCode);

/** The canonical form of what someone typed, or undefined when it cannot be a recovery code. */
export function normalizeRecoveryCode(input: string): string | undefined {
  const code = input.toUpperCase().replace(/[\s-]/g, '').replace(/[IL]/g, '1').replace(/O/g, '0');
  return code.length === RECOVERY_CODE_CHARS && [...code].every((c) => ALPHABET.includes(c))
    ? code
    : undefined;
}

export const recoveryCodeHash = (normalized: string): string => tokenHash(normalized);
