import { newId } from '@bulwark/protocol';
import type { Logger } from 'pino';
import { BadRequestError, ServiceUnavailableError } from '../errors.js';
import type { AuditMetrics } from '../ops/metrics.js';
import type { ServerKeysService } from '../secrets/server-keys.service.js';
import { type AuditEventRow, hashOfRow, signedStatement } from './audit.chain.js';
import { type ExportFormat, exportFormatters } from './audit.export.js';
import { guardDetails } from './audit.guard.js';
import type { AuditFilters, AuditStore, ChainHead } from './audit.store.js';
import {
  type AuditActor,
  type AuditEventRef,
  type AuditInput,
  type AuditRequestContext,
  INSTANCE_CHAIN,
} from './audit.types.js';
import { type ChainVerification, verifyChain } from './audit.verify.js';

const MAX_BATCH = 1000;
const DAY_MS = 86_400_000;
const PRUNE_CHUNK = 10_000;
const EXPORT_PAGE = 1000;
export const MAX_QUERY_LIMIT = 500;

export class AuditUnavailableError extends ServiceUnavailableError {
  constructor(message: string) {
    super('audit_unavailable', message);
  }
}

interface Pending {
  chainId: string;
  row: Omit<AuditEventRow, 'seq' | 'prev_hash' | 'hash'>;
  resolve: (ref: AuditEventRef) => void;
  reject: (error: Error) => void;
}

export interface AuditServiceOptions {
  checkpointEvery: number;
  retentionDays: number;
}

export interface PruneResult {
  chainId: string;
  throughSeq?: number;
  deleted: number;
  skipped?: string;
}

function encodeCursor(seq: number): string {
  return Buffer.from(`seq:${seq}`).toString('base64url');
}

function decodeCursor(cursor: string): number {
  const match = /^seq:(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!match) throw new BadRequestError('invalid_cursor', 'The cursor is not one this server issued.');
  return Number(match[1]);
}

/**
 * The audit log (AUD-1 to AUD-5): the one `record()` every module calls.
 *
 * Appends are group-committed: callers queue events and one writer commits them in batches, each in
 * a single transaction that locks the chain heads it extends. A caller's promise resolves only after
 * its event is durably committed (fail closed, AUD-7), so throughput comes from batching, never from
 * acknowledging early.
 */
