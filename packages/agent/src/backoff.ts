/**
 * Reconnect delays (AGT-3): exponential backoff with FULL jitter, delay = random(0, window), the window
 * doubling up to a cap (60 s).
 *
 * Full jitter (rather than "exponential plus a little noise") spreads a fleet that lost the server at
 * the same instant evenly over the whole window, so a server restart is not met by every agent at
 * once ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
 *
 * The window doubles as the outage doubles (window = base·2^n, n = floor(log2(1 + outage/base))),
 * not with every failed attempt. Counting attempts, a few agents out of thousands draw several tiny
 * delays in a row, fail several times within the first seconds of a short outage, and end up with a
 * window of 32–60 s: bench/fleet measured a whole fleet back 12–20 s after a restart in some runs and
 * 61 s in others, all handshakes welcomed, the tail made only of such agents. Tied to the outage's
 * length, the window stays short while the outage is short, and still reaches the cap when it lasts.
 */

export interface BackoffOptions {
  /** The first window, in milliseconds. */
  baseMs?: number;
  /** No window is ever longer than this. */
  capMs?: number;
  /** A source of numbers in [0, 1); injectable so tests can pin the bounds. */
  random?: () => number;
  /** Milliseconds; injectable so tests can play an outage of any length. */
  now?: () => number;
}

export interface Backoff {
  /** The delay before the next attempt; each call widens the window until it reaches the cap. */
  next(): number;
  /** Called after a connection got `welcome`: the next outage starts from the base window again. */
  reset(): void;
  /** Failed attempts since the last reset (for the logs; the window depends on the outage's length). */
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
  const now = options.now ?? Date.now;
  if (!(baseMs > 0) || !(capMs >= baseMs)) throw new RangeError('backoff: need 0 < baseMs <= capMs');
  let attempt = 0;
  let outageStartedAt: number | undefined;
  return {
    next() {
      const at = now();
      outageStartedAt ??= at;
      const outage = Math.max(0, at - outageStartedAt);
      const exponent = Math.min(MAX_EXPONENT, Math.floor(Math.log2(1 + outage / baseMs)));
      const window = Math.min(capMs, baseMs * 2 ** exponent);
      attempt++;
      // A random source outside [0, 1) must not push a delay outside the window.
      const r = Math.min(Math.max(random(), 0), 1);
      return Math.floor(r * window);
    },
    reset() {
      attempt = 0;
      outageStartedAt = undefined;
    },
    get attempt() {
      return attempt;
    },
  };
}
