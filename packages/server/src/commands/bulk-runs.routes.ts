import { AgentName } from '@bulwark/protocol';
import { z } from 'zod';
import { callerOf, requesterOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { idOf, iso, OrgSlug, Timestamp } from '../http/schemas.js';
import type { BulkRunsService } from './bulk-runs.service.js';
import type { BulkRunRow, BulkTarget, RunDecision, TargetCounts } from './bulk-runs.store.js';
import { COMMAND_STATUSES } from './command-status.js';

const BulkRunId = idOf('blk');
const RUN_STATUSES = [
  'awaiting_approval',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'rejected',
  'expired',
] as const;
const TARGET_STATUSES = COMMAND_STATUSES;

/** "10" or "25%": a count or a share of the targets. Numbers are taken as counts. */
const LimitSpec = z.union([z.number().int().min(0).max(99_999).transform(String), z.string().max(8)]);

const Person = z.object({ id: z.string(), email: z.string(), name: z.string() });

const BulkRunSummary = z.object({
  id: z.string(),
  selector: z.string(),
  service: z.string(),
  action: z.string(),
  params: z.record(z.string(), z.unknown()),
  reason: z.string(),
  risk: z.enum(['low', 'medium', 'high', 'critical']),
  status: z.enum(RUN_STATUSES),
  requestedBy: Person,
  maxConcurrency: z.object({ asked: z.string(), resolved: z.number() }),
  maxErrors: z.object({ asked: z.string(), resolved: z.number() }),
  targetCount: z.number(),
  /** Targets by the status of their command (only those the reader may see). */
  counts: z.record(z.string(), z.number()),
  /** Empty while the run goes on as asked; `error_threshold` or `cancelled` once it stopped early. */
  stopReason: z.string(),
  createdAt: Timestamp,
  finishedAt: Timestamp.nullable(),
});

const BulkRunView = BulkRunSummary.extend({
  requiredApprovals: z.number(),
  approvals: z.array(
    z.object({ by: Person, decision: z.enum(['approved', 'rejected']), comment: z.string(), at: Timestamp }),
  ),
  targets: z.array(
    z.object({
      commandId: z.string(),
      agent: z.object({ id: z.string(), name: z.string() }),
      status: z.enum(TARGET_STATUSES),
      exitCode: z.number().nullable(),
      message: z.string(),
      startedAt: Timestamp.nullable(),
      finishedAt: Timestamp.nullable(),
    }),
  ),
});

const Decision = z.strictObject({ comment: z.string().max(500).default('') });
const Rejection = z.strictObject({
  comment: z.string().trim().min(1, 'say why the run is rejected').max(500),
});

export function bulkRunsRoutes(deps: { bulkRuns: BulkRunsService }): RouteDefinition[] {
  const { bulkRuns } = deps;
  const OrgRun = z.strictObject({ org: OrgSlug, run: BulkRunId });

  const personOf = (people: Map<string, { email: string; name: string }>, id: string) => {
    const person = people.get(id);
    return { id, email: person?.email ?? '', name: person?.name ?? '' };
  };

  function summaryOf(
    run: BulkRunRow,
    counts: TargetCounts,
    people: Map<string, { email: string; name: string }>,
  ) {
    return {
      id: run.id,
      selector: run.selector,
      service: run.service,
      action: run.action,
      params: JSON.parse(run.params) as Record<string, unknown>,
      reason: run.reason,
      risk: run.risk,
      status: run.status,
      requestedBy: personOf(people, run.requested_by),
      maxConcurrency: { asked: run.max_concurrency_spec, resolved: run.max_concurrency },
      maxErrors: { asked: run.max_errors_spec, resolved: run.max_errors },
      // The targets the reader may see: those outside their scope are not counted either.
      targetCount: Object.values(counts).reduce((total, n) => total + (n ?? 0), 0),
      counts: counts as Record<string, number>,
      stopReason: run.stop_reason,
      createdAt: iso(run.created_at),
      finishedAt: run.finished_at === null ? null : iso(run.finished_at),
    };
  }

  async function viewOf(run: BulkRunRow, targets: BulkTarget[], decisions: RunDecision[]) {
    const people = await bulkRuns.peopleOf([run.requested_by, ...decisions.map((d) => d.user_id)]);
    const counts: TargetCounts = {};
    for (const target of targets) counts[target.status] = (counts[target.status] ?? 0) + 1;
    return {
      ...summaryOf(run, counts, people),
      requiredApprovals: targets[0]?.required_approvals ?? 0,
      approvals: decisions.map((d) => ({
        by: personOf(people, d.user_id),
        decision: d.decision,
        comment: d.comment,
        at: iso(d.created_at),
      })),
      targets: targets.map((target) => ({
        commandId: target.id,
        agent: { id: target.agent_id, name: target.agent_name },
        status: target.status,
        exitCode: target.exit_code,
        message: target.message,
        startedAt: target.started_at === null ? null : iso(target.started_at),
        finishedAt: target.finished_at === null ? null : iso(target.finished_at),
      })),
    };
  }

  const decision = (verb: 'approve' | 'reject') =>
    defineRoute({
      method: 'POST',
      url: `/api/orgs/:org/bulk-runs/:run/${verb}`,
      operationId: `${verb}BulkRun`,
      summary:
        verb === 'approve'
          ? "Approve someone else's bulk run: the approval covers every target, so it must be yours to give on each"
          : "Reject someone else's bulk run, saying why: no target runs",
      tags: ['commands'],
      access: { permission: 'approvals:decide' },
      rateLimit: 'write',
      params: OrgRun,
      body: verb === 'reject' ? Rejection : Decision,
      response: { 200: BulkRunView },
      handler: async ({ principal, request, params, body }) => {
        const caller = requesterOf(principal, request);
        await bulkRuns[verb](caller, params.run, body.comment);
        const { run, targets, decisions } = await bulkRuns.view(caller, params.run, 'approvals:decide');
        return viewOf(run, targets, decisions);
      },
    });

  return [
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/bulk-runs',
      operationId: 'createBulkRun',
      summary:
        'Run an action on every agent a label selector matches, a few at a time (maxConcurrency), stopping once more than maxErrors fail; asked and approved once for all',
      tags: ['commands'],
      access: { permission: 'commands:create' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({
        selector: z.string().min(1).max(1000),
        service: AgentName,
        action: AgentName,
        params: z.record(z.string(), z.unknown()).default({}),
        reason: z.string().max(500).default(''),
        confirm: z.boolean().default(false),
        maxConcurrency: LimitSpec.default('10%'),
        maxErrors: LimitSpec.default('0'),
      }),
      response: { 201: BulkRunView },
      handler: async ({ principal, request, body }) => {
        const caller = requesterOf(principal, request);
        const created = await bulkRuns.create(caller, body);
        const { run, targets, decisions } = await bulkRuns.view(caller, created.id);
        return viewOf(run, targets, decisions);
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/bulk-runs',
      operationId: 'listBulkRuns',
      summary: 'Bulk runs touching the agents you may see, newest first',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({
        status: z.enum(RUN_STATUSES).optional(),
        before: BulkRunId.optional(),
        limit: z.coerce.number().int().min(1).max(200).default(50),
      }),
      response: { 200: z.object({ runs: z.array(BulkRunSummary), next: z.string().nullable() }) },
      handler: async ({ principal, request, query }) => {
        const caller = callerOf(principal, request);
        const { runs, counts, more } = await bulkRuns.page(caller, query.limit, {
          ...(query.status ? { status: query.status } : {}),
          ...(query.before ? { before: query.before } : {}),
        });
        const people = await bulkRuns.peopleOf(runs.map((run) => run.requested_by));
        return {
          runs: runs.map((run) => summaryOf(run, counts.get(run.id) ?? {}, people)),
          next: more ?? null,
        };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/approvals/bulk-runs',
      operationId: 'listBulkRunApprovals',
      summary:
        'Bulk runs waiting for a decision you could give: never your own, none you decided, every target in your scope',
      tags: ['commands'],
      access: { permission: 'approvals:decide' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ runs: z.array(BulkRunSummary) }) },
      handler: async ({ principal, request }) => {
        const { runs, counts } = await bulkRuns.inbox(callerOf(principal, request));
        const people = await bulkRuns.peopleOf(runs.map((run) => run.requested_by));
        return { runs: runs.map((run) => summaryOf(run, counts.get(run.id) ?? {}, people)) };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/bulk-runs/preview',
      operationId: 'previewBulkRun',
      summary:
        'The agents a bulk run would target (those in your scope the selector matches), which of them cannot run the action and why, and what the run would need before it starts',
      tags: ['commands'],
      access: { permission: 'commands:create' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({ selector: z.string().min(1).max(1000), service: AgentName, action: AgentName }),
      response: {
        200: z.object({
          risk: z.enum(['low', 'medium', 'high', 'critical']).nullable(),
          rule: z
            .object({ confirmation: z.boolean(), approvals: z.number(), stepUp: z.boolean() })
            .nullable(),
          total: z.number(),
          targets: z.array(
            z.object({
              agent: z.object({ id: z.string(), name: z.string() }),
              /** Empty when the agent will run the action; otherwise why it will be skipped. */
              reason: z.string(),
            }),
          ),
        }),
      },
      handler: async ({ principal, request, query }) => {
        const preview = await bulkRuns.preview(callerOf(principal, request), query);
        return {
          risk: preview.risk ?? null,
          rule: preview.rule ?? null,
          total: preview.total,
          targets: preview.targets.map(({ agent, reason }) => ({
            agent: { id: agent.id, name: agent.name },
            reason,
          })),
        };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/bulk-runs/:run',
      operationId: 'getBulkRun',
      summary: 'One bulk run with each target you may see, its status and outcome',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: OrgRun,
      response: { 200: BulkRunView },
      handler: async ({ principal, request, params }) => {
        const { run, targets, decisions } = await bulkRuns.view(callerOf(principal, request), params.run);
        return viewOf(run, targets, decisions);
      },
    }),

    decision('approve'),
    decision('reject'),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/bulk-runs/:run/cancel',
      operationId: 'cancelBulkRun',
      summary: 'Stop a bulk run: nothing more is released, and every target not finished is cancelled',
      tags: ['commands'],
      access: { permission: 'commands:cancel' },
      rateLimit: 'write',
      params: OrgRun,
      response: { 200: BulkRunView },
      handler: async ({ principal, request, params }) => {
        const caller = callerOf(principal, request);
        await bulkRuns.cancel(caller, params.run);
        const { run, targets, decisions } = await bulkRuns.view(caller, params.run, 'commands:cancel');
        return viewOf(run, targets, decisions);
      },
    }),
  ];
}