export function createAuditService(deps: {
  store: AuditStore;
  serverKeys: ServerKeysService;
  clock: () => number;
  logger: Logger;
  metrics: AuditMetrics;
  options: AuditServiceOptions;
}) {
  const { store, serverKeys, clock, logger, metrics, options } = deps;
  const queue: Pending[] = [];
  let draining: Promise<void> | undefined;
  let closed = false;
  const background = new Set<Promise<unknown>>();

  function track(work: Promise<unknown>, what: string): void {
    const tracked = work.catch((error) => logger.error({ err: error }, `audit ${what} failed`));
    background.add(tracked);
    void tracked.finally(() => background.delete(tracked));
  }

  async function writeBatch(batch: Pending[]): Promise<AuditEventRef[]> {
    const now = clock();
    return store.transaction(async (tx) => {
      // Lock heads in a fixed order so two instances appending to the same chains cannot deadlock.
      const heads = new Map<string, ChainHead>();
      for (const chainId of [...new Set(batch.map((p) => p.chainId))].sort()) {
        heads.set(chainId, await store.lockHead(tx, chainId, now));
      }
      const rows: AuditEventRow[] = batch.map((pending) => {
        const head = heads.get(pending.chainId)!;
        const unhashed = { ...pending.row, seq: head.seq + 1, prev_hash: head.hash };
        const row = { ...unhashed, hash: hashOfRow(unhashed) };
        heads.set(pending.chainId, { chainId: pending.chainId, seq: row.seq, hash: row.hash });
        return row;
      });
      await store.insertEvents(tx, rows);
      for (const head of heads.values()) await store.setHead(tx, head, now);
      return rows.map((row) => ({ id: row.id, chainId: row.chain_id, seq: row.seq, hash: row.hash }));
    });
  }

  function checkpointIfDue(refs: AuditEventRef[]): void {
    const firstSeq = new Map<string, number>();
    const lastSeq = new Map<string, number>();
    for (const ref of refs) {
      if (!firstSeq.has(ref.chainId)) firstSeq.set(ref.chainId, ref.seq);
      lastSeq.set(ref.chainId, ref.seq);
    }
    for (const [chainId, last] of lastSeq) {
      const first = firstSeq.get(chainId)!;
      // Due when this batch crossed a multiple of checkpointEvery.
      if (Math.floor(last / options.checkpointEvery) > Math.floor((first - 1) / options.checkpointEvery)) {
        track(checkpoint(chainId), 'checkpoint');
      }
    }
  }

  async function drain(): Promise<void> {
    // Let every record() issued in this turn of the event loop join the first batch.
    await new Promise((resolve) => setImmediate(resolve));
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      const started = process.hrtime.bigint();
      try {
        const refs = await writeBatch(batch);
        for (const [i, pending] of batch.entries()) pending.resolve(refs[i]!);
        metrics.appended.inc(batch.length);
        metrics.commitSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
        checkpointIfDue(refs);
      } catch (error) {
        logger.error({ err: error, events: batch.length }, 'audit batch could not be committed');
        const failure = new AuditUnavailableError(
          'The audit log could not record this action, so it was not performed.',
        );
        for (const pending of batch) pending.reject(failure);
      } finally {
        metrics.pending.set(queue.length);
      }
    }
  }

  function scheduleDrain(): void {
    if (draining) return;
    draining = drain().finally(() => {
      draining = undefined;
      if (queue.length > 0) scheduleDrain();
    });
  }

  function record(input: AuditInput): Promise<AuditEventRef> {
    if (closed)
      return Promise.reject(new AuditUnavailableError('The audit log is closed (the server is stopping).'));
    let details: string;
    try {
      details = guardDetails(input.details);
    } catch (error) {
      return Promise.reject(error);
    }
    const ts = clock();
    const chainId = input.orgId ?? INSTANCE_CHAIN;
    const context = input.context ?? {};
    const row: Pending['row'] = {
      id: newId('evt', ts),
      chain_id: chainId,
      org_id: input.orgId ?? null,
      ts,
      actor_type: input.actor.type,
      actor_id: input.actor.id ?? null,
      actor_display: input.actor.display ?? null,
      ip: context.ip ?? null,
      user_agent: context.userAgent ?? null,
      action: input.action,
      target_type: input.target?.type ?? null,
      target_id: input.target?.id ?? null,
      target_display: input.target?.display ?? null,
      outcome: input.outcome,
      request_id: context.requestId ?? null,
      details,
    };
    return new Promise((resolve, reject) => {
      queue.push({ chainId, row, resolve, reject });
      metrics.pending.set(queue.length);
      scheduleDrain();
    });
  }

  /** Signs a checkpoint of a chain's head unless one already covers it. */
  async function checkpoint(chainId: string): Promise<void> {
    const head = await store.head(chainId);
    if (!head || head.seq === 0 || (await store.latestCheckpointSeq(chainId)) >= head.seq) return;
    const signer = await serverKeys.signer('audit-checkpoint');
    const ts = clock();
    const statement = signedStatement({
      kind: 'checkpoint',
      chainId,
      seq: head.seq,
      hash: head.hash,
      ts,
      keyId: signer.keyId,
    });
    await store.insertCheckpoint({
      id: newId('ckp', ts),
      chain_id: chainId,
      kind: 'checkpoint',
      seq: head.seq,
      hash: head.hash,
      ts,
      key_id: signer.keyId,
      signature: signer.sign(statement),
    });
  }

  async function* exportChunks(
    chainId: string,
    filters: AuditFilters,
    format: ExportFormat,
    onProgress?: (rows: number) => void,
  ): AsyncGenerator<string> {
    const formatter = exportFormatters[format];
    if (formatter.header) yield formatter.header;
    let rows = 0;
    let afterSeq = 0;
    for (;;) {
      const page = await store.pageAscending(chainId, filters, EXPORT_PAGE, afterSeq);
      if (page.length > 0) yield page.map(formatter.line).join('');
      rows += page.length;
      onProgress?.(rows);
      if (page.length < EXPORT_PAGE) return;
      afterSeq = page.at(-1)!.seq;
    }
  }

  async function checkpointAll(): Promise<void> {
    for (const head of await store.heads()) await checkpoint(head.chainId);
  }

  async function verify(chainId: string, onProgress?: (events: number) => void): Promise<ChainVerification> {
    return verifyChain(store, await serverKeys.publicKeys(), chainId, onProgress);
  }

  /** Deletes events past retention, anchoring the rest of the chain to a signed statement of the last deleted one. */
  async function pruneChain(chainId: string, cutoff: number): Promise<PruneResult> {
    const last = await store.lastSeqBefore(chainId, cutoff);
    if (last === undefined) return { chainId, deleted: 0 };
    // Retention must never destroy the evidence of tampering: a broken chain is left for an operator.
    const verification = await verify(chainId);
    if (!verification.ok) {
      logger.error(
        { chainId, broken: verification.broken },
        'audit retention skipped a chain that does not verify',
      );
      return { chainId, deleted: 0, skipped: verification.broken?.reason ?? 'chain does not verify' };
    }
    const signer = await serverKeys.signer('audit-checkpoint');
    let from = verification.anchorSeq ?? 0;
    let deleted = 0;
    while (from < last) {
      const through = Math.min(last, from + PRUNE_CHUNK);
      deleted += await store.transaction(async (tx) => {
        const event = await store.eventAt(chainId, through, tx);
        if (!event) throw new Error(`audit event ${chainId}#${through} disappeared during pruning`);
        const ts = clock();
        const statement = signedStatement({
          kind: 'anchor',
          chainId,
          seq: through,
          hash: event.hash,
          ts,
          keyId: signer.keyId,
        });
        await store.insertCheckpoint(
          {
            id: newId('ckp', ts),
            chain_id: chainId,
            kind: 'anchor',
            seq: through,
            hash: event.hash,
            ts,
            key_id: signer.keyId,
            signature: signer.sign(statement),
          },
          tx,
        );
        return store.deleteThrough(tx, chainId, through);
      });
      from = through;
    }
    await record({
      orgId: chainId === INSTANCE_CHAIN ? null : chainId,
      actor: { type: 'system', id: 'retention', display: 'audit retention' },
      action: 'audit.pruned',
      outcome: 'success',
      details: { throughSeq: last, deleted, retentionDays: options.retentionDays },
    });
    return { chainId, throughSeq: last, deleted };
  }

  return {
    record,

    /** Resolves when every event recorded so far is committed (or has failed). */
    async flush(): Promise<void> {
      while (draining) await draining;
    },

    checkpoint,
    checkpointAll,
    verify,

    async verifyAll(onProgress?: (chainId: string, events: number) => void): Promise<ChainVerification[]> {
      const keys = await serverKeys.publicKeys();
      const results: ChainVerification[] = [];
      for (const head of await store.heads()) {
        results.push(await verifyChain(store, keys, head.chainId, (n) => onProgress?.(head.chainId, n)));
      }
      return results;
    },

    async prune(now: number = clock()): Promise<PruneResult[]> {
      const cutoff = now - options.retentionDays * DAY_MS;
      const results: PruneResult[] = [];
      for (const head of await store.heads()) results.push(await pruneChain(head.chainId, cutoff));
      return results;
    },

    async query(
      chainId: string,
      filters: AuditFilters,
      page: { limit: number; cursor?: string },
    ): Promise<{ events: AuditEventRow[]; nextCursor: string | null }> {
      const limit = Math.min(Math.max(1, page.limit), MAX_QUERY_LIMIT);
      const beforeSeq = page.cursor === undefined ? undefined : decodeCursor(page.cursor);
      const rows = await store.page(chainId, filters, limit + 1, beforeSeq);
      const events = rows.slice(0, limit);
      return { events, nextCursor: rows.length > limit ? encodeCursor(events.at(-1)!.seq) : null };
    },

    /**
     * Opens an export of a chain's events, oldest first, with no row limit: the returned iterable
     * reads page by page as the consumer pulls, so memory stays flat for any size. The export is
     * recorded before it is returned, and refused if that record cannot be written.
     */
    async openExport(request: {
      chainId: string;
      filters: AuditFilters;
      format: ExportFormat;
      actor: AuditActor;
      context?: AuditRequestContext;
      onProgress?: (rows: number) => void;
    }): Promise<AsyncGenerator<string>> {
      const { chainId, filters, format } = request;
      await record({
        orgId: chainId === INSTANCE_CHAIN ? null : chainId,
        actor: request.actor,
        action: 'audit.exported',
        target: { type: 'audit_log', id: chainId },
        outcome: 'success',
        ...(request.context ? { context: request.context } : {}),
        details: { format, filters: { ...filters } },
      });
      return exportChunks(chainId, filters, format, request.onProgress);
    },

    /** Stops accepting events, commits everything queued, and signs a final checkpoint of each chain. */
    async close(): Promise<void> {
      closed = true;
      while (draining) await draining;
      await Promise.allSettled([...background]);
      try {
        await checkpointAll();
      } catch (error) {
        logger.error({ err: error }, 'final audit checkpoint failed');
      }
    },

    /** Chains that exist (organizations and the instance chain). */
    async chains(): Promise<string[]> {
      return (await store.heads()).map((h) => h.chainId);
    },
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
