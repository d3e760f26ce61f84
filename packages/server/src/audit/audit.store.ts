import { type InsertResult, type Kysely, type SelectQueryBuilder, sql, type Transaction } from 'kysely';
import { type CompiledOnce, compiledOnce } from '../db/compiled-once.js';
import type { Dialect } from '../db/database.js';
import { createGroupCommit } from '../db/group-commit.js';
import type { AuditCheckpointsTable, DB } from '../db/schema.js';
import { type AuditEventRow, GENESIS_HASH, type SignedStatementKind } from './audit.chain.js';
import { INSTANCE_CHAIN, type Outcome } from './audit.types.js';

export interface AuditFilters {
  action?: string;
  /** Any of these actions: a type prefix (`command.*`) expanded to the actions it names. */
  actions?: readonly string[];
  actorId?: string;
  /**
   * An actor named the way a person knows them: any of these actor ids (the users an email or a name
   * resolved to), or this exact display, case-insensitively (an API key's name, an agent's name).
   */
  actorMatch?: { ids: readonly string[]; display: string };
  targetId?: string;
  outcome?: Outcome;
  /** Inclusive lower bound, epoch ms. */
  since?: number;
  /** Exclusive upper bound, epoch ms. */
  until?: number;
}

/** Filters from optional criteria (a CLI's options, a route's query), leaving out those not given. */
export function auditFilters(criteria: {
  action?: string | undefined;
  actor?: string | undefined;
  target?: string | undefined;
  outcome?: Outcome | undefined;
  since?: number | undefined;
  until?: number | undefined;
}): AuditFilters {
  return {
    ...(criteria.action ? { action: criteria.action } : {}),
    ...(criteria.actor ? { actorId: criteria.actor } : {}),
    ...(criteria.target ? { targetId: criteria.target } : {}),
    ...(criteria.outcome ? { outcome: criteria.outcome } : {}),
    ...(criteria.since !== undefined ? { since: criteria.since } : {}),
    ...(criteria.until !== undefined ? { until: criteria.until } : {}),
  };
}

export const AUDIT_SORTS = ['time', 'action'] as const;
export type AuditSort = (typeof AUDIT_SORTS)[number];

/** Where a search page ended: the sort key of its last event. */
export interface AuditSearchKey {
  ts: number;
  id: string;
  action?: string;
}

export interface ChainHead {
  chainId: string;
  seq: number;
  hash: string;
}

export type CheckpointRow = AuditCheckpointsTable;

// Rows per INSERT: at most 256 (x 19 columns, well inside SQLite's 32,766 bound parameters). A batch
// is cut into chunks of 256 and then powers of two, so only nine statement shapes ever occur and the
// driver's prepared-statement cache keeps them all.
const MAX_INSERT_ROWS = 256;

// Every column of an event, in the order of the compiled inserts' values (a Record: none can be missing).
const EVENT_COLUMN_SET: Record<keyof AuditEventRow, true> = {
  id: true,
  chain_id: true,
  seq: true,
  org_id: true,
  ts: true,
  actor_type: true,
  actor_id: true,
  actor_display: true,
  ip: true,
  user_agent: true,
  action: true,
  target_type: true,
  target_id: true,
  target_display: true,
  outcome: true,
  request_id: true,
  details: true,
  prev_hash: true,
  hash: true,
};
const EVENT_COLUMNS = Object.keys(EVENT_COLUMN_SET) as Array<keyof AuditEventRow>;

export function insertChunkSizes(rows: number): number[] {
  const sizes: number[] = [];
  let rest = rows;
  while (rest >= MAX_INSERT_ROWS) {
    sizes.push(MAX_INSERT_ROWS);
    rest -= MAX_INSERT_ROWS;
  }
  for (let size = MAX_INSERT_ROWS / 2; size >= 1; size /= 2) {
    if (rest >= size) {
      sizes.push(size);
      rest -= size;
    }
  }
  return sizes;
}

