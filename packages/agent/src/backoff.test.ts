import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createBackoff } from './backoff.js';

/** A backoff on a clock the test moves; each delay is waited out before the next attempt. */
function played(randoms: () => number, failTakesMs = 0) {
  let clock = 0;
  const backoff = createBackoff({ baseMs: 1000, capMs: 60_000, random: randoms, now: () => clock });
  return {
    backoff,
    /** One failed attempt: the delay drawn, then the time it and the attempt take. */
    fail() {
      const delay = backoff.next();
      const outage = clock;
      clock += delay + failTakesMs;
      return { delay, outage };
    },
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

const windowFor = (outageMs: number) =>
  Math.min(60_000, 1000 * 2 ** Math.floor(Math.log2(1 + outageMs / 1000)));

describe('backoff (full jitter)', () => {
  it('keeps every delay within [0, window], the window doubling as the outage doubles, never past the cap', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 80 }),
        fc.integer({ min: 0, max: 5000 }),
        (randoms, failTakesMs) => {
          let i = 0;
          const play = played(() => randoms[i++] ?? 0.5, failTakesMs);
          for (let n = 0; n < randoms.length; n++) {
            const { delay, outage } = play.fail();
            expect(delay).toBeGreaterThanOrEqual(0);
            expect(delay).toBeLessThanOrEqual(windowFor(outage));
            expect(delay).toBeLessThanOrEqual(60_000);
          }
        },
      ),
    );
  });

  it('keeps the window short while the outage is short, however many attempts fail in it', () => {
    // The unlucky agent of a large fleet: fifty tiny draws, fifty failures within the first second.
    // Counting attempts, its next window would be the cap (60 s); it is still the base window.
    let draws = 0;
    const play = played(() => (draws++ < 50 ? 0.001 : 0.999999));
    const failures = Array.from({ length: 50 }, () => play.fail());
    expect(Math.max(...failures.map((f) => f.outage))).toBeLessThan(1000);
    expect(play.backoff.attempt).toBe(50);
    expect(play.fail().delay).toBeLessThan(1000);
  });

  it('grows the window exponentially as the outage lasts, up to the cap', () => {
    const play = played(() => 0.999999);
    const windows = Array.from({ length: 10 }, () => play.fail().delay);
    // Each delay is waited out, so the outage roughly doubles each time, and so does the window.
    expect(windows.slice(0, 8)).toEqual([999, 999, 1999, 3999, 7999, 15_999, 31_999, 59_999]);
    expect(Math.max(...windows)).toBe(59_999);
  });

  it('starts from the base window again after reset (a welcome)', () => {
    const play = played(() => 0.999);
    for (let n = 0; n < 10; n++) play.fail();
    expect(play.backoff.next()).toBeGreaterThan(1000);
    play.backoff.reset();
    expect(play.backoff.attempt).toBe(0);
    expect(play.backoff.next()).toBeLessThanOrEqual(1000);
  });

  it('never exceeds the window even with a broken random source', () => {
    expect(createBackoff({ random: () => 7, now: () => 0 }).next()).toBeLessThanOrEqual(1000);
    expect(createBackoff({ random: () => -3 }).next()).toBe(0);
  });
});
