import { RateLimitedError } from '../errors.js';
import type { HttpMetrics } from '../ops/metrics.js';
import { createWindowLimiter, type LimiterStore, type WhenStoreDown } from './rate-limiters.js';
import type { RateLimitClass } from './route.js';

export type RateLimits = Record<Exclude<RateLimitClass, 'probe'>, number>;

/**
 * With Redis down, reads go on under a per-instance count (the console and the API stay usable), while
 * everything that changes state, signs in, mints tokens or streams exports is refused with 503
 * (`auth_unavailable` on the `auth` class, `rate_limit_unavailable` on the others): those are what an
 * attacker wants unlimited (invariant 9).
 */
const WHEN_STORE_DOWN: Record<keyof RateLimits, WhenStoreDown> = {
  read: 'local',
  write: 'refuse',
  auth: 'refuse',
  export: 'refuse',
};

/**
 * Per-client request limits by route class, over a one-minute window. The client is the source
 * address (as resolved through trusted proxies only), and also the API key when one is presented.
 * Shared by every instance through Redis when the deployment has one (rate-limiters.ts).
 */
export function createRateLimiter(limits: RateLimits, metrics: HttpMetrics, store: LimiterStore = {}) {
  const limiters = new Map(
    (Object.keys(limits) as Array<keyof RateLimits>).map((name) => [
      name,
      createWindowLimiter(store, {
        name: `http:${name}`,
        points: limits[name],
        windowSeconds: 60,
        whenStoreDown: WHEN_STORE_DOWN[name],
        ...(name === 'auth' ? { unavailableCode: 'auth_unavailable' as const } : {}),
      }),
    ]),
  );

  return {
    async consume(rateClass: RateLimitClass, clientKey: string): Promise<void> {
      if (rateClass === 'probe') return;
      const admission = await limiters.get(rateClass)!.take(clientKey);
      if (admission.allowed) return;
      metrics.rateLimited.inc({ class: rateClass });
      throw new RateLimitedError(admission.retryAfterSeconds);
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;