function applyFilters<O>(
  query: SelectQueryBuilder<DB, 'audit_events', O>,
  filters: AuditFilters,
): SelectQueryBuilder<DB, 'audit_events', O> {
  let q = query;
  if (filters.action !== undefined) q = q.where('action', '=', filters.action);
  if (filters.actions !== undefined) {
    const actions = [...filters.actions];
    // An empty list matches nothing; `in ()` is not valid SQL.
    q = actions.length > 0 ? q.where('action', 'in', actions) : q.where(sql<boolean>`1 = 0`);
  }
  if (filters.actorId !== undefined) q = q.where('actor_id', '=', filters.actorId);
  if (filters.actorMatch !== undefined) {
    const { ids, display } = filters.actorMatch;
    q = q.where((eb) =>
      eb.or([
        ...(ids.length > 0 ? [eb('actor_id', 'in', [...ids])] : []),
        eb(eb.fn('lower', ['actor_display']), '=', display.toLowerCase()),
      ]),
    );
  }
  if (filters.targetId !== undefined) q = q.where('target_id', '=', filters.targetId);
  if (filters.outcome !== undefined) q = q.where('outcome', '=', filters.outcome);
  if (filters.since !== undefined) q = q.where('ts', '>=', filters.since);
  if (filters.until !== undefined) q = q.where('ts', '<', filters.until);
  return q;
}

/**
 * `groupCommit`: the database's group commit, shared with the other hot writers, so that a batch of
 * audit events and the command transitions it records are made durable by one commit, not two.
 */
