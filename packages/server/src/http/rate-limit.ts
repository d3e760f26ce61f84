import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitedError } from '../errors.js';
import type { HttpMetrics } from '../ops/metrics.js';
import type { RateLimitClass } from './route.js';

export type RateLimits = Record<Exclude<RateLimitClass, 'probe'>, number>;

/**
 * Per-client request limits by route class, over a one-minute window. The client is the source
 * address (as resolved through trusted proxies only). In-memory here; the brute-force limits of
 * authentication get their own, shared store with access control.
 */
export function createRateLimiter(limits: RateLimits, metrics: HttpMetrics) {
  const limiters = new Map(
    (Object.keys(limits) as Array<keyof RateLimits>).map((name) => [
      name,
      new RateLimiterMemory({ keyPrefix: `http:${name}`, points: limits[name], duration: 60 }),
    ]),
  );

  return {
    async consume(rateClass: RateLimitClass, clientKey: string): Promise<void> {
      if (rateClass === 'probe') return;
      const limiter = limiters.get(rateClass)!;
      try {
        await limiter.consume(clientKey);
      } catch (rejection) {
        if (!(rejection instanceof RateLimiterRes)) throw rejection;
        metrics.rateLimited.inc({ class: rateClass });
        throw new RateLimitedError(Math.max(1, Math.ceil(rejection.msBeforeNext / 1000)));
      }
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;
