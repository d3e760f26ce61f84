import { Readable } from 'node:stream';
import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import { iso, OrgSlug, Timestamp } from '../http/schemas.js';
import { crossSiteProblem } from '../identity/csrf.js';
import type { LiveTicketsService } from '../identity/live-tickets.service.js';
import { type OrgEvent, type OrgEvents, visibleTo } from './org-events.js';

/** Events one reader of the organization's stream may fall behind by before it is dropped. */
const MAX_QUEUED_EVENTS = 1000;

/** The wire form of an event: its SSE name and its data, times in ISO-8601. */
function wireOf(event: OrgEvent): { name: string; data: unknown } {
  if (event.type === 'command') {
    const c = event.command;
    return {
      name: 'command',
      data: {
        ...c,
        createdAt: iso(c.createdAt),
        startedAt: c.startedAt === null ? null : iso(c.startedAt),
        finishedAt: c.finishedAt === null ? null : iso(c.finishedAt),
      },
    };
  }
  if (event.type === 'approval') return { name: 'approval', data: event };
  return {
    name: 'agent',
    data: {
      id: event.agentId,
      status: event.online ? 'online' : 'offline',
      lastSeenAt: event.lastSeenAt === null ? null : iso(event.lastSeenAt),
    },
  };
}

/**
 * The organization's live stream (one per console tab): commands changing state, the approvals
 * inbox changing, agents coming and going — each only to a reader allowed to see it, decided with
 * the reader's access as it is when the event is sent (AUTH-5), never across organizations.
 */
export function orgEventsRoutes(deps: {
  events: OrgEvents;
  liveTickets: LiveTicketsService;
}): RouteDefinition[] {
  const { events, liveTickets } = deps;
  const channelOf = (orgId: string) => `org:${orgId}`;
  const OrgParams = z.strictObject({ org: OrgSlug });

  return [
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/events/tickets',
      operationId: 'createOrgStreamTicket',
      summary:
        "A single-use ticket, valid for 30 seconds, for this session to open the organization's event stream (NET-5)",
      tags: ['events'],
      access: { permission: 'org:read' },
      rateLimit: 'write',
      params: OrgParams,
      response: { 201: z.object({ ticket: z.string(), expiresAt: Timestamp }) },
      handler: async ({ principal, request }) => {
        const caller = callerOf(principal, request);
        const { ticket, expiresAt } = await liveTickets.issue(principal, channelOf(caller.org.id));
        return { ticket, expiresAt: iso(expiresAt) };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/events',
      operationId: 'streamOrgEvents',
      summary:
        'Server-sent events of the organization, as they happen: command status changes, approvals inbox changes and agents online or offline, each only if you may see it. A browser session opens it with a ticket from createOrgStreamTicket; an API key with its Authorization header',
      tags: ['events'],
      access: { permission: 'org:read' },
      rateLimit: 'read',
      params: OrgParams,
      // The ticket is in the query because an EventSource can set no header; logs mask it (logging.ts).
      query: z.strictObject({ ticket: z.string().max(100).optional() }),
      response: {
        200: rawResponse(
          'text/event-stream',
          'events `ready` once subscribed, then `command` {id, agentId, service, action, risk, status, requestedBy, createdAt, startedAt, finishedAt, exitCode}, `approval` {commandId, status, requestedBy}, `agent` {id, status, lastSeenAt}; `overflow` if the reader fell behind, `ended` when the reader lost access',
        ),
      },
      handler: async ({ principal, request, reply, query, reauthorize }) => {
        const caller = callerOf(principal, request);
        await liveTickets.admit(principal, {
          channel: channelOf(caller.org.id),
          permission: 'org:read',
          ticket: query.ticket,
          crossSite: crossSiteProblem(request),
          route: `${request.method} ${request.routeOptions.url ?? ''}`,
          context: auditContextOf(request),
        });
        const stop = new AbortController();
        request.raw.on('close', () => stop.abort());
        const batches = events.subscribe(caller.org.id, MAX_QUEUED_EVENTS, stop.signal);
        async function* stream() {
          const sse = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
          yield sse('ready', {});
          try {
            for await (const batch of batches()) {
              if (batch === 'overflow') {
                yield sse('overflow', {
                  message: 'This stream fell behind; reload to see the current state.',
                });
                return;
              }
              // AUTH-5: the reader's session, membership and roles as they are now, once per batch.
              const now = await reauthorize().catch(() => undefined);
              const access = now?.org?.id === caller.org.id ? now.org.access : undefined;
              if (!access) {
                yield sse('ended', { message: 'Your access to this organization has ended.' });
                return;
              }
              for (const published of batch) {
                if (!visibleTo(access, published)) continue;
                const { name, data } = wireOf(published.event);
                yield sse(name, data);
              }
            }
          } finally {
            stop.abort();
          }
        }
        // The connection ends with the stream: one left open for reuse would hold the server's shutdown
        // for its whole keep-alive time, as the stream ends only once shutdown has begun.
        reply.type('text/event-stream').header('x-accel-buffering', 'no').header('connection', 'close');
        return Readable.from(stream());
      },
    }),
  ];
}
