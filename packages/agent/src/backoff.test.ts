import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createBackoff } from './backoff.js';

describe('backoff (full jitter)', () => {
  it('keeps every delay within [0, min(cap, base·2^n)]', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 80 }),
        (randoms) => {
          let i = 0;
          const backoff = createBackoff({ baseMs: 1000, capMs: 60_000, random: () => randoms[i++] ?? 0.5 });
          for (let n = 0; n < randoms.length; n++) {
            const delay = backoff.next();
            expect(delay).toBeGreaterThanOrEqual(0);
            expect(delay).toBeLessThanOrEqual(Math.min(60_000, 1000 * 2 ** n));
          }
        },
      ),
    );
  });

  it('reaches the window edge with the largest random value and never passes the cap', () => {
    const backoff = createBackoff({ random: () => 0.999999999 });
    const delays = Array.from({ length: 12 }, () => backoff.next());
    expect(delays.slice(0, 7)).toEqual([999, 1999, 3999, 7999, 15_999, 31_999, 59_999]);
    expect(Math.max(...delays)).toBe(59_999);
  });

  it('stays within the cap after very many attempts', () => {
    const backoff = createBackoff({ random: () => 1 });
    for (let n = 0; n < 10_000; n++) expect(backoff.next()).toBeLessThanOrEqual(60_000);
  });

  it('starts from the base window again after reset (a welcome)', () => {
    const backoff = createBackoff({ random: () => 0.999 });
    for (let n = 0; n < 10; n++) backoff.next();
    expect(backoff.next()).toBeGreaterThan(1000);
    backoff.reset();
    expect(backoff.attempt).toBe(0);
    expect(backoff.next()).toBeLessThanOrEqual(1000);
  });

  it('never exceeds the window even with a broken random source', () => {
    const backoff = createBackoff({ random: () => 7 });
    expect(backoff.next()).toBeLessThanOrEqual(1000);
    expect(createBackoff({ random: () => -3 }).next()).toBe(0);
  });
});
