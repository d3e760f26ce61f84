import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { iso, OrgSlug, Timestamp } from '../http/schemas.js';
import { DASHBOARD_RANGES, type DashboardRange, type DashboardService } from './dashboard.service.js';

const RANGES = Object.keys(DASHBOARD_RANGES) as [DashboardRange, ...DashboardRange[]];

const Named = z.object({ id: z.string(), name: z.string() });

const DashboardView = z.object({
  range: z.enum(RANGES),
  from: Timestamp,
  to: Timestamp,
  bucketSeconds: z.number().int(),
  /** Null when the caller may not read commands on any agent. */
  commands: z
    .object({
      bucketStarts: z.array(Timestamp),
      succeeded: z.array(z.number().int()),
      failed: z.array(z.number().int()),
      other: z.array(z.number().int()),
    })
    .nullable(),
  failed: z
    .object({
      total: z.number().int(),
      commands: z.array(
        z.object({
          id: z.string(),
          agent: Named,
          service: z.string(),
          action: z.string(),
          status: z.enum(['failed', 'timed_out']),
          message: z.string(),
          requestedBy: z.object({
            id: z.string(),
            email: z.string().nullable(),
            name: z.string().nullable(),
          }),
          at: Timestamp,
        }),
      ),
    })
    .nullable(),
  agents: z
    .object({
      online: z.number().int(),
      offline: z.number().int(),
      disabled: z.number().int(),
      problems: z.array(
        Named.extend({ status: z.enum(['offline', 'disabled']), lastSeenAt: Timestamp.nullable() }),
      ),
    })
    .nullable(),
  services: z
    .object({
      notUpTotal: z.number().int(),
      notUp: z.array(
        Named.extend({
          agent: Named,
          status: z.enum(['degraded', 'down', 'unknown', 'up']),
          message: z.string(),
          updatedAt: Timestamp,
        }),
      ),
    })
    .nullable(),
  approvals: z.object({ pending: z.number().int() }).nullable(),
  critical: z
    .array(
      z.object({
        id: z.string(),
        seq: z.number().int(),
        ts: Timestamp,
        action: z.string(),
        outcome: z.string(),
        actor: z.object({ type: z.string(), id: z.string().nullable(), display: z.string().nullable() }),
        target: z.object({
          type: z.string().nullable(),
          id: z.string().nullable(),
          display: z.string().nullable(),
        }),
      }),
    )
    .nullable(),
});

/** The dashboard over HTTP (UI-1): one read, every part authorized as the list it summarizes. */
export function dashboardRoutes(dashboard: DashboardService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/dashboard',
      operationId: 'getDashboard',
      summary:
        'Is anything wrong: commands over time, failures of the period, agents offline or disabled, services not up, approvals waiting, critical audit events (each part only as far as you may see it)',
      tags: ['orgs'],
      // Every member may open the dashboard; each part is then decided on its own permission.
      access: { permission: 'org:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({
        range: z
          .enum(RANGES, { error: 'is not a period the dashboard offers (1h, 24h or 7d)' })
          .default('24h'),
      }),
      response: { 200: DashboardView },
      handler: async ({ principal, request, query }) => {
        const s = await dashboard.summary(callerOf(principal, request), query.range);
        return {
          range: s.range,
          from: iso(s.from),
          to: iso(s.to),
          bucketSeconds: s.bucketMs / 1000,
          commands: s.commands && {
            bucketStarts: s.commands.bucketStarts.map(iso),
            succeeded: s.commands.succeeded,
            failed: s.commands.failed,
            other: s.commands.other,
          },
          failed: s.failed && {
            total: s.failed.total,
            commands: s.failed.commands.map((c) => ({ ...c, at: iso(c.at) })),
          },
          agents: s.agents && {
            ...s.agents,
            problems: s.agents.problems.map((a) => ({
              ...a,
              lastSeenAt: a.lastSeenAt === null ? null : iso(a.lastSeenAt),
            })),
          },
          services: s.services && {
            notUpTotal: s.services.notUpTotal,
            notUp: s.services.notUp.map((svc) => ({ ...svc, updatedAt: iso(svc.updatedAt) })),
          },
          approvals: s.approvals,
          critical:
            s.critical === null
              ? null
              : s.critical.map((row) => ({
                  id: row.id,
                  seq: row.seq,
                  ts: iso(row.ts),
                  action: row.action,
                  outcome: row.outcome,
                  actor: { type: row.actor_type, id: row.actor_id, display: row.actor_display },
                  target: { type: row.target_type, id: row.target_id, display: row.target_display },
                })),
        };
      },
    }),
  ];
}
