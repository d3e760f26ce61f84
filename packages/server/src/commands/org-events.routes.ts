import { Readable } from 'node:stream';
import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import { idOf, iso, OrgSlug, Timestamp } from '../http/schemas.js';
import { crossSiteProblem } from '../identity/csrf.js';
import type { LiveTicketsService } from '../identity/live-tickets.service.js';
import { TERMINAL_STATUSES } from './command-status.js';
import type { LiveOutput } from './commands.service.js';
import type { CommandOutputRow } from './commands.store.js';
import { type OrgEvent, type OrgEvents, visibleTo } from './org-events.js';

/** Events one reader of the organization's stream may fall behind by before it is dropped. */
const MAX_QUEUED_EVENTS = 1000;

/** The command a reader focuses on: its output and status come on the organization's stream too. */
const Focus = z.strictObject({
  command: idOf('cmd')
    .optional()
    .describe('A command whose stored output, then live output and status, this stream also sends'),
});

/** The wire form of one chunk of a focused command's output. */
const outputOf = (commandId: string, chunk: Extract<LiveOutput, { kind: 'output' }> | CommandOutputRow) => ({
  commandId,
  seq: chunk.seq,
  stream: chunk.stream,
  data: chunk.data,
  at: iso('at' in chunk ? chunk.at : chunk.created_at),
});

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
  // A ticket opens the stream it was issued for, focus included: a ticket taken for the plain
  // stream cannot be turned into a focused one, nor the reverse.
  const channelOf = (orgId: string, focus?: string) =>
    focus === undefined ? `org:${orgId}` : `org:${orgId}/command:${focus}`;
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
      // Checked here as well as when the stream opens: an EventSource cannot read why it was refused,
      // so the console learns of a focus it may not have from this answer, and opens the plain stream.
      query: Focus,
      response: { 201: z.object({ ticket: z.string(), expiresAt: Timestamp }) },
      handler: async ({ principal, request, query }) => {
        const caller = callerOf(principal, request);
        if (query.command !== undefined) await events.focusSource().readable(caller, query.command);
        const { ticket, expiresAt } = await liveTickets.issue(
          principal,
          channelOf(caller.org.id, query.command),
        );
        return { ticket, expiresAt: iso(expiresAt) };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/events',
      operationId: 'streamOrgEvents',
      summary:
        'Server-sent events of the organization, as they happen: command status changes, approvals inbox changes and agents online or offline, each only if you may see it; with `command`, also that command’s stored output, then its live output and status (404 for no such command here, 403 if you may not read it). A browser session opens it with a ticket from createOrgStreamTicket (asked for with the same `command`); an API key with its Authorization header',
      tags: ['events'],
      access: { permission: 'org:read' },
      rateLimit: 'read',
      params: OrgParams,
      // The ticket is in the query because an EventSource can set no header; logs mask it (logging.ts).
      query: Focus.extend({ ticket: z.string().max(100).optional() }),
      response: {
        200: rawResponse(
          'text/event-stream',
          'events `ready` once subscribed, then `command` {id, agentId, service, action, risk, status, requestedBy, createdAt, startedAt, finishedAt, exitCode}, `approval` {commandId, status, requestedBy}, `agent` {id, status, lastSeenAt}; for the focused command, its stored `output` {commandId, seq, stream, data, at}, then `status` {commandId, status}, then live `output` and `status` until it ends, or `focus_ended` {commandId, message} when the reader may no longer read it; `overflow` if the reader fell behind, `ended` when the reader lost access',
        ),
      },
      handler: async ({ principal, request, reply, query, reauthorize }) => {
        const caller = callerOf(principal, request);
        const focus = query.command;
        // Checked with the reader's access as it is now, by the command's own check (before the
        // ticket, as the command's own stream does: 404 for another organization's command whatever
        // the credential); the ticket only proves the same session asked for this focus a moment ago.
        const source = focus === undefined ? undefined : events.focusSource();
        const focused = focus === undefined ? undefined : await source?.readable(caller, focus);
        await liveTickets.admit(principal, {
          channel: channelOf(caller.org.id, focus),
          permission: 'org:read',
          ticket: query.ticket,
          crossSite: crossSiteProblem(request),
          route: `${request.method} ${request.routeOptions.url ?? ''}`,
          context: auditContextOf(request),
        });
        const stop = new AbortController();
        request.raw.on('close', () => stop.abort());
        // Subscribed before the stored output is read, so nothing falls between the two.
        const { batches, unfocus } = events.subscribe(
          caller.org.id,
          MAX_QUEUED_EVENTS,
          stop.signal,
          focused?.id,
        );
        async function* stream() {
          const sse = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
          yield sse('ready', {});
          // The focused command's output seen so far; a live chunk also stored is sent once.
          let lastSeq = -1;
          let following = false;
          try {
            if (source && focused) {
              for (const chunk of await source.output(focused.id)) {
                lastSeq = chunk.seq;
                yield sse('output', outputOf(focused.id, chunk));
              }
              // After the stored output: a reader shows "no output" only once it has all there was.
              const current = (await source.find(focused.org_id, focused.id)) ?? focused;
              yield sse('status', { commandId: focused.id, status: current.status });
              following = !TERMINAL_STATUSES.includes(current.status);
              if (!following) unfocus();
            }
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
              // AUTH-5 for the focus too: the command's own check, with the reader's access as it is now.
              if (
                source &&
                focused &&
                following &&
                batch.some((item) => item.kind === 'focus') &&
                !(await source.readable(callerOf(now, request), focused.id).then(
                  () => true,
                  () => false,
                ))
              ) {
                following = false;
                unfocus();
                yield sse('focus_ended', {
                  commandId: focused.id,
                  message: 'Your access to this command has ended.',
                });
              }
              for (const item of batch) {
                if (item.kind === 'event') {
                  if (!visibleTo(access, item.published)) continue;
                  const { name, data } = wireOf(item.published.event);
                  yield sse(name, data);
                } else if (focused && following) {
                  const { update } = item;
                  if (update.kind === 'output') {
                    if (update.seq <= lastSeq) continue;
                    lastSeq = update.seq;
                    yield sse('output', outputOf(focused.id, update));
                  } else {
                    yield sse('status', { commandId: focused.id, status: update.status });
                    if (TERMINAL_STATUSES.includes(update.status)) {
                      following = false;
                      unfocus();
                    }
                  }
                }
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
