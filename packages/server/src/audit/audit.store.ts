import type { InsertResult, Kysely, SelectQueryBuilder, Transaction } from 'kysely';
import { type CompiledOnce, compiledOnce } from '../db/compiled-once.js';
import type { Dialect } from '../db/database.js';
import { createGroupCommit } from '../db/group-commit.js';
import type { AuditCheckpointsTable, DB } from '../db/schema.js';
import { type AuditEventRow, GENESIS_HASH, type SignedStatementKind } from './audit.chain.js';
import type { Outcome } from './audit.types.js';

export interface AuditFilters {
  action?: string;
  actorId?: string;
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
  if (filters.actorId !== undefined) q = q.where('actor_id', '=', filters.actorId);
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
