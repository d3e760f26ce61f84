import { describe, expect, it } from 'vitest';
import { passwordProblem } from './password-policy.js';

describe('password policy', async () => {
  it('accepts a long, unpredictable password', async () => {
    expect(
      await passwordProblem('correct-Horse-battery-staple-71', { email: 'ada@example.com' }),
    ).toBeUndefined();
    expect(await passwordProblem('q8#Lm2!vRz9&Tb4p')).toBeUndefined();
  });

  it('enforces 8 to 256 characters, counting characters rather than bytes', async () => {
    expect((await passwordProblem('Xy7#kq2'))?.code).toBe('too_short');
    expect((await passwordProblem('é'.repeat(8)))?.code).not.toBe('too_short');
    expect((await passwordProblem('a'.repeat(257)))?.code).toBe('too_long');
  });

  it('refuses passwords from the shipped common-password list, whatever their case', async () => {
    // Attack: credential stuffing and spraying try these first.
    for (const common of ['password', 'Password1', 'qwertyuiop', 'iloveyou', 'Sunshine', '123456789']) {
      expect((await passwordProblem(common))?.code, common).toBe('common');
    }
  });

  it('refuses passwords built on the product, organization or account name', async () => {
    // Attack: targeted guessing starts from what the attacker knows about the victim.
    expect(await passwordProblem('Bulwark-2026!Rocks', {})).toMatchObject({
      code: 'contains_context',
      word: 'bulwark',
    });
    expect(await passwordProblem('acmecorp#Zq81Lm', { orgSlug: 'acmecorp' })).toMatchObject({
      word: 'acmecorp',
    });
    expect(await passwordProblem('Umbrella!Zq81Lmx', { orgName: 'Umbrella Holdings' })).toMatchObject({
      word: 'umbrella',
    });
    expect(await passwordProblem('grace.hopper#Zq81', { email: 'grace.hopper@navy.example' })).toMatchObject({
      word: 'grace.hopper',
    });
  });

  it('refuses weak passwords that are in no list', async () => {
    expect((await passwordProblem('aaaaaaaaaaaa'))?.code).toBe('too_weak');
    expect((await passwordProblem('abcd1234abcd'))?.code).toBe('too_weak');
  });

  it('never puts the password in its answer', async () => {
    const secret = 'Sunshine';
    expect(JSON.stringify(await passwordProblem(secret))).not.toContain(secret);
  });
});
