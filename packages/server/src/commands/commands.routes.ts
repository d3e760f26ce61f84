import { Readable } from 'node:stream';
import { AgentName } from '@bulwark/protocol';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { isAllowed } from '../access/authorize.js';
import { callerOf } from '../access/caller.js';
import { parseLabels } from '../agents/agents.service.js';
import type { AgentsStore } from '../agents/agents.store.js';
import { sortOrderOf, sortValues, visiblePage } from '../db/keyset.js';
import { ValidationError } from '../errors.js';
import { CursorText, cursorFrom, cursorText, SearchText } from '../http/list-query.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type Principal, type RouteDefinition, rawResponse } from '../http/route.js';
import { AgentId, idOf, iso, OrgSlug, Timestamp, UserId } from '../http/schemas.js';
import { crossSiteProblem } from '../identity/csrf.js';
import type { LiveTicketsService } from '../identity/live-tickets.service.js';
import type { CommandNamesStore, PersonName } from './command-names.store.js';
import { COMMAND_STATUSES, TERMINAL_STATUSES } from './command-status.js';
import { type CommandsService, paramsHashOf, type Requester } from './commands.service.js';
import type { CommandApprovalRow, CommandRow, CommandSortColumn } from './commands.store.js';
import { subscribeLive } from './live-updates.js';
import { MAX_APPROVALS } from './policy.js';

