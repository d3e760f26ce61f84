import { createHash, timingSafeEqual } from 'node:crypto';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import type { AuditService } from '../audit/audit.service.js';
import { NotFoundError, UnauthenticatedError } from '../errors.js';
import { auditContextOf, bearerTokenOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import type { Readiness } from './readiness.js';

const CheckStatus = z.enum(['ok', 'down']);
const ReadinessView = z.object({
  status: z.enum(['ready', 'unavailable']),
  checks: z.object({
    database: CheckStatus,
    migrations: CheckStatus,
    accepting: CheckStatus,
    redis: CheckStatus.optional(),
  }),
});

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Compares a presented token with the configured one in constant time (hashing first evens out lengths). */
export function tokenMatches(presented: string, expected: string): boolean {
  return timingSafeEqual(sha256(presented), sha256(expected));
}

export interface OpsRouteDeps {
  readiness: () => Promise<Readiness>;
  registry: Registry;
  metricsToken: string | undefined;
  audit: AuditService;
}

/**
 * One readiness check at a time, shared by every probe that arrives while it runs: the route is public
 * and unlimited (probes must always get through), so a flood of probes must not become a flood of
 * database queries competing with real work.
 */
function singleFlight(check: () => Promise<Readiness>): () => Promise<Readiness> {
  let running: Promise<Readiness> | undefined;
  return () => {
    running ??= check().finally(() => {
      running = undefined;
    });
    return running;
  };
}

export function opsRoutes(deps: OpsRouteDeps): RouteDefinition[] {
  const readiness = singleFlight(deps.readiness);
  return [
    defineRoute({
      method: 'GET',
      url: '/healthz',
      operationId: 'getHealth',
      summary: 'Liveness: the process is up and its event loop answers',
      tags: ['ops'],
      access: { public: 'liveness probe for orchestrators; reveals nothing about the server' },
      rateLimit: 'probe',
      response: { 200: z.object({ status: z.literal('ok') }) },
      handler: () => ({ status: 'ok' as const }),
    }),

    defineRoute({
      method: 'GET',
      url: '/readyz',
      operationId: 'getReadiness',
      summary: 'Readiness: database, migrations, Redis when configured, and not shutting down',
      tags: ['ops'],
      access: { public: 'readiness probe for load balancers; states only which dependency is down' },
      rateLimit: 'probe',
      response: { 200: ReadinessView, 503: ReadinessView },
      handler: async ({ reply }) => {
        const { ready, checks } = await readiness();
        reply.code(ready ? 200 : 503);
        return { status: ready ? 'ready' : 'unavailable', checks };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/metrics',
      operationId: 'getMetrics',
      summary: 'Prometheus metrics; requires the metrics token as a bearer credential',
      tags: ['ops'],
      access: { public: 'guarded by BULWARK_METRICS_TOKEN instead of a user session (PLAT-4)' },
      rateLimit: 'read',
      response: {
        200: rawResponse('text/plain; version=0.0.4; charset=utf-8', 'Prometheus text exposition'),
      },
      handler: async ({ request }) => {
        // Without a token, metrics live only on the loopback metrics port: this route does not exist.
        if (!deps.metricsToken) throw new NotFoundError('There is no such route.');
        const presented = bearerTokenOf(request) || undefined;
        if (presented === undefined) throw new UnauthenticatedError('The metrics token is required.');
        if (!tokenMatches(presented, deps.metricsToken)) {
          // A wrong token is someone guessing or a scraper misconfigured; either way an operator should see it.
          await deps.audit.record({
            actor: { type: 'anonymous' },
            action: 'ops.metrics_auth_failed',
            target: { type: 'endpoint', id: '/metrics' },
            outcome: 'failure',
            context: auditContextOf(request),
          });
          throw new UnauthenticatedError('The metrics token is not valid.');
        }
        return deps.registry.metrics();
      },
    }),
  ];
}
