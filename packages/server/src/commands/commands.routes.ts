import { Readable } from 'node:stream';
import { AgentName } from '@bulwark/protocol';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { AccessService } from '../access/access.service.js';
import { decide } from '../access/authorize.js';
import { callerOf } from '../access/caller.js';
import { parseLabels } from '../agents/agents.service.js';
import type { AgentsStore } from '../agents/agents.store.js';
import { NotFoundError, ValidationError } from '../errors.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type Principal, type RouteDefinition, rawResponse } from '../http/route.js';
import { AgentId, idOf, iso, OrgSlug, Timestamp } from '../http/schemas.js';
import { crossSiteProblem } from '../identity/csrf.js';
import type { LiveTicketsService } from '../identity/live-tickets.service.js';
import { TERMINAL_STATUSES } from './command-status.js';
import { type CommandsService, paramsHashOf, type Requester } from './commands.service.js';
import type { CommandApprovalRow, CommandRow } from './commands.store.js';
import { subscribeLive } from './live-updates.js';
import { MAX_APPROVALS } from './policy.js';

const CommandId = idOf('cmd');
const STATUSES = [
  'awaiting_approval',
  'queued',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
] as const;

const CommandView = z.object({
  id: z.string(),
  agentId: z.string(),
  service: z.string(),
  action: z.string(),
  params: z.record(z.string(), z.unknown()),
  reason: z.string(),
  risk: z.enum(['low', 'medium', 'high', 'critical']),
  status: z.enum(STATUSES),
  requestedBy: z.string(),
  requiredApprovals: z.number(),
  approvals: z.array(
    z.object({
      userId: z.string(),
      decision: z.enum(['approved', 'rejected']),
      comment: z.string(),
      at: Timestamp,
    }),
  ),
  exitCode: z.number().nullable(),
  message: z.string(),
  outputBytes: z.number(),
  outputTruncated: z.boolean(),
  /** The execution timeout the agent enforces (CMD-5). */
  timeoutSeconds: z.number(),
  /** SHA-256 of the params in canonical JSON, as `command.created` records it; sent back with a decision. */
  paramsHash: z.string(),
  createdAt: Timestamp,
  approvalExpiresAt: Timestamp.nullable(),
  expiresAt: Timestamp,
  startedAt: Timestamp.nullable(),
  finishedAt: Timestamp.nullable(),
});

const RiskRule = z.object({ confirmation: z.boolean(), approvals: z.number(), stepUp: z.boolean() });
const CommandPolicy = z.object({ low: RiskRule, medium: RiskRule, high: RiskRule, critical: RiskRule });
const RiskRuleInput = z.strictObject({
  confirmation: z.boolean(),
  approvals: z.number().int().min(0).max(MAX_APPROVALS),
  stepUp: z.boolean(),
});
const CommandPolicyInput = z.strictObject({
  low: RiskRuleInput,
  medium: RiskRuleInput,
  high: RiskRuleInput,
  critical: RiskRuleInput,
});

/** Live updates one event-stream reader may fall behind by before it is dropped. */
const MAX_QUEUED_UPDATES = 1000;

const Decision = z.strictObject({
  comment: z.string().max(500).default(''),
  /** The paramsHash of the command as shown to the person deciding: refused (409) if it changed since. */
  paramsHash: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
});
const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{8,128}$/;

function requesterOf(principal: Principal | undefined, request: FastifyRequest): Requester {
  // A key cannot re-authenticate: it passes a step-up rule only when it holds apikeys:use_privileged.
  const authenticatedAt =
    principal?.session?.authenticatedAt ?? (principal?.stepUpExempt ? Number.POSITIVE_INFINITY : 0);
  return { ...callerOf(principal, request), authenticatedAt };
}

