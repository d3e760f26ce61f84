import type { Kysely } from 'kysely';
import type { DB, LiveTicketsTable } from '../db/schema.js';

export type LiveTicketRow = LiveTicketsTable;

export function createLiveTicketsStore(db: Kysely<DB>) {
  return {
    async insert(row: LiveTicketRow): Promise<void> {
      await db.insertInto('live_tickets').values(row).execute();
    },

    /**
     * Removes and returns the organization's ticket with this hash: of any number of concurrent
     * takers, on any instance, one gets it. A ticket of another organization is not found.
     */
    take: (orgId: string, ticketHash: string) =>
      db
        .deleteFrom('live_tickets')
        .where('org_id', '=', orgId)
        .where('ticket_hash', '=', ticketHash)
        .returning(['ticket_hash', 'org_id', 'session_id', 'user_id', 'channel', 'expires_at', 'seal'])
        .executeTakeFirst(),

    /** Deletes the organization's tickets that expired unused. */
    async deleteExpired(orgId: string, now: number): Promise<void> {
      await db
        .deleteFrom('live_tickets')
        .where('org_id', '=', orgId)
        .where('expires_at', '<=', now)
        .execute();
    },
  };
}

export type LiveTicketsStore = ReturnType<typeof createLiveTicketsStore>;