export function createAuditStore(db: Kysely<DB>, dialect: Dialect, groupCommit = createGroupCommit(db)) {
  // Every batch the writer commits runs these: they are compiled once (see compiled-once.ts).
  const headRow = compiledOnce(db, (args: { chainId: string }) => {
    const query = db
      .selectFrom('audit_chain_heads')
      .select(['seq', 'hash'])
      .where('chain_id', '=', args.chainId);
    return dialect === 'postgres' ? query.forUpdate() : query;
  });
  const createHeadRow = compiledOnce(db, (args: { chainId: string; now: number }) =>
    db
      .insertInto('audit_chain_heads')
      .values({ chain_id: args.chainId, seq: 0, hash: GENESIS_HASH, updated_at: args.now })
      .onConflict((oc) => oc.column('chain_id').doNothing()),
  );
  const moveHead = compiledOnce(db, (args: { chainId: string; seq: number; hash: string; now: number }) =>
    db
      .updateTable('audit_chain_heads')
      .set({ seq: args.seq, hash: args.hash, updated_at: args.now })
      .where('chain_id', '=', args.chainId),
  );
  // One insert per chunk size (insertChunkSizes), its values a flat array, row after row.
  const insertsOfSize = new Map<number, CompiledOnce<unknown[], InsertResult>>();
  const insertOfSize = (size: number) => {
    let insert = insertsOfSize.get(size);
    if (!insert) {
      insert = compiledOnce(db, (values: unknown[]) =>
        db
          .insertInto('audit_events')
          .values(
            Array.from(
              { length: size },
              (_, row) =>
                Object.fromEntries(
                  EVENT_COLUMNS.map((column, i) => [column, values[row * EVENT_COLUMNS.length + i]]),
                ) as unknown as AuditEventRow,
            ),
          ),
      );
      insertsOfSize.set(size, insert);
    }
    return insert;
  };

  return {
    /** Runs `work` in a write transaction: IMMEDIATE on SQLite, row locks on the chain heads on PostgreSQL. */
    transaction<T>(work: (tx: Transaction<DB>) => Promise<T>): Promise<T> {
      return db.transaction().execute(work);
    },
    /** {@link transaction}, committed together with the other writes of the same turn. */
    groupedTransaction<T>(
      work: (tx: Transaction<DB>) => Promise<T>,
      finish?: (tx: Transaction<DB>) => Promise<void>,
    ): Promise<T> {
      return groupCommit(work, finish);
    },

    /**
     * Locks and returns a chain's head inside `tx`. A missing head row is created (if no one else has
     * meanwhile) and then locked, so two instances appending the first events of a chain serialize on
     * the same row instead of racing.
     */
    async lockHead(tx: Transaction<DB>, chainId: string, now: number): Promise<ChainHead> {
      let head = await headRow.first({ chainId }, tx);
      if (!head) {
        await createHeadRow.execute({ chainId, now }, tx);
        head = await headRow.first({ chainId }, tx);
        if (!head) throw new Error(`the head of audit chain ${chainId} could not be created`);
      }
      return { chainId, seq: head.seq, hash: head.hash };
    },

    async insertEvents(tx: Transaction<DB>, rows: AuditEventRow[]): Promise<void> {
      let offset = 0;
      for (const size of insertChunkSizes(rows.length)) {
        const values: unknown[] = [];
        for (const row of rows.slice(offset, offset + size)) {
          for (const column of EVENT_COLUMNS) values.push(row[column]);
        }
        await insertOfSize(size).execute(values, tx);
        offset += size;
      }
    },

    async setHead(tx: Transaction<DB>, head: ChainHead, now: number): Promise<void> {
      await moveHead.execute({ chainId: head.chainId, seq: head.seq, hash: head.hash, now }, tx);
    },

    async head(chainId: string): Promise<ChainHead | undefined> {
      const row = await db
        .selectFrom('audit_chain_heads')
        .select(['seq', 'hash'])
        .where('chain_id', '=', chainId)
        .executeTakeFirst();
      return row && { chainId, seq: row.seq, hash: row.hash };
    },

    /** One page of a chain's events, newest first, strictly before `beforeSeq` when given. */
    async page(
      chainId: string,
      filters: AuditFilters,
      limit: number,
      beforeSeq?: number,
    ): Promise<AuditEventRow[]> {
      let q = applyFilters(
        db.selectFrom('audit_events').selectAll().where('chain_id', '=', chainId),
        filters,
      );
      if (beforeSeq !== undefined) q = q.where('seq', '<', beforeSeq);
      return q.orderBy('seq', 'desc').limit(limit).execute();
    },

    /** Oldest first, strictly after `afterSeq`: the keyset page used by export and verification. */
    async pageAscending(
      chainId: string,
      filters: AuditFilters,
      limit: number,
      afterSeq: number,
    ): Promise<AuditEventRow[]> {
      return applyFilters(db.selectFrom('audit_events').selectAll().where('chain_id', '=', chainId), filters)
        .where('seq', '>', afterSeq)
        .orderBy('seq', 'asc')
        .limit(limit)
        .execute();
    },

    /**
     * One page of an organization's audit search, ordered by `sort` then time then id, keyset-paged
     * after `after`. With `memberSecurity`, the instance chain's events of those actions join in, when
     * they are about a current member of the organization (as actor, or as the account targeted by a
     * failed sign-in or a lockout) and happened after they joined: what an org's auditor may see of
     * its members' account security, and nothing the instance holds about anyone else.
     */
    async search(
      orgId: string,
      filters: AuditFilters,
      options: {
        limit: number;
        sort: AuditSort;
        descending: boolean;
        after?: AuditSearchKey;
        memberSecurity?: readonly string[];
      },
    ): Promise<AuditEventRow[]> {
      const { memberSecurity } = options;
      let q = applyFilters(
        db
          .selectFrom('audit_events')
          .selectAll()
          .where((eb) =>
            memberSecurity === undefined || memberSecurity.length === 0
              ? eb('chain_id', '=', orgId)
              : eb.or([
                  eb('chain_id', '=', orgId),
                  eb.and([
                    eb('chain_id', '=', INSTANCE_CHAIN),
                    eb('action', 'in', [...memberSecurity]),
                    eb.exists(
                      eb
                        .selectFrom('memberships')
                        .select('memberships.user_id')
                        .where('memberships.org_id', '=', orgId)
                        .whereRef('memberships.created_at', '<=', 'audit_events.ts')
                        .where((m) =>
                          m.or([
                            m.and([
                              m('audit_events.actor_type', '=', 'user'),
                              m('memberships.user_id', '=', m.ref('audit_events.actor_id')),
                            ]),
                            m.and([
                              m('audit_events.target_type', '=', 'user'),
                              m('memberships.user_id', '=', m.ref('audit_events.target_id')),
                            ]),
                          ]),
                        ),
                    ),
                  ]),
                ]),
          ),
        filters,
      );
      const { after, descending } = options;
      const beyond = descending ? '<' : '>';
      if (after) {
        q = q.where((eb) => {
          const byTime = eb.or([
            eb('ts', beyond, after.ts),
            eb.and([eb('ts', '=', after.ts), eb('id', beyond, after.id)]),
          ]);
          if (options.sort === 'time') return byTime;
          const action = after.action ?? '';
          return eb.or([eb('action', beyond, action), eb.and([eb('action', '=', action), byTime])]);
        });
      }
      const direction = descending ? 'desc' : 'asc';
      if (options.sort === 'action') q = q.orderBy('action', direction);
      return q.orderBy('ts', direction).orderBy('id', direction).limit(options.limit).execute();
    },

    /** Per chain, the newest sequence number a signed checkpoint covers (0 when none). */
    async signedThrough(chainIds: readonly string[]): Promise<Map<string, number>> {
      if (chainIds.length === 0) return new Map();
      const rows = await db
        .selectFrom('audit_checkpoints')
        .select(['chain_id', (eb) => eb.fn.max('seq').as('seq')])
        .where('chain_id', 'in', [...new Set(chainIds)])
        .where('kind', '=', 'checkpoint' satisfies SignedStatementKind)
        .groupBy('chain_id')
        .execute();
      return new Map(rows.map((row) => [row.chain_id, Number(row.seq ?? 0)]));
    },

    /** Users an email (exact) or a display name (whole, case-insensitive) names: at most a few dozen. */
    async usersNamed(text: string): Promise<string[]> {
      const lowered = text.toLowerCase();
      const rows = await db
        .selectFrom('users')
        .select('id')
        .where((eb) =>
          eb.or([
            eb(eb.fn('lower', ['email']), '=', lowered),
            eb(eb.fn('lower', ['display_name']), '=', lowered),
          ]),
        )
        .limit(50)
        .execute();
      return rows.map((row) => row.id);
    },

    /** The current names of these users, for showing people rather than ids. */
    async userNames(ids: readonly string[]): Promise<Map<string, { email: string; name: string }>> {
      if (ids.length === 0) return new Map();
      const rows = await db
        .selectFrom('users')
        .select(['id', 'email', 'display_name'])
        .where('id', 'in', [...new Set(ids)])
        .execute();
      return new Map(rows.map((row) => [row.id, { email: row.email, name: row.display_name }]));
    },

    async eventAt(chainId: string, seq: number, tx?: Transaction<DB>): Promise<AuditEventRow | undefined> {
      return (tx ?? db)
        .selectFrom('audit_events')
        .selectAll()
        .where('chain_id', '=', chainId)
        .where('seq', '=', seq)
        .executeTakeFirst();
    },

    /** The lowest sequence number among a chain's events at or after `ts` (epoch ms). */
    async firstSeqAtOrAfter(chainId: string, ts: number): Promise<number | undefined> {
      const row = await db
        .selectFrom('audit_events')
        .select((eb) => eb.fn.min('seq').as('seq'))
        .where('chain_id', '=', chainId)
        .where('ts', '>=', ts)
        .executeTakeFirst();
      return row?.seq === null || row?.seq === undefined ? undefined : Number(row.seq);
    },

    /**
     * Every chain that has left any trace: events, signed statements or a head. Deleting a chain's
     * head row must not make the chain disappear from verification.
     */
    async chainIds(): Promise<string[]> {
      const rows = await db
        .selectFrom('audit_chain_heads')
        .select('chain_id')
        .union(db.selectFrom('audit_checkpoints').select('chain_id'))
        .union(db.selectFrom('audit_events').select('chain_id'))
        .execute();
      return rows.map((r) => r.chain_id).sort();
    },

    async checkpoints(chainId: string): Promise<CheckpointRow[]> {
      return db
        .selectFrom('audit_checkpoints')
        .selectAll()
        .where('chain_id', '=', chainId)
        .orderBy('seq', 'asc')
        .execute();
    },

    /** Whether the chain holds an event of one of `actions` about `targetId` (chain and target indexed). */
    async hasEventAbout(chainId: string, targetId: string, actions: readonly string[]): Promise<boolean> {
      const row = await db
        .selectFrom('audit_events')
        .select('seq')
        .where('chain_id', '=', chainId)
        .where('target_id', '=', targetId)
        .where('action', 'in', [...actions])
        .limit(1)
        .executeTakeFirst();
      return row !== undefined;
    },

    async hasStatements(): Promise<boolean> {
      return (
        (await db.selectFrom('audit_checkpoints').select('id').limit(1).executeTakeFirst()) !== undefined
      );
    },

    async insertCheckpoint(row: CheckpointRow, tx?: Transaction<DB>): Promise<void> {
      await (tx ?? db)
        .insertInto('audit_checkpoints')
        .values(row)
        .onConflict((oc) => oc.columns(['chain_id', 'kind', 'seq']).doNothing())
        .execute();
    },

    /** Deletes a chain's events up to and including `throughSeq`, and statements that covered them. */
    async deleteThrough(tx: Transaction<DB>, chainId: string, throughSeq: number): Promise<number> {
      const result = await tx
        .deleteFrom('audit_events')
        .where('chain_id', '=', chainId)
        .where('seq', '<=', throughSeq)
        .executeTakeFirst();
      await tx
        .deleteFrom('audit_checkpoints')
        .where('chain_id', '=', chainId)
        .where((eb) =>
          eb.or([
            eb.and([
              eb('kind', '=', 'checkpoint' satisfies SignedStatementKind),
              eb('seq', '<=', throughSeq),
            ]),
            eb.and([eb('kind', '=', 'anchor' satisfies SignedStatementKind), eb('seq', '<', throughSeq)]),
          ]),
        )
        .execute();
      return Number(result.numDeletedRows);
    },
  };
}

export type AuditStore = ReturnType<typeof createAuditStore>;
