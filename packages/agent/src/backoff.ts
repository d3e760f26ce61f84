/**
 * Reconnect delays (AGT-3): exponential backoff with FULL jitter, delay = random(0, min(cap, base·2^n)).
 *
 * Full jitter (rather than "exponential plus a little noise") spreads a fleet that lost the server at
 * the same instant evenly over the whole window, so a server restart is not met by every agent at
 * once ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
 */

export interface BackoffOptions {
  /** The first window, in milliseconds. */
  baseMs?: number;
  /** No window is ever longer than this. */
  capMs?: number;
  /** A source of numbers in [0, 1); injectable so tests can pin the bounds. */
  random?: () => number;
}

export interface Backoff {
  /** The delay before the next attempt; each call widens the window until it reaches the cap. */
  next(): number;
  /** Called after a connection got `welcome`: the next failure starts from the base window again. */
  reset(): void;
  /** Failed attempts since the last reset. */
  readonly attempt: number;
}

export const DEFAULT_BACKOFF_BASE_MS = 1000;
export const DEFAULT_BACKOFF_CAP_MS = 60_000;

// 2^30 s is far beyond any cap; stopping the exponent there keeps base·2^n a finite, exact number.
const MAX_EXPONENT = 30;

export function createBackoff(options: BackoffOptions = {}): Backoff {
  const baseMs = options.baseMs ?? DEFAULT_BACKOFF_BASE_MS;
  const capMs = options.capMs ?? DEFAULT_BACKOFF_CAP_MS;
  const random = options.random ?? Math.random;
  if (!(baseMs > 0) || !(capMs >= baseMs)) throw new RangeError('backoff: need 0 < baseMs <= capMs');
  let attempt = 0;
  return {
    next() {
      const window = Math.min(capMs, baseMs * 2 ** Math.min(attempt, MAX_EXPONENT));
      attempt++;
      // A random source outside [0, 1) must not push a delay outside the window.
      const r = Math.min(Math.max(random(), 0), 1);
      return Math.floor(r * window);
    },
    reset() {
      attempt = 0;
    },
    get attempt() {
      return attempt;
    },
  };
}
