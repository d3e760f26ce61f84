import { Readable } from 'node:stream';
import { ID_BODY_PATTERN } from '@bulwark/protocol';
import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { ValidationError } from '../errors.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import { iso, OrgSlug, Timestamp } from '../http/schemas.js';
import type { AuditEventRow } from './audit.chain.js';
import { EXPORT_FORMATS } from './audit.export.js';
import {
  AUDIT_SORTS,
  type AuditFilters,
  type AuditService,
  auditFilters,
  MAX_QUERY_LIMIT,
} from './audit.service.js';
import { AUDIT_ACTIONS, OUTCOMES } from './audit.types.js';

const OrgParams = z.strictObject({ org: OrgSlug });

/** Event type prefixes (`command.*`): choosing one selects every type of that family. */
export const AUDIT_ACTION_PREFIXES = [
  ...new Set(AUDIT_ACTIONS.map((action) => `${action.slice(0, action.indexOf('.'))}.*`)),
] as const as readonly `${string}.*`[];

const ActionOrPrefix = z
  .enum([...AUDIT_ACTIONS, ...AUDIT_ACTION_PREFIXES] as [string, ...string[]], {
    error: 'is not an audit event type, nor a type family such as command.*',
  })
  .optional()
  .describe('An event type (command.failed) or a type family (command.*)');

const Filters = {
  action: ActionOrPrefix,
  actor: z
    .string()
    .trim()
    .min(1, 'is empty')
    .max(254, 'is longer than any id, email address or name')
    .optional()
    .describe('Actor: an id, an email address or a display name'),
  target: z.string().max(128).optional().describe('Target id'),
  outcome: z.enum(OUTCOMES, { error: 'is not an outcome (success, failure or denied)' }).optional(),
  since: z.iso
    .datetime({ error: 'is not an ISO-8601 date and time' })
    .optional()
    .describe('Inclusive, ISO-8601'),
  until: z.iso
    .datetime({ error: 'is not an ISO-8601 date and time' })
    .optional()
    .describe('Exclusive, ISO-8601'),
};

/** Something shaped like one of our ids (`usr_…`, `agt_…`): matched as an id, not looked up as a name. */
const ID_SHAPE = new RegExp(`^[a-z]{2,5}_${ID_BODY_PATTERN}$`);

async function filtersOf(
  audit: AuditService,
  query: {
    action?: string | undefined;
    actor?: string | undefined;
    target?: string | undefined;
    outcome?: (typeof OUTCOMES)[number] | undefined;
    since?: string | undefined;
    until?: string | undefined;
  },
): Promise<AuditFilters> {
  const since = query.since === undefined ? undefined : Date.parse(query.since);
  const until = query.until === undefined ? undefined : Date.parse(query.until);
  if (since !== undefined && until !== undefined && until <= since)
    throw new ValidationError([{ path: 'query.until', message: 'must be later than since' }]);
  const prefix = query.action?.endsWith('.*') ? query.action.slice(0, -1) : undefined;
  const actorIsId = query.actor !== undefined && ID_SHAPE.test(query.actor);
  const filters = auditFilters({
    ...query,
    action: prefix === undefined ? query.action : undefined,
    actor: actorIsId ? query.actor : undefined,
    since,
    until,
  });
  if (prefix !== undefined) filters.actions = AUDIT_ACTIONS.filter((action) => action.startsWith(prefix));
  // A person searches by email or name; the server finds whom that names. Only events of this
  // organization's view are ever returned, so resolving against every account reveals nothing.
  if (query.actor !== undefined && !actorIsId)
    // The text itself may be an actor id of another shape (a system actor's), so it is one of the ids.
    filters.actorMatch = {
      ids: [...(await audit.usersNamed(query.actor)), query.actor],
      display: query.actor,
    };
  return filters;
}

const EventView = z.object({
  id: z.string(),
  seq: z.number().int(),
  ts: Timestamp,
  actor: z.object({ type: z.string(), id: z.string().nullable(), display: z.string().nullable() }),
  ip: z.string().nullable(),
  userAgent: z.string().nullable(),
  action: z.string(),
  target: z.object({
    type: z.string().nullable(),
    id: z.string().nullable(),
    display: z.string().nullable(),
  }),
  outcome: z.string(),
  requestId: z.string().nullable(),
  details: z.record(z.string(), z.unknown()),
  hash: z.string(),
});

const SearchedEventView = EventView.extend({
  /** `org`: this organization's chain; `instance`: a member's account security event from the instance chain. */
  chain: z.enum(['org', 'instance']),
  prevHash: z.string(),
  /** Covered by a signed checkpoint of its chain. */
  signed: z.boolean(),
  actor: z.object({
    type: z.string(),
    id: z.string().nullable(),
    display: z.string().nullable(),
    /** The user's current name and email, for a user actor. */
    name: z.string().nullable(),
    email: z.string().nullable(),
  }),
});

