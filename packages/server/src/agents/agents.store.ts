import type { Kysely } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import { afterCursor, type Cursor, containsAny, type SortOrder } from '../db/keyset.js';
import type { AgentStatus, AgentsTable, DB } from '../db/schema.js';

export type AgentRow = AgentsTable;
/** The columns the agent list sorts by; `id` is creation order (ids sort by creation time). */
export type AgentSortColumn = 'id' | 'name' | 'hostname';

export interface AgentListQuery {
  /** Found in the name, hostname or id. */
  text?: string;
  statuses?: readonly AgentStatus[];
  order: SortOrder<AgentSortColumn>;
  from?: Cursor;
  limit: number;
}

export type AgentListRow = Pick<
  AgentRow,
  'id' | 'name' | 'hostname' | 'labels' | 'status' | 'created_at' | 'last_seen_at'
>;

/** Agents (AGT-2, AGT-4). Org-scoped, except the gateway's lookup of the id an agent claims. */
export function createAgentsStore(db: Kysely<DB>) {
  // Every agent connection runs it; a reconnect storm of a whole fleet runs it thousands of times.
  const forConnection = compiledOnce(db, (args: { id: string }) =>
    db
      .selectFrom('agents')
      .innerJoin('orgs', 'orgs.id', 'agents.org_id')
      .selectAll('agents')
      .select('orgs.slug as org_slug')
      .where('agents.id', '=', args.id),
  );

  // The console's agent list: the index (org_id, id) serves each page without sorting the fleet,
  // and only the listed columns are read.
  const listed = ['id', 'name', 'hostname', 'labels', 'status', 'created_at', 'last_seen_at'] as const;
  const firstPage = compiledOnce(db, (args: { orgId: string; limit: number }) =>
    db.selectFrom('agents').select(listed).where('org_id', '=', args.orgId).orderBy('id').limit(args.limit),
  );
  const nextPage = compiledOnce(db, (args: { orgId: string; limit: number; after: string }) =>
    db
      .selectFrom('agents')
      .select(listed)
      .where('org_id', '=', args.orgId)
      .where('id', '>', args.after)
      .orderBy('id')
      .limit(args.limit),
  );

  // Every command's creation, approval and cancel reads its agent.
  const byId = compiledOnce(db, (args: { orgId: string; id: string }) =>
    db.selectFrom('agents').selectAll().where('org_id', '=', args.orgId).where('id', '=', args.id),
  );

  return {
    async insert(row: AgentRow): Promise<void> {
      await db.insertInto('agents').values(row).execute();
    },
    find: (orgId: string, id: string) => byId.first({ orgId, id }),
    /** The agent an incoming connection claims to be, whatever its organization or state. */
    findForConnection: (id: string) => forConnection.first({ id }),
    /** The labels of these agents of the organization, in one query (for lists that check each). */
    async labelsOf(orgId: string, ids: readonly string[]): Promise<Map<string, string>> {
      if (ids.length === 0) return new Map();
      const rows = await db
        .selectFrom('agents')
        .select(['id', 'labels'])
        .where('org_id', '=', orgId)
        .where('id', 'in', [...new Set(ids)])
        .execute();
      return new Map(rows.map((row) => [row.id, row.labels]));
    },
    signingKeyInUse: async (signingKey: string) =>
      (await db
        .selectFrom('agents')
        .select('id')
        .where('signing_key', '=', signingKey)
        .executeTakeFirst()) !== undefined,
    /** Up to `limit` agents in id order (ids sort by creation time), after `after` when given. */
    page: (orgId: string, limit: number, after?: string) =>
      after === undefined ? firstPage.all({ orgId, limit }) : nextPage.all({ orgId, limit, after }),
    /** A page of the agent list, searched and sorted; the caller decides which rows may be seen. */
    list: (orgId: string, q: AgentListQuery): Promise<AgentListRow[]> => {
      let query = db.selectFrom('agents').select(listed).where('org_id', '=', orgId);
      if (q.text) query = query.where(containsAny(['name', 'hostname', 'id'], q.text));
      if (q.statuses) query = query.where('status', 'in', [...q.statuses]);
      if (q.from) query = query.where(afterCursor(q.order.column, 'id', q.order.direction, q.from));
      query = query.orderBy(q.order.column, q.order.direction);
      if (q.order.column !== 'id') query = query.orderBy('id', q.order.direction);
      return query.limit(q.limit).execute();
    },
    /** Moves an agent between states; a revoked agent never moves again. */
    async setStatus(orgId: string, id: string, status: AgentStatus, now: number): Promise<boolean> {
      const result = await db
        .updateTable('agents')
        .set({ status, updated_at: now })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .where('status', '!=', 'revoked')
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    async update(
      orgId: string,
      id: string,
      changes: Partial<Pick<AgentRow, 'name' | 'labels'>>,
      now: number,
    ) {
      const result = await db
        .updateTable('agents')
        .set({ ...changes, updated_at: now })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .where('status', '!=', 'revoked')
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
    /** Last-seen times of connected agents, in one transaction per flush rather than a write per heartbeat. */
    async touch(seen: ReadonlyMap<string, number>): Promise<void> {
      await db.transaction().execute(async (trx) => {
        for (const [id, at] of seen) {
          await trx.updateTable('agents').set({ last_seen_at: at }).where('id', '=', id).execute();
        }
      });
    },
  };
}

export type AgentsStore = ReturnType<typeof createAgentsStore>;
