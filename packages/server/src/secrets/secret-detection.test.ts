import { generateToken } from '@bulwark/protocol';
import { describe, expect, it } from 'vitest';
import { credentialShapeOf, redactCredentials, valueLooksSecret } from './secret-detection.js';

describe('recognizing credentials (AUD-2, AGT-5)', () => {
  it('finds each shape, including where a word boundary or case would hide it', () => {
    const cases: Array<[string, string]> = [
      [`token=${generateToken('bwk')}`, 'a Bulwark token'],
      // URL-encoded: `%3D` then the token, with no word boundary before it.
      [`q%3D${generateToken('bws')}`, 'a Bulwark token'],
      ['a.eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.sig', 'a JSON Web Token'],
      ['-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn', 'a PEM private key'],
      ['-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF', 'a PEM private key'],
      ['basic dXNlcjpwYXNzd29yZA==', 'a basic-auth credential'],
      ['redis://:s3cret-pass@cache.internal:6379', 'a URL with a password'],
      ['postgres://app:s3cret@db.internal/prod', 'a URL with a password'],
    ];
    for (const [value, shape] of cases) {
      expect(credentialShapeOf(value), value).toBe(shape);
      const { text } = redactCredentials(value);
      expect(text, value).toContain('[redacted');
      expect(credentialShapeOf(text), text).toBeUndefined();
    }
    // Reported service configuration: a Redis URL with a password is a secret, not a URL to show.
    expect(valueLooksSecret('redis://:s3cret-pass@cache.internal:6379')).toBe(true);
    expect(valueLooksSecret('redis://cache.internal:6379')).toBe(false);
  });

  it('cuts only the credential and keeps the text around it', () => {
    const token = generateToken('bwk');
    expect(redactCredentials(`curl/8.5 ${token} x`).text).toBe('curl/8.5 [redacted: a Bulwark token] x');
    expect(redactCredentials('-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY----- after').text).toBe(
      '[redacted: a PEM private key] after',
    );
  });

  it('scans a megabyte of text built to make a pattern backtrack, in one pass', () => {
    // Attack: text an attacker controls (command params, audit details) shaped so that a pattern
    // re-scans the rest of the input from every position: quadratic work that stalls the event loop
    // for minutes. Each of these finishes within the test's own timeout only if the shapes are linear.
    const megabyte = 1024 * 1024;
    const adversarial = ['-eyJ', 'eyJa.', 'bwk_', '://a:', 'Bearer ', 'basic ', '-----BEGIN A'].map((unit) =>
      unit.repeat(Math.ceil(megabyte / unit.length)),
    );
    for (const text of adversarial) {
      expect(() => credentialShapeOf(text)).not.toThrow();
      expect(typeof redactCredentials(text).text).toBe('string');
    }
  });
});
