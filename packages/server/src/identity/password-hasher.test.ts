import { describe, expect, it } from 'vitest';
import { ARGON2_PARAMS, createPasswordHasher, HashingBusyError } from './password-hasher.js';

describe('password hasher', () => {
  it('hashes with argon2id at the OWASP parameters and verifies', async () => {
    const hasher = createPasswordHasher({ concurrency: 1 });
    const stored = await hasher.hash('correct-Horse-battery-staple-71');
    expect(stored).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(ARGON2_PARAMS.memoryCost! * 1024).toBeGreaterThanOrEqual(19 * 1024 * 1024);
    expect(await hasher.verify(stored, 'correct-Horse-battery-staple-71')).toBe(true);
    expect(await hasher.verify(stored, 'correct-Horse-battery-staple-72')).toBe(false);
    expect(await hasher.verify('not a hash', 'anything')).toBe(false);
    expect(await hasher.hash('same')).not.toBe(await hasher.hash('same')); // salted
  });

  it('runs at most `concurrency` hashes and refuses beyond the queue at once with 503', async () => {
    // Attack: a login flood. Beyond the bound, attempts fail fast instead of occupying every core.
    const hasher = createPasswordHasher({ concurrency: 1, queue: 2 });
    const attempts = Array.from({ length: 6 }, (_, i) => hasher.verifyNothing(`guess-${i}`));
    expect(hasher.load()).toMatchObject({ active: 1, waiting: 2 });
    const outcomes = await Promise.allSettled(attempts);
    const refused = outcomes.filter((o) => o.status === 'rejected');
    expect(refused).toHaveLength(3);
    for (const o of refused) expect((o as PromiseRejectedResult).reason).toBeInstanceOf(HashingBusyError);
    expect((refused[0] as PromiseRejectedResult).reason).toMatchObject({ status: 503, code: 'auth_busy' });
    expect(hasher.load()).toMatchObject({ active: 0, waiting: 0 });
  });

  it('tells a sign-in up front when its hash would be refused, so it can stop before any other work', async () => {
    const hasher = createPasswordHasher({ concurrency: 1, queue: 1 });
    expect(() => hasher.assertCapacity()).not.toThrow();
    const running = hasher.verifyNothing('first'); // takes the slot
    expect(() => hasher.assertCapacity()).not.toThrow(); // one may still wait
    const queued = hasher.verifyNothing('second');
    expect(() => hasher.assertCapacity()).toThrow(HashingBusyError);
    await Promise.all([running, queued]);
    expect(() => hasher.assertCapacity()).not.toThrow();
  });

  it('does real argon2 work for an unknown account', async () => {
    const hasher = createPasswordHasher({ concurrency: 1 });
    const stored = await hasher.hash('x');
    // Warm both paths, then compare their cost: the dummy path is a real verify, not a shortcut.
    await hasher.verifyNothing('warm');
    await hasher.verify(stored, 'warm');
    // Interleaved, so whatever else the machine is doing weighs on both paths alike.
    // The fastest of each is compared: load only ever adds time, so a minimum is the path's own cost.
    let known = Number.POSITIVE_INFINITY;
    let unknown = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 8; i++) {
      let started = process.hrtime.bigint();
      await hasher.verify(stored, 'wrong');
      known = Math.min(known, Number(process.hrtime.bigint() - started));
      started = process.hrtime.bigint();
      await hasher.verifyNothing('wrong');
      unknown = Math.min(unknown, Number(process.hrtime.bigint() - started));
    }
    expect(await hasher.verifyNothing('x')).toBe(false);
    // Not a timing assertion on wall clock: the two costs are compared with each other, same run.
    expect(unknown / known).toBeGreaterThan(0.5);
    expect(unknown / known).toBeLessThan(2);
  });
});
