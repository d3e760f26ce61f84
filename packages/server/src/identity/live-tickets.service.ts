import { generateToken, isWellFormedToken, tokenHash } from '@bulwark/protocol';
import { recordDenial } from '../access/access.service.js';
import { actorOf } from '../access/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditRequestContext } from '../audit/audit.types.js';
import { AppError } from '../errors.js';
import type { Permission, Principal } from '../http/route.js';
import type { CredentialSeals } from './credential-seals.js';
import type { LiveTicketsStore } from './live-tickets.store.js';
import { ApiKeyNotAllowedError, CsrfError } from './session-guard.js';

/**
 * Live tickets (NET-5). A browser cannot set headers on an EventSource, so the console's live stream
 * would otherwise be opened with the session cookie alone — which any page can make a browser send
 * (a cross-site navigation, an EventSource of another site). Instead the console first asks for a
 * ticket with the session cookie and the CSRF token (a request no other site can make), then opens
 * the stream with the ticket, and the stream refuses any request that a browser says comes from
 * another site.
 *
 * A ticket is a `bwt_` token (256 random bits, checksummed), valid for 30 seconds and one use, for
 * one session, user, organization and stream. Only its SHA-256 is kept, in the database so that any
 * instance can take it. It travels in the stream URL's query (`?ticket=`), the one place an
 * EventSource can carry it: access logs mask that parameter (logging.ts), and by the time anyone
 * could read a proxy's log the ticket has been used or has expired.
 *
 * The ticket proves who asks; what they may read is still decided by the route's permission and the
 * one decision point, and the session must still be live (the stream's guard reads it on every event).
 *
 * Taking a ticket is the one write the stream's GET makes. It belongs to authenticating the request,
 * as a session's last-seen time does, and no other site can cause it: it needs the ticket itself.
 */

export const LIVE_TICKET_TTL_MS = 30_000;

/** The one refusal of a ticket: missing, malformed, unknown, expired, used, or for another stream. */
export class LiveTicketError extends AppError {
  constructor() {
    super(401, 'live_ticket_invalid', 'This live view needs a new ticket; reload the page to open it again.');
  }
}

/** Who a ticket is for: the stream must be opened by the same session, as the same user, in the same organization. */
interface Holder {
  orgId: string;
  sessionId: string;
  userId: string;
}

/** A request to open a live stream, as the route saw it. */
export interface Stream {
  channel: string;
  /** The route's permission, named in the audit record of a refusal. */
  permission: Permission;
  ticket: string | undefined;
  /** Why the browser's own headers say another site made the request (csrf.ts), if they do. */
  crossSite: string | undefined;
  /** The route, as `METHOD /url/:pattern`, for the audit record of a refusal. */
  route: string;
  context: AuditRequestContext;
}

function holderOf(principal: Principal | undefined): Holder | undefined {
  if (!principal?.session || !principal.org) return undefined;
  return { orgId: principal.org.id, sessionId: principal.session.id, userId: principal.userId };
}

export function createLiveTicketsService(deps: {
  store: LiveTicketsStore;
  seals: CredentialSeals;
  audit: AuditService;
  clock: () => number;
}) {
  const { store, seals, audit, clock } = deps;

  async function refuse(
    principal: Principal,
    stream: Stream,
    reason: string,
    error: AppError,
  ): Promise<never> {
    await recordDenial(audit, {
      orgId: principal.org?.id ?? null,
      actor: actorOf(principal),
      context: stream.context,
      permission: stream.permission,
      route: stream.route,
      reason,
    });
    throw error;
  }

  return {
    /** A ticket for the caller's session to open `channel` once, within LIVE_TICKET_TTL_MS. */
    async issue(
      principal: Principal | undefined,
      channel: string,
    ): Promise<{ ticket: string; expiresAt: number }> {
      const holder = holderOf(principal);
      // A key sends its Authorization header on the stream itself; tickets stand in for a header a browser cannot set.
      if (!holder)
        throw new ApiKeyNotAllowedError(
          'Live tickets are for the console; an API key opens the stream with its Authorization header.',
        );
      const now = clock();
      await store.deleteExpired(holder.orgId, now);
      const ticket = generateToken('bwt');
      const expiresAt = now + LIVE_TICKET_TTL_MS;
      const row = {
        ticket_hash: tokenHash(ticket),
        org_id: holder.orgId,
        session_id: holder.sessionId,
        user_id: holder.userId,
        channel,
        created_at: now,
        expires_at: expiresAt,
      };
      await store.insert({ ...row, seal: await seals.seal('live-ticket', row) });
      return { ticket, expiresAt };
    },

    /**
     * Lets a request open a live stream, or refuses it (audited). Any request a browser marks as
     * coming from another site is refused. A browser session must present a ticket issued to it for
     * this stream, which is used up here; an API key, sent in a header no other site can make a
     * browser send, needs none.
     */
    async admit(principal: Principal | undefined, stream: Stream): Promise<void> {
      if (!principal) throw new Error('a live stream was reached without a principal');
      const { channel, ticket, crossSite } = stream;
      if (crossSite)
        await refuse(
          principal,
          stream,
          `a live stream asked for from another site: ${crossSite}`,
          new CsrfError(),
        );
      if (principal.type === 'api_key') return;
      const holder = holderOf(principal);
      const row =
        holder && ticket !== undefined && isWellFormedToken(ticket, 'bwt')
          ? await store.take(holder.orgId, tokenHash(ticket))
          : undefined;
      const problem = !row
        ? ticket === undefined
          ? 'no live ticket'
          : 'the live ticket is unknown, already used or of another organization'
        : !(await seals.holds('live-ticket', row, {
              id: row.session_id,
              userId: row.user_id,
              orgId: row.org_id,
            }))
          ? 'the live ticket was not issued by this server'
          : row.expires_at <= clock()
            ? 'the live ticket has expired'
            : row.session_id !== holder?.sessionId || row.user_id !== holder.userId
              ? 'the live ticket was issued to another session'
              : row.channel !== channel
                ? 'the live ticket is for another stream'
                : undefined;
      if (problem) await refuse(principal, stream, problem, new LiveTicketError());
    },
  };
}

export type LiveTicketsService = ReturnType<typeof createLiveTicketsService>;
