import { describe, expect, it } from 'vitest';
import { generateToken, isWellFormedToken, tokenHash } from './tokens.js';

describe('tokens', () => {
  it('carries its kind, 256 random bits and a checksum', () => {
    const token = generateToken('bwk');
    expect(token).toMatch(/^bwk_[A-Za-z0-9_-]{49}$/);
    expect(Buffer.from(token.slice(4, 47), 'base64url')).toHaveLength(32);
    expect(isWellFormedToken(token, 'bwk')).toBe(true);
    expect(new Set(Array.from({ length: 1000 }, () => generateToken('bws'))).size).toBe(1000);
  });

  it('rejects a mistyped token, a token of another kind, and a body moved under another prefix', () => {
    const token = generateToken('bwk');
    const typo = token.slice(0, 10) + (token[10] === 'A' ? 'B' : 'A') + token.slice(11);
    expect(isWellFormedToken(typo, 'bwk')).toBe(false);
    expect(isWellFormedToken(token, 'bwr')).toBe(false);
    // Attack: reuse a leaked API key's body as a registration token.
    expect(isWellFormedToken(`bwr_${token.slice(4)}`, 'bwr')).toBe(false);
    expect(isWellFormedToken(`${token}x`, 'bwk')).toBe(false);
    expect(isWellFormedToken('', 'bwk')).toBe(false);
  });

  it('is stored as a SHA-256 that reveals nothing of it', () => {
    const token = generateToken('bws');
    expect(tokenHash(token)).toMatch(/^[0-9a-f]{64}$/);
    expect(tokenHash(token)).toBe(tokenHash(token));
    expect(tokenHash(token)).not.toContain(token.slice(4, 20));
  });
});
