import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  newRecoveryCodes,
  normalizeRecoveryCode,
  RECOVERY_CODE_BITS,
  RECOVERY_CODE_COUNT,
  recoveryCodeHash,
} from './recovery-codes.js';

/**
 * Recovery codes are stored under a plain SHA-256, which OWASP ASVS 5.0 (6.5.2) allows only for
 * lookup secrets of 112 bits or more: these tests hold the codes to that, in their format and in the
 * spread of what is drawn.
 */

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const SHAPE = /^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){5}$/;

describe('recovery codes', () => {
  it('hold 120 random bits each: 24 characters of a 32-symbol alphabet, in six groups of four', () => {
    expect(RECOVERY_CODE_BITS).toBe(120);
    expect(RECOVERY_CODE_BITS).toBeGreaterThanOrEqual(112);
    const codes = newRecoveryCodes();
    expect(codes).toHaveLength(RECOVERY_CODE_COUNT);
    expect(new Set(codes).size).toBe(RECOVERY_CODE_COUNT);
    for (const code of codes) {
      expect(code).toMatch(SHAPE);
      expect(normalizeRecoveryCode(code)).toBe(code.replaceAll('-', ''));
    }
  });

  it('draw every position from the whole alphabet, evenly', () => {
    // 9,600 characters: each symbol is expected 300 times (standard deviation about 17), so the
    // bounds below are about six deviations wide; a fixed, skipped or biased symbol falls far outside.
    const drawn = Array.from({ length: 40 }, newRecoveryCodes)
      .flat()
      .map((code) => code.replaceAll('-', ''));
    const counts = new Map<string, number>();
    for (const code of drawn) for (const c of code) counts.set(c, (counts.get(c) ?? 0) + 1);
    expect([...counts.keys()].sort().join('')).toBe(CROCKFORD);
    for (const [symbol, count] of counts) {
      expect(count, symbol).toBeGreaterThan(200);
      expect(count, symbol).toBeLessThan(400);
    }
    // No position is constant or narrowed (which would cut the entropy while keeping the length).
    for (let position = 0; position < 24; position++) {
      expect(new Set(drawn.map((code) => code[position])).size, `position ${position}`).toBeGreaterThan(24);
    }
  });

  it('read back forgiving case, spaces, dashes and the letters taken for digits; nothing shorter', () => {
    const [code] = newRecoveryCodes() as [string];
    const canonical = code.replaceAll('-', '');
    expect(normalizeRecoveryCode(code.toLowerCase().replaceAll('-', ' '))).toBe(canonical);
    expect(normalizeRecoveryCode(` ${code} `)).toBe(canonical);
    expect(normalizeRecoveryCode('OIL0-1111-2222-3333-4444-5555')).toBe('011011112222333344445555');
    // The 80-bit form (16 characters) is not a recovery code, nor is anything outside the alphabet.
    expect(normalizeRecoveryCode(canonical.slice(0, 16))).toBeUndefined();
    expect(normalizeRecoveryCode(`${canonical}0`)).toBeUndefined();
    expect(normalizeRecoveryCode(`${canonical.slice(0, 23)}U`)).toBeUndefined();
  });

  it('are kept as the SHA-256 of the canonical form, never as typed', () => {
    const [code] = newRecoveryCodes() as [string];
    const canonical = normalizeRecoveryCode(code)!;
    const hash = recoveryCodeHash(canonical);
    expect(hash).toBe(createHash('sha256').update(canonical).digest('hex'));
    expect(hash).not.toContain(canonical);
  });
});
