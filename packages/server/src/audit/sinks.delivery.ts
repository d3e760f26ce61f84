import type { Logger } from 'pino';
import type { AuditEventRow } from './audit.chain.js';
import type { AuditFilters } from './audit.store.js';
import type { SinkConfig } from './sinks.config.js';
import {
  eventLine,
  PRIORITY_ACTIONS,
  type SinkLine,
  type SinkTransport,
  statementLine,
} from './sinks.lines.js';
import type { SinkMetrics } from './sinks.metrics.js';
import { sinkProblem } from './sinks.problems.js';
import { type AuditSinkRow, chainOfSink, type SinkProgress, type SinksStore } from './sinks.store.js';

export interface DeliveryOptions {
  /** Lines per batch (one POST, one syslog connection, one file write). */
  batchSize: number;
  pollMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Batches one sink may send per pass before the others get their turn. */
  batchesPerPass: number;
  /** Sinks delivering at once in this process (each holds a connection and a batch in memory). */
  concurrency: number;
}

export const DEFAULT_DELIVERY: Omit<DeliveryOptions, 'pollMs' | 'backoffMaxMs'> = {
  batchSize: 200,
  backoffBaseMs: 1000,
  batchesPerPass: 20,
  concurrency: 4,
};

/**
 * The wait before the next attempt after `failures` failures in a row: exponential from the base,
 * capped, with "equal jitter" (half fixed, half random) so sinks that failed together (a receiver
 * restart) do not all come back in the same instant, yet never retry sooner than half the backoff.
 */