const eventView = (row: AuditEventRow) => ({
  id: row.id,
  seq: row.seq,
  ts: iso(row.ts),
  actor: { type: row.actor_type, id: row.actor_id, display: row.actor_display },
  ip: row.ip,
  userAgent: row.user_agent,
  action: row.action,
  target: { type: row.target_type, id: row.target_id, display: row.target_display },
  outcome: row.outcome,
  requestId: row.request_id,
  details: JSON.parse(row.details) as Record<string, unknown>,
  hash: row.hash,
});

/** The organization's audit log over HTTP (AUD-*): filtered, cursor-paged reads, streamed exports, verification. */
export function auditRoutes(audit: AuditService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/audit/events',
      operationId: 'listAuditEvents',
      summary: "The organization's audit events, newest first, filtered and cursor-paged",
      tags: ['audit'],
      access: { permission: 'audit:read' },
      rateLimit: 'read',
      params: OrgParams,
      query: z.strictObject({
        ...Filters,
        sort: z.enum(AUDIT_SORTS, { error: 'is not a sort order (time or action)' }).default('time'),
        order: z.enum(['desc', 'asc'], { error: 'is not asc or desc' }).default('desc'),
        members: z
          .enum(['include', 'exclude'], { error: 'is not include or exclude' })
          .default('include')
          .describe("Include members' sign-ins, lockouts and factor changes from the instance log"),
        limit: z.coerce.number().int().min(1).max(MAX_QUERY_LIMIT).default(100),
        cursor: z.string().max(400).optional(),
      }),
      response: {
        200: z.object({ events: z.array(SearchedEventView), nextCursor: z.string().nullable() }),
      },
      handler: async ({ principal, query }) => {
        const page = await audit.search(principal!.org!.id, await filtersOf(audit, query), {
          limit: query.limit,
          sort: query.sort,
          order: query.order,
          memberSecurity: query.members === 'include',
          ...(query.cursor ? { cursor: query.cursor } : {}),
        });
        return {
          events: page.events.map(({ row, chain, signed, actorUser }) => {
            const view = eventView(row);
            return {
              ...view,
              actor: { ...view.actor, name: actorUser?.name ?? null, email: actorUser?.email ?? null },
              chain,
              prevHash: row.prev_hash,
              signed,
            };
          }),
          nextCursor: page.nextCursor,
        };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/audit/types',
      operationId: 'listAuditEventTypes',
      summary: 'Every audit event type, grouped by family (the prefix a filter may name as family.*)',
      tags: ['audit'],
      access: { permission: 'audit:read' },
      rateLimit: 'read',
      params: OrgParams,
      response: {
        200: z.object({
          groups: z.array(z.object({ prefix: z.string(), family: z.string(), types: z.array(z.string()) })),
        }),
      },
      handler: () => ({
        groups: AUDIT_ACTION_PREFIXES.map((prefix) => ({
          prefix,
          family: prefix.slice(0, -2),
          types: AUDIT_ACTIONS.filter((action) => action.startsWith(prefix.slice(0, -1))),
        })),
      }),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/audit/export',
      operationId: 'exportAuditEvents',
      summary:
        "Stream the organization's audit events, oldest first, as NDJSON or CSV (re-verifiable offline)",
      tags: ['audit'],
      access: { permission: 'audit:export' },
      rateLimit: 'export',
      params: OrgParams,
      query: z.strictObject({ ...Filters, format: z.enum(EXPORT_FORMATS).default('ndjson') }),
      response: { 200: rawResponse('application/x-ndjson', 'NDJSON (one event per line) or CSV, by format') },
      handler: async ({ principal, request, reply, query }) => {
        const caller = callerOf(principal, request);
        const chunks = await audit.openExport({
          chainId: caller.org.id,
          filters: await filtersOf(audit, query),
          format: query.format,
          actor: caller.actor,
          context: caller.context,
        });
        reply.type(query.format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson');
        reply.header(
          'content-disposition',
          `attachment; filename="audit-${caller.org.slug}.${query.format === 'csv' ? 'csv' : 'ndjson'}"`,
        );
        return Readable.from(chunks);
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/audit/verification',
      operationId: 'verifyAuditChain',
      summary: "Verify the organization's hash chain and signed checkpoints now",
      tags: ['audit'],
      access: { permission: 'audit:read' },
      rateLimit: 'export',
      params: OrgParams,
      response: {
        200: z.object({
          ok: z.boolean(),
          events: z.number().int(),
          checkpoints: z.number().int(),
          signedSeq: z.number().int(),
          headSeq: z.number().int(),
          broken: z.object({ seq: z.number().int(), reason: z.string() }).optional(),
        }),
      },
      handler: ({ principal }) => audit.verify(principal!.org!.id),
    }),
  ];
}
