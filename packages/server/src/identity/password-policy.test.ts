import { describe, expect, it } from 'vitest';
import { passwordProblem } from './password-policy.js';

describe('password policy', () => {
  it('accepts a long, unpredictable password', () => {
    expect(passwordProblem('correct-Horse-battery-staple-71', { email: 'ada@example.com' })).toBeUndefined();
    expect(passwordProblem('q8#Lm2!vRz9&Tb4p')).toBeUndefined();
  });

  it('enforces 8 to 256 characters, counting characters rather than bytes', () => {
    expect(passwordProblem('Xy7#kq2')?.code).toBe('too_short');
    expect(passwordProblem('é'.repeat(8))?.code).not.toBe('too_short');
    expect(passwordProblem('a'.repeat(257))?.code).toBe('too_long');
  });

  it('refuses passwords from the shipped common-password list, whatever their case', () => {
    // Attack: credential stuffing and spraying try these first.
    for (const common of ['password', 'Password1', 'qwertyuiop', 'iloveyou', 'Sunshine', '123456789']) {
      expect(passwordProblem(common)?.code, common).toBe('common');
    }
  });

  it('refuses passwords built on the product, organization or account name', () => {
    // Attack: targeted guessing starts from what the attacker knows about the victim.
    expect(passwordProblem('Bulwark-2026!Rocks', {})).toMatchObject({
      code: 'contains_context',
      word: 'bulwark',
    });
    expect(passwordProblem('acmecorp#Zq81Lm', { orgSlug: 'acmecorp' })).toMatchObject({ word: 'acmecorp' });
    expect(passwordProblem('Umbrella!Zq81Lmx', { orgName: 'Umbrella Holdings' })).toMatchObject({
      word: 'umbrella',
    });
    expect(passwordProblem('grace.hopper#Zq81', { email: 'grace.hopper@navy.example' })).toMatchObject({
      word: 'grace.hopper',
    });
  });

  it('refuses weak passwords that are in no list', () => {
    expect(passwordProblem('aaaaaaaaaaaa')?.code).toBe('too_weak');
    expect(passwordProblem('abcd1234abcd')?.code).toBe('too_weak');
  });

  it('never puts the password in its answer', () => {
    const secret = 'Sunshine';
    expect(JSON.stringify(passwordProblem(secret))).not.toContain(secret);
  });
});
