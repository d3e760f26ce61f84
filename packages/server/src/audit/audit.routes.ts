import { Readable } from 'node:stream';
import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import { iso, OrgSlug, Timestamp } from '../http/schemas.js';
import type { AuditEventRow } from './audit.chain.js';
import { EXPORT_FORMATS } from './audit.export.js';
import { type AuditService, MAX_QUERY_LIMIT } from './audit.service.js';
import { type AuditFilters, auditFilters } from './audit.store.js';
import { AUDIT_ACTIONS, OUTCOMES } from './audit.types.js';

const OrgParams = z.strictObject({ org: OrgSlug });

const Filters = {
  action: z.enum(AUDIT_ACTIONS).optional(),
  actor: z.string().max(64).optional().describe('Actor id'),
  target: z.string().max(128).optional().describe('Target id'),
  outcome: z.enum(OUTCOMES).optional(),
  since: z.iso.datetime().optional().describe('Inclusive, ISO-8601'),
  until: z.iso.datetime().optional().describe('Exclusive, ISO-8601'),
};

function filtersOf(query: {
  action?: string | undefined;
  actor?: string | undefined;
  target?: string | undefined;
  outcome?: (typeof OUTCOMES)[number] | undefined;
  since?: string | undefined;
  until?: string | undefined;
}): AuditFilters {
  return auditFilters({
    ...query,
    since: query.since === undefined ? undefined : Date.parse(query.since),
    until: query.until === undefined ? undefined : Date.parse(query.until),
  });
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
        limit: z.coerce.number().int().min(1).max(MAX_QUERY_LIMIT).default(100),
        cursor: z.string().max(100).optional(),
      }),
      response: { 200: z.object({ events: z.array(EventView), nextCursor: z.string().nullable() }) },
      handler: async ({ principal, query }) => {
        const page = await audit.query(principal!.org!.id, filtersOf(query), {
          limit: query.limit,
          ...(query.cursor ? { cursor: query.cursor } : {}),
        });
        return { events: page.events.map(eventView), nextCursor: page.nextCursor };
      },
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
          filters: filtersOf(query),
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