export function commandsRoutes(deps: {
  commands: CommandsService;
  agents: AgentsStore;
  access: AccessService;
  liveTickets: LiveTicketsService;
}): RouteDefinition[] {
  const { commands, agents, access, liveTickets } = deps;
  /** The live stream a ticket opens: one command's events. */
  const eventsOf = (commandId: string) => `command:${commandId}`;
  const OrgCommand = z.strictObject({ org: OrgSlug, command: CommandId });

  /** Many commands at once: their decisions in one query. */
  async function views(rows: CommandRow[]) {
    const decisions = await commands.decisionsOf(rows.map((row) => row.id));
    return rows.map((row) => viewOf(row, decisions.get(row.id) ?? []));
  }

  async function view(row: CommandRow) {
    return viewOf(row, await commands.decisions(row.id));
  }

  function viewOf(row: CommandRow, decisions: CommandApprovalRow[]) {
    const params = JSON.parse(row.params) as Record<string, unknown>;
    return {
      id: row.id,
      agentId: row.agent_id,
      service: row.service,
      action: row.action,
      params,
      reason: row.reason,
      risk: row.risk,
      status: row.status,
      requestedBy: row.requested_by,
      requiredApprovals: row.required_approvals,
      approvals: decisions.map((d) => ({
        userId: d.user_id,
        decision: d.decision,
        comment: d.comment,
        at: iso(d.created_at),
      })),
      exitCode: row.exit_code,
      message: row.message,
      outputBytes: row.output_bytes,
      outputTruncated: row.output_truncated === 1,
      timeoutSeconds: row.timeout_seconds,
      paramsHash: paramsHashOf(params),
      createdAt: iso(row.created_at),
      approvalExpiresAt: row.approval_expires_at === null ? null : iso(row.approval_expires_at),
      expiresAt: iso(row.expires_at),
      startedAt: row.started_at === null ? null : iso(row.started_at),
      finishedAt: row.finished_at === null ? null : iso(row.finished_at),
    };
  }

  /** The command, if the caller may read commands on its agent; 404 otherwise (as for a missing one). */
  async function readable(principal: Principal | undefined, request: FastifyRequest, id: string) {
    const caller = callerOf(principal, request);
    const row = await commands.find(caller.org.id, id);
    if (!row) throw new NotFoundError('No such command.');
    const agent = await agents.find(caller.org.id, row.agent_id);
    await access.authorize(caller, 'commands:read', {
      kind: 'agent',
      labels: parseLabels(agent?.labels ?? '{}'),
    });
    return row;
  }

  const decision = (verb: 'approve' | 'reject') =>
    defineRoute({
      method: 'POST',
      url: `/api/orgs/:org/commands/:command/${verb}`,
      operationId: `${verb}Command`,
      summary:
        verb === 'approve'
          ? "Approve someone else's command (critical ones need a recent sign-in)"
          : "Reject someone else's command",
      tags: ['commands'],
      access: { permission: 'approvals:decide' },
      rateLimit: 'write',
      params: OrgCommand,
      body: Decision,
      response: { 200: CommandView },
      handler: async ({ principal, request, params, body }) =>
        view(
          await commands[verb](
            requesterOf(principal, request),
            params.command,
            body.comment,
            body.paramsHash,
          ),
        ),
    });

  return [
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/commands',
      operationId: 'createCommand',
      summary:
        'Run an action on an agent: parameters checked against its schema; medium risk and up must be confirmed, high needs one approval, critical two and a recent sign-in',
      tags: ['commands'],
      access: { permission: 'commands:create' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({
        agent: AgentId,
        service: AgentName,
        action: AgentName,
        params: z.record(z.string(), z.unknown()).default({}),
        reason: z.string().max(500).default(''),
        confirm: z.boolean().default(false),
      }),
      response: { 201: CommandView },
      handler: async ({ principal, request, body }) => {
        const key = request.headers['idempotency-key'];
        if (key !== undefined && (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)))
          throw new ValidationError([
            { path: 'headers.idempotency-key', message: 'must be 8 to 128 letters, digits or ._:-' },
          ]);
        const row = await commands.create(
          requesterOf(principal, request),
          {
            agentId: body.agent,
            service: body.service,
            action: body.action,
            params: body.params,
            reason: body.reason,
            confirm: body.confirm,
          },
          key,
        );
        return view(row);
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/commands',
      operationId: 'listCommands',
      summary: 'Commands on the agents you may see, newest first',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({
        status: z.enum(STATUSES).optional(),
        agent: AgentId.optional(),
        before: CommandId.optional(),
        limit: z.coerce.number().int().min(1).max(200).default(50),
      }),
      response: { 200: z.object({ commands: z.array(CommandView), next: z.string().nullable() }) },
      handler: async ({ principal, request, query }) => {
        const caller = callerOf(principal, request);
        const rows = await commands.page(caller.org.id, query.limit, {
          ...(query.status ? { status: query.status } : {}),
          ...(query.agent ? { agentId: query.agent } : {}),
          ...(query.before ? { before: query.before } : {}),
        });
        const labels = await agents.labelsOf(
          caller.org.id,
          rows.map((row) => row.agent_id),
        );
        const visible = rows.filter(
          (row) =>
            decide(caller.org.access, 'commands:read', {
              kind: 'agent',
              labels: parseLabels(labels.get(row.agent_id) ?? '{}'),
            }).allowed,
        );
        return {
          commands: await views(visible),
          next: rows.length === query.limit ? rows.at(-1)!.id : null,
        };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/commands/:command',
      operationId: 'getCommand',
      summary: 'One command, with its approvals and outcome',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: OrgCommand,
      response: { 200: CommandView },
      handler: async ({ principal, request, params }) =>
        view(await readable(principal, request, params.command)),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/commands/:command/output',
      operationId: 'getCommandOutput',
      summary: 'The stored output of a command (up to 1 MiB), in order',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: OrgCommand,
      query: z.strictObject({ after: z.coerce.number().int().min(-1).default(-1) }),
      response: {
        200: z.object({
          chunks: z.array(
            z.object({ seq: z.number(), stream: z.enum(['stdout', 'stderr']), data: z.string() }),
          ),
          truncated: z.boolean(),
        }),
      },
      handler: async ({ principal, request, params, query }) => {
        const row = await readable(principal, request, params.command);
        const chunks = await commands.output(row.id, query.after);
        return {
          chunks: chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: c.data })),
          truncated: row.output_truncated === 1,
        };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/commands/:command/events/tickets',
      operationId: 'createCommandStreamTicket',
      summary:
        "A single-use ticket, valid for 30 seconds, for this session to open the command's event stream (NET-5)",
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'write',
      params: OrgCommand,
      response: { 201: z.object({ ticket: z.string(), expiresAt: Timestamp }) },
      handler: async ({ principal, request, params }) => {
        const row = await readable(principal, request, params.command);
        const { ticket, expiresAt } = await liveTickets.issue(principal, eventsOf(row.id));
        return { ticket, expiresAt: iso(expiresAt) };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/commands/:command/events',
      operationId: 'streamCommand',
      summary:
        'Server-sent events: the stored output, then live output and status changes until the command ends. A browser session opens it with a ticket from createCommandStreamTicket; an API key with its Authorization header',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: OrgCommand,
      // The ticket is in the query because an EventSource can set no header; logs mask it (logging.ts).
      query: z.strictObject({ ticket: z.string().max(100).optional() }),
      response: {
        200: rawResponse(
          'text/event-stream',
          'events `output` {seq, stream, data}, `status` {status}, `overflow` if the reader fell behind, and `ended` when the reader lost access',
        ),
      },
      handler: async ({ principal, request, reply, params, query, reauthorize }) => {
        const row = await readable(principal, request, params.command);
        await liveTickets.admit(principal, {
          channel: eventsOf(row.id),
          permission: 'commands:read',
          ticket: query.ticket,
          crossSite: crossSiteProblem(request),
          route: `${request.method} ${request.routeOptions.url ?? ''}`,
          context: auditContextOf(request),
        });
        // AUTH-5: a reader whose session, membership or permission ends gets no further event, even
        // though the stream was opened before. Checked again before every live event.
        const stillReadable = () =>
          reauthorize()
            .then((now) => readable(now, request, row.id))
            .then(
              () => true,
              () => false,
            );
        const stop = new AbortController();
        request.raw.on('close', () => stop.abort());
        // Subscribed before the stored output is read, so nothing falls between the two.
        const updates = subscribeLive(commands.live, row.id, MAX_QUEUED_UPDATES);
        async function* stream() {
          const event = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
          let lastSeq = -1;
          for (const chunk of await commands.output(row.id)) {
            lastSeq = chunk.seq;
            yield event('output', { seq: chunk.seq, stream: chunk.stream, data: chunk.data });
          }
          const current = (await commands.find(row.org_id, row.id)) ?? row;
          yield event('status', { status: current.status });
          if (TERMINAL_STATUSES.includes(current.status)) return;
          try {
            for await (const update of updates(stop.signal)) {
              if (!(await stillReadable())) {
                yield event('ended', { message: 'Your access to this command has ended.' });
                return;
              }
              if (update === 'overflow') {
                yield event('overflow', {
                  message: 'This stream fell behind; read the stored output instead.',
                });
                return;
              }
              if (update.kind === 'output') {
                if (update.seq <= lastSeq) continue;
                lastSeq = update.seq;
                yield event('output', { seq: update.seq, stream: update.stream, data: update.data });
              } else {
                yield event('status', { status: update.status });
                if (TERMINAL_STATUSES.includes(update.status)) return;
              }
            }
          } finally {
            stop.abort();
          }
        }
        reply.type('text/event-stream').header('x-accel-buffering', 'no');
        return Readable.from(stream());
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/command-policy',
      operationId: 'getCommandPolicy',
      summary: 'What each risk asks before a command runs: confirmation, approvals, step-up',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: CommandPolicy },
      handler: ({ principal }) => commands.policyOf(principal!.org!.id),
    }),

    defineRoute({
      method: 'PUT',
      url: '/api/orgs/:org/command-policy',
      operationId: 'setCommandPolicy',
      summary: 'Tighten what each risk asks before a command runs; loosening the built-in policy is refused',
      tags: ['commands'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: CommandPolicyInput,
      response: { 200: CommandPolicy },
      handler: ({ principal, request, body }) => commands.setPolicy(callerOf(principal, request), body),
    }),

    decision('approve'),
    decision('reject'),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/commands/:command/cancel',
      operationId: 'cancelCommand',
      summary:
        'Cancel a command: at once if it has not reached its agent, otherwise the agent stops its process group',
      tags: ['commands'],
      access: { permission: 'commands:cancel' },
      rateLimit: 'write',
      params: OrgCommand,
      response: { 200: CommandView },
      handler: async ({ principal, request, params }) =>
        view(await commands.cancel(callerOf(principal, request), params.command)),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/approvals',
      operationId: 'listApprovals',
      summary: 'Commands waiting for an approval you could give (never your own)',
      tags: ['commands'],
      access: { permission: 'approvals:decide' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ commands: z.array(CommandView) }) },
      handler: async ({ principal, request }) => ({
        commands: await views(await commands.inbox(callerOf(principal, request))),
      }),
    }),
  ];
}