export function backoffMs(failures: number, base: number, max: number, random: () => number): number {
  const ceiling = Math.min(max, base * 2 ** Math.min(failures - 1, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * Delivers every enabled sink's backlog: from its cursor in its chain (an org's or the instance's), oldest first, events
 * with the signed checkpoints that cover them; critical events of a long backlog are sent ahead (and
 * again in order: receivers dedupe on `id`). Each sink runs on its own: a slow or failing one never
 * holds up another, nor the audit log, which it only reads. One loop per server process; the CLI
 * never delivers. With `leads`, a pass delivers only while this instance holds the delivery lease,
 * so of several instances one delivers (a pass already sending when the lease is lost finishes).
 */
export function createSinkDelivery(deps: {
  store: SinksStore;
  exportLines: (
    chainId: string,
    filters: AuditFilters,
    limit: number,
    afterSeq: number,
    personalData: boolean,
  ) => Promise<Array<{ row: AuditEventRow; line: string }>>;
  open: (row: AuditSinkRow) => Promise<SinkConfig>;
  transportOf: (sinkId: string, config: SinkConfig) => SinkTransport;
  metrics: SinkMetrics;
  clock: () => number;
  logger: Logger;
  options: DeliveryOptions;
  random?: () => number;
  /** Whether this instance is the one that delivers (ops/leases.ts); without it, it always is. */
  leads?: () => Promise<boolean>;
}) {
  const { store, metrics, clock, logger, options } = deps;
  const random = deps.random ?? Math.random;
  const inFlight = new Map<string, Promise<void>>();
  const transports = new Map<string, { version: string; transport: SinkTransport; personalData: boolean }>();
  /** When each sink last started delivering (a counter): the fairness order under the bound. */
  const lastStarted = new Map<string, number>();
  let starts = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  async function transportFor(
    row: AuditSinkRow,
  ): Promise<{ transport: SinkTransport; personalData: boolean }> {
    const version = `${row.updated_at}:${row.config_sealed.length}`;
    const cached = transports.get(row.id);
    if (cached?.version === version) return cached;
    const config = await deps.open(row);
    const entry = {
      version,
      transport: deps.transportOf(row.id, config),
      personalData: config.personalData === true,
    };
    transports.set(row.id, entry);
    return entry;
  }

  /** Sinks this process has metric series for: dropped when they are no longer delivered from here. */
  const observed = new Map<string, string>();

  function forget(sinkId: string, kind: string): void {
    for (const metric of [metrics.lagSeconds, metrics.depth]) metric.remove({ sink: sinkId, kind });
    transports.delete(sinkId);
    observed.delete(sinkId);
  }

  async function observe(row: AuditSinkRow, deliveredSeq: number): Promise<void> {
    const labels = { sink: row.id, kind: row.kind };
    observed.set(row.id, row.kind);
    const head = await store.headSeq(chainOfSink(row));
    metrics.depth.set(labels, Math.max(0, head - deliveredSeq));
    const oldest = head > deliveredSeq ? await store.oldestAfter(chainOfSink(row), deliveredSeq) : undefined;
    metrics.lagSeconds.set(labels, oldest === undefined ? 0 : Math.max(0, (clock() - oldest) / 1000));
  }

  async function deliver(row: AuditSinkRow): Promise<void> {
    const labels = { sink: row.id, kind: row.kind };
    let progress: SinkProgress = {
      delivered_seq: row.delivered_seq,
      checkpoint_seq: row.checkpoint_seq,
      priority_seq: row.priority_seq,
    };
    const chain = chainOfSink(row);
    const batch = options.batchSize;
    const move = async (to: SinkProgress, lines: number): Promise<boolean> => {
      if (!(await store.advance(row.id, progress, to, clock()))) return false;
      progress = to;
      metrics.delivered.inc(labels, lines);
      return true;
    };
    try {
      const { transport, personalData } = await transportFor(row);
      // Critical events behind a backlog go out first (AUTH-8's alert cannot wait for a day of events).
      const head = await store.headSeq(chain);
      if (head - progress.delivered_seq > batch) {
        const after = Math.max(progress.priority_seq, progress.delivered_seq + batch);
        const ahead = await deps.exportLines(
          chain,
          { actions: PRIORITY_ACTIONS },
          batch,
          after,
          personalData,
        );
        if (ahead.length > 0) {
          await transport.send(ahead.map(({ row: event, line }) => eventLine(event, line)));
          if (!(await move({ ...progress, priority_seq: ahead.at(-1)!.row.seq }, ahead.length))) return;
        }
      }
      for (let n = 0; n < options.batchesPerPass && !stopped; n++) {
        const events = await deps.exportLines(chain, {}, batch, progress.delivered_seq, personalData);
        const through = events.at(-1)?.row.seq ?? progress.delivered_seq;
        const statements = await store.statementsBetween(chain, progress.checkpoint_seq, through);
        if (events.length === 0 && statements.length === 0) break;
        // A statement right after the event it covers: a reader meets the event before its witness.
        const lines: Array<SinkLine & { order: number }> = [
          ...events.map(({ row: event, line }) => ({ ...eventLine(event, line), order: 0 })),
          ...statements.map((statement) => ({ ...statementLine(statement), order: 1 })),
        ].sort((a, b) => a.seq - b.seq || a.order - b.order);
        await transport.send(lines);
        const moved = await move(
          {
            delivered_seq: through,
            checkpoint_seq: statements.at(-1)?.seq ?? progress.checkpoint_seq,
            priority_seq: Math.max(progress.priority_seq, through),
          },
          lines.length,
        );
        if (!moved || events.length < batch) break;
      }
    } catch (error) {
      const failures = row.failures + 1;
      const wait = backoffMs(failures, options.backoffBaseMs, options.backoffMaxMs, random);
      const message = error instanceof Error ? error.message : String(error);
      metrics.failures.inc(labels);
      logger.warn(
        { sink: row.id, kind: row.kind, failures, retryInMs: wait, err: message },
        'audit sink delivery failed',
      );
      // The stored error is shown by the API: a fixed reason, never Node's message with addresses.
      await store.failed(row.id, failures, clock() + wait, sinkProblem(error));
    } finally {
      await observe(row, progress.delivered_seq).catch(() => undefined);
    }
  }

  /**
   * One pass: starts delivery for due sinks not already delivering, at most `concurrency` in flight
   * in this process (across passes: a slow pass's deliveries count); resolves when those end. Due
   * sinks beyond the bound wait for the next pass, longest-waiting first (least recently tried).
   */
  async function tick(): Promise<void> {
    if (deps.leads && !(await deps.leads())) {
      // Another instance delivers: its gauges are the true ones, this one's would go stale.
      for (const [id, kind] of observed) forget(id, kind);
      return;
    }
    const rows = await store.enabled();
    const now = clock();
    const started: Promise<void>[] = [];
    const due: AuditSinkRow[] = [];
    for (const row of rows) {
      if (inFlight.has(row.id)) continue;
      if (row.next_attempt_at > now) started.push(observe(row, row.delivered_seq).catch(() => undefined));
      else due.push(row);
    }
    due.sort((a, b) => (lastStarted.get(a.id) ?? 0) - (lastStarted.get(b.id) ?? 0));
    for (const row of due) {
      if (inFlight.size >= options.concurrency) break;
      lastStarted.set(row.id, ++starts);
      const run = deliver(row).finally(() => inFlight.delete(row.id));
      inFlight.set(row.id, run);
      started.push(run);
    }
    // Disabled or deleted, here or by another process (the CLI): no stale lag for an alert to fire on.
    const live = new Set(rows.map((row) => row.id));
    for (const [id, kind] of observed) if (!live.has(id)) forget(id, kind);
    for (const id of transports.keys()) if (!live.has(id)) transports.delete(id);
    for (const id of lastStarted.keys()) if (!live.has(id)) lastStarted.delete(id);
    await Promise.allSettled(started);
  }

  function schedule(): void {
    if (stopped) return;
    // Not waiting for the pass: a sink stuck in a slow send must not delay the others' next pass
    // (a sink still delivering is skipped until it is done).
    timer = setTimeout(() => {
      tick().catch((error) => logger.error({ err: error }, 'audit sink delivery pass failed'));
      schedule();
    }, options.pollMs);
    timer.unref();
  }

  return {
    tick,
    start(): void {
      stopped = false;
      schedule();
    },
    /** Stops scheduling and waits for deliveries in progress: their cursors move or they are sent again. */
    async stop(): Promise<void> {
      stopped = true;
      clearTimeout(timer);
      await Promise.allSettled([...inFlight.values()]);
    },
    /** Forgets a deleted or disabled sink's metrics. */
    forget,
  };
}

export type SinkDelivery = ReturnType<typeof createSinkDelivery>;