const CommandId = idOf('cmd');
/** Sort keys of the command list and the column each stands for (`created`: ids sort by creation). */
const COMMAND_SORTS = {
  created: 'id',
  service: 'service',
  action: 'action',
  status: 'status',
} as const satisfies Record<string, CommandSortColumn>;
const CommandSort = z.enum(sortValues(['created', 'service', 'action', 'status'] as const));
const STATUSES = COMMAND_STATUSES;

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
  /** Who asked, as people know them: empty when the account no longer exists. */
  requestedByName: z.string(),
  requestedByEmail: z.string(),
  /** The agent's name, as its list shows it; empty when the agent no longer exists. */
  agentName: z.string(),
  requiredApprovals: z.number(),
  approvals: z.array(
    z.object({
      userId: z.string(),
      name: z.string(),
      email: z.string(),
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
/** A rejection says why: the requester reads it, and so does whoever reads the log later. */
const WHY_REJECTED = 'is needed to reject: say why';
const Rejection = Decision.extend({
  comment: z.string({ error: WHY_REJECTED }).trim().min(1, WHY_REJECTED).max(500),
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
  liveTickets: LiveTicketsService;
  names: CommandNamesStore;
}): RouteDefinition[] {
  const { commands, agents, liveTickets, names } = deps;
  /** The live stream a ticket opens: one command's events. */
  const eventsOf = (commandId: string) => `command:${commandId}`;
  const OrgCommand = z.strictObject({ org: OrgSlug, command: CommandId });

  /** Many commands at once: their decisions, the people and the agents named, one query each. */
  async function views(rows: CommandRow[]) {
    if (rows.length === 0) return [];
    const decisions = await commands.decisionsOf(rows.map((row) => row.id));
    const [people, agentNames] = await Promise.all([
      names.people([
        ...rows.map((row) => row.requested_by),
        ...[...decisions.values()].flat().map((d) => d.user_id),
      ]),
      names.agents(
        rows[0]!.org_id,
        rows.map((row) => row.agent_id),
      ),
    ]);
    return rows.map((row) => viewOf(row, decisions.get(row.id) ?? [], people, agentNames));
  }

  async function view(row: CommandRow) {
    return (await views([row]))[0]!;
  }

  function viewOf(
    row: CommandRow,
    decisions: CommandApprovalRow[],
    people: ReadonlyMap<string, PersonName>,
    agentNames: ReadonlyMap<string, string>,
  ) {
    const params = JSON.parse(row.params) as Record<string, unknown>;
    const requester = people.get(row.requested_by);
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
      requestedByName: requester?.name ?? '',
      requestedByEmail: requester?.email ?? '',
      agentName: agentNames.get(row.agent_id) ?? '',
      requiredApprovals: row.required_approvals,
      approvals: decisions.map((d) => ({
        userId: d.user_id,
        name: people.get(d.user_id)?.name ?? '',
        email: people.get(d.user_id)?.email ?? '',
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
  // The one check of reading a command, shared with the organization stream's focus (org-events.routes.ts).
  const readable = (principal: Principal | undefined, request: FastifyRequest, id: string) =>
    commands.readable(callerOf(principal, request), id);

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
      body: verb === 'reject' ? Rejection : Decision,
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
      summary:
        'Commands on the agents you may see, newest first unless sorted otherwise; filtered by status, agent, service or requester, searched, paged with a cursor',
      tags: ['commands'],
      access: { permission: 'commands:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({
        status: z.enum(STATUSES).optional(),
        agent: AgentId.optional(),
        service: AgentName.optional(),
        requester: UserId.optional(),
        q: SearchText.optional().describe("Found in the command's service, action or reason"),
        sort: CommandSort.default('-created'),
        after: CursorText.optional(),
        before: CommandId.optional().describe(
          'The `next` of the previous page, newest first (older form of `after`)',
        ),
        limit: z.coerce.number().int().min(1).max(200).default(50),
      }),
      response: { 200: z.object({ commands: z.array(CommandView), next: z.string().nullable() }) },
      handler: async ({ principal, request, query }) => {
        const caller = callerOf(principal, request);
        if (query.before !== undefined && (query.after !== undefined || query.sort !== '-created'))
          throw new ValidationError([
            { path: 'query.before', message: 'goes only with the default order and without after' },
          ]);
        const from = cursorFrom(query.sort, query.after ?? query.before, 'cmd');
        const order = {
          column: COMMAND_SORTS[query.sort.replace(/^-/, '') as keyof typeof COMMAND_SORTS],
          direction: sortOrderOf(query.sort).direction,
        };
        // A label-scoped caller sees the commands of the agents in scope: those agents are found
        // first, so that neither rows nor the cursor ever come from an agent out of scope.
        let inScope: Set<string> | undefined;
        if (!isAllowed(caller.org.access, 'commands:read', { kind: 'org' })) {
          inScope = new Set();
          for (let after: string | undefined; ; ) {
            const rows = await agents.page(caller.org.id, 1000, after);
            for (const row of rows)
              if (
                isAllowed(caller.org.access, 'commands:read', {
                  kind: 'agent',
                  labels: parseLabels(row.labels),
                })
              )
                inScope.add(row.id);
            if (rows.length < 1000) break;
            after = rows.at(-1)!.id;
          }
          if (inScope.size === 0 || (query.agent && !inScope.has(query.agent)))
            return { commands: [], next: null };
        }
        // Up to this many agents are named in the query itself; beyond, rows are filtered as read.
        const named = inScope && !query.agent && inScope.size <= 1000 ? [...inScope] : undefined;
        const { rows, next } = await visiblePage({
          read: (after, batch) =>
            commands.page(caller.org.id, batch, {
              ...(query.status ? { status: query.status } : {}),
              ...(query.agent ? { agentId: query.agent } : {}),
              ...(named ? { agentIds: named } : {}),
              ...(query.service ? { service: query.service } : {}),
              ...(query.requester ? { requestedBy: query.requester } : {}),
              ...(query.q ? { text: query.q } : {}),
              order,
              ...(after ? { from: after } : {}),
            }),
          cursorOf: (row) => ({ value: row[order.column], id: row.id }),
          keep: (row) => !inScope || inScope.has(row.agent_id),
          limit: query.limit,
          from,
          batch: inScope && !named ? Math.max(query.limit + 1, 500) : query.limit + 1,
        });
        return { commands: await views(rows), next: next ? cursorText(query.sort, next) : null };
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
            z.object({
              seq: z.number(),
              stream: z.enum(['stdout', 'stderr']),
              data: z.string(),
              /** When the server received the chunk from the agent. */
              at: Timestamp,
            }),
          ),
          truncated: z.boolean(),
        }),
      },
      handler: async ({ principal, request, params, query }) => {
        const row = await readable(principal, request, params.command);
        const chunks = await commands.output(row.id, query.after);
        return {
          chunks: chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: c.data, at: iso(c.created_at) })),
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
          'events `output` {seq, stream, data, at}, `status` {status}, `overflow` if the reader fell behind, and `ended` when the reader lost access',
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
            yield event('output', {
              seq: chunk.seq,
              stream: chunk.stream,
              data: chunk.data,
              at: iso(chunk.created_at),
            });
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
                yield event('output', {
                  seq: update.seq,
                  stream: update.stream,
                  data: update.data,
                  at: iso(update.at),
                });
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
      handler: async ({ principal, request }) => {
        const caller = callerOf(principal, request);
        const waiting = await views(await commands.inbox(caller));
        // A card leaves "waiting for you" once you have decided on it, though others may still have to.
        return { commands: waiting.filter((c) => !c.approvals.some((a) => a.userId === caller.userId)) };
      },
    }),
  ];
}
