import type { ExpressionBuilder, Kysely } from 'kysely';
import type { AuditCheckpointsTable, AuditSinksTable, DB } from '../db/schema.js';
import { INSTANCE_CHAIN } from './audit.types.js';

export type AuditSinkRow = AuditSinksTable;

/** The delivery columns a pass moves; everything else is the configuration. */
export type SinkProgress = Pick<AuditSinkRow, 'delivered_seq' | 'checkpoint_seq' | 'priority_seq'>;

/** Whose sinks: an organization's (its id), or the instance's (`null`, the instance chain). */
export type SinkOwnerId = string | null;

/**
 * Audit sinks and their cursors into a chain (the outbox is the chain itself, see
 * docs/audit-sinks.md). Every configuration query names its owner, so another org's sink id, or an
 * instance sink, answers nothing to an organization (404); only the delivery loop reads across owners.
 */
export function createSinksStore(db: Kysely<DB>) {
  const ownedBy = (orgId: SinkOwnerId) => (eb: ExpressionBuilder<DB, 'audit_sinks'>) =>
    orgId === null ? eb('org_id', 'is', null) : eb('org_id', '=', orgId);
  const ofOwner = (orgId: SinkOwnerId) => db.selectFrom('audit_sinks').selectAll().where(ownedBy(orgId));
  return {
    list: (orgId: SinkOwnerId): Promise<AuditSinkRow[]> => ofOwner(orgId).orderBy('id').execute(),

    get: (orgId: SinkOwnerId, id: string): Promise<AuditSinkRow | undefined> =>
      ofOwner(orgId).where('id', '=', id).executeTakeFirst(),

    async insert(row: AuditSinkRow): Promise<void> {
      await db.insertInto('audit_sinks').values(row).execute();
    },

    async update(
      orgId: SinkOwnerId,
      id: string,
      patch: Partial<Pick<AuditSinkRow, 'name' | 'config_sealed' | 'enabled' | 'updated_at'>> &
        Partial<Pick<AuditSinkRow, 'failures' | 'next_attempt_at' | 'last_error'>>,
    ): Promise<boolean> {
      const result = await db
        .updateTable('audit_sinks')
        .set(patch)
        .where(ownedBy(orgId))
        .where('id', '=', id)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) > 0;
    },

    async remove(orgId: SinkOwnerId, id: string): Promise<boolean> {
      const result = await db
        .deleteFrom('audit_sinks')
        .where(ownedBy(orgId))
        .where('id', '=', id)
        .executeTakeFirst();
      return Number(result.numDeletedRows) > 0;
    },

    /** Every enabled sink, of every organization and the instance: what the delivery loop looks after. */
    enabled: (): Promise<AuditSinkRow[]> =>
      db.selectFrom('audit_sinks').selectAll().where('enabled', '=', 1).orderBy('id').execute(),

    /**
     * Moves a sink's cursors after the receiver took a batch. Guarded by the cursor it started from:
     * a pass that raced another (a later issue runs delivery on one instance by lease) cannot move the
     * cursor back.
     */
    async advance(id: string, from: SinkProgress, to: SinkProgress, now: number): Promise<boolean> {
      const result = await db
        .updateTable('audit_sinks')
        .set({ ...to, failures: 0, next_attempt_at: 0, last_error: null, last_delivered_at: now })
        .where('id', '=', id)
        .where('delivered_seq', '=', from.delivered_seq)
        .where('checkpoint_seq', '=', from.checkpoint_seq)
        .where('priority_seq', '=', from.priority_seq)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) > 0;
    },

    async failed(id: string, failures: number, nextAttemptAt: number, error: string): Promise<void> {
      await db
        .updateTable('audit_sinks')
        .set({ failures, next_attempt_at: nextAttemptAt, last_error: error })
        .where('id', '=', id)
        .execute();
    },

    /** A chain's head sequence number (0 for a chain with no events yet). */
    async headSeq(chainId: string): Promise<number> {
      const row = await db
        .selectFrom('audit_chain_heads')
        .select('seq')
        .where('chain_id', '=', chainId)
        .executeTakeFirst();
      return row?.seq ?? 0;
    },

    /** When the oldest event after `afterSeq` happened: how far behind a sink at that cursor is. */
    async oldestAfter(chainId: string, afterSeq: number): Promise<number | undefined> {
      const row = await db
        .selectFrom('audit_events')
        .select('ts')
        .where('chain_id', '=', chainId)
        .where('seq', '>', afterSeq)
        .orderBy('seq')
        .limit(1)
        .executeTakeFirst();
      return row?.ts;
    },

    /** Signed statements of a chain in (afterSeq, throughSeq], oldest first: the witness lines. */
    statementsBetween: (
      chainId: string,
      afterSeq: number,
      throughSeq: number,
    ): Promise<AuditCheckpointsTable[]> =>
      db
        .selectFrom('audit_checkpoints')
        .selectAll()
        .where('chain_id', '=', chainId)
        .where('seq', '>', afterSeq)
        .where('seq', '<=', throughSeq)
        .orderBy('seq')
        .orderBy('id')
        .execute(),
  };
}

export type SinksStore = ReturnType<typeof createSinksStore>;

/** The chain a sink follows: its organization's, or the instance chain. */
export const chainOfSink = (row: Pick<AuditSinkRow, 'org_id'>): string => row.org_id ?? INSTANCE_CHAIN;
