/**
 * The delivery loop of audit sinks (AUD-6) on both databases: the chain is the outbox, so a receiver
 * outage or a process that stops mid-delivery loses nothing and keeps the order; critical events of a
 * backlog go out first; retries back off exponentially with jitter under a cap. The receiver is the
 * real file transport; "down" makes it throw before writing, as a refused connection would.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { manualClock, openAudit } from '../test-support/audit.js';
import { freshDatabasePerTest, type TestDatabase, testDatabases } from '../test-support/databases.js';
import { tempDir } from '../test-support/temp.js';
import type { AuditInput } from './audit.types.js';
import type { SinkConfig } from './sinks.config.js';
import { backoffMs, createSinkDelivery, type DeliveryOptions } from './sinks.delivery.js';
import { createFileTransport } from './sinks.file.js';
import type { SinkLine } from './sinks.lines.js';
import { createSinkMetrics } from './sinks.metrics.js';
import { type AuditSinkRow, createSinksStore } from './sinks.store.js';

const ORG = 'org_01KDELIVERYTEST00000000000';
const SINK = 'snk_01KDELIVERYTEST00000000000';

// Only the first test reads and moves the cursors in ways a dialect could differ on; the rest run on SQLite.
describe.each(testDatabases())('audit sink delivery on $dialect', (target: TestDatabase) => {
  // Declared on SQLite only (not skipped elsewhere: in CI a skipped test counts as a failure).
  const sqliteOnly = (name: string, test: () => Promise<void>) => {
    if (target.dialect === 'sqlite') it(name, test);
  };
  const database = freshDatabasePerTest(target);
  let dir: { path: string; remove(): Promise<void> };
  beforeEach(async () => {
    dir = await tempDir('delivery');
  });
  afterEach(async () => {
    await dir.remove();
  });

  async function world(options: Partial<DeliveryOptions> = {}) {
    const clock = manualClock();
    const { audit, db } = await openAudit(database(), { clock: clock.now, checkpointEvery: 4 });
    await db
      .insertInto('orgs')
      .values({
        id: ORG,
        slug: 'acme',
        name: 'Acme',
        created_at: clock.now(),
        mfa_required: 0,
        break_glass_user_id: null,
      })
      .execute();
    const store = createSinksStore(db);
    await store.insert({
      id: SINK,
      org_id: ORG,
      name: 'file',
      kind: 'file',
      config_sealed: 'unused: the test opens the configuration itself',
      enabled: 1,
      delivered_seq: 0,
      checkpoint_seq: 0,
      priority_seq: 0,
      failures: 0,
      next_attempt_at: 0,
      last_error: null,
      last_delivered_at: null,
      created_by: null,
      created_at: clock.now(),
      updated_at: clock.now(),
    });
    const file = createFileTransport({ dir: dir.path, sinkId: SINK, maxBytes: 1 << 30 });
    const receiver = { down: false, sends: 0 };
    const registry = new Registry();
    const metrics = createSinkMetrics(registry);
    // What opening a sink's configuration does (a test may hold it, to see how many sinks start at once).
    const hooks: { open: (row: AuditSinkRow) => Promise<SinkConfig> } = {
      open: async () => ({ kind: 'file' }),
    };
    const deps = (): Parameters<typeof createSinkDelivery>[0] => ({
      store,
      exportLines: (chainId, filters, limit, afterSeq, personalData) =>
        audit.exportLines(chainId, filters, limit, afterSeq, personalData),
      open: (row) => hooks.open(row),
      transportOf: () => ({
        async send(lines: SinkLine[]) {
          receiver.sends++;
          if (receiver.down) throw new Error('connection refused');
          await file.send(lines);
        },
      }),
      metrics,
      clock: clock.now,
      logger: pino({ level: 'silent' }),
      options: {
        batchSize: 3,
        pollMs: 1000,
        backoffBaseMs: 1000,
        backoffMaxMs: 8000,
        batchesPerPass: 100,
        concurrency: 4,
        ...options,
      },
      random: () => 0.5,
    });
    const delivery = () => createSinkDelivery(deps());
    const record = (n: number, action: AuditInput['action'] = 'team.created') =>
      Promise.all(
        Array.from({ length: n }, (_, i) =>
          audit.record({
            orgId: ORG,
            actor: { type: 'system', id: 'test' },
            action,
            outcome: 'success',
            details: { i },
          }),
        ),
      );
    const delivered = async () =>
      (await readFile(path.join(dir.path, `${SINK}.ndjson`), 'utf8').catch(() => ''))
        .split('\n')
        .filter((line) => line !== '')
        .map(
          (line) =>
            JSON.parse(line) as {
              seq: number;
              kind?: string;
              action?: string;
              prevHash?: string;
              hash: string;
            },
        );
    const row = async () => (await store.get(ORG, SINK))!;
    return { audit, clock, store, receiver, delivery, deps, record, delivered, row, registry, hooks };
  }

  it('an outage loses nothing: the cursor stays, retries back off, and the stream resumes in order', async () => {
    const w = await world();
    await w.record(7);
    await w.audit.settled();
    w.receiver.down = true;
    const loop = w.delivery();
    await loop.tick();
    expect(await w.row()).toMatchObject({
      delivered_seq: 0,
      failures: 1,
      next_attempt_at: w.clock.now() + 750,
    });
    // Not due yet: no attempt until the backoff has passed.
    await loop.tick();
    expect(w.receiver.sends).toBe(1);
    w.clock.advance(750);
    await loop.tick();
    expect(await w.row()).toMatchObject({
      delivered_seq: 0,
      failures: 2,
      next_attempt_at: w.clock.now() + 1500,
    });
    expect(await w.registry.getSingleMetricAsString('bulwark_audit_sink_failures_total')).toContain(' 2');
    expect(await w.registry.getSingleMetricAsString('bulwark_audit_sink_outbox_depth')).toContain(' 7');

    w.receiver.down = false;
    w.clock.advance(1500);
    await loop.tick();
    const lines = await w.delivered();
    const events = lines.filter((line) => line.kind === undefined);
    expect(events.map((line) => line.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    for (let i = 1; i < events.length; i++) expect(events[i]!.prevHash).toBe(events[i - 1]!.hash);
    // The signed checkpoint of the head, right after the event it covers.
    expect(lines.at(-1)).toMatchObject({ kind: 'checkpoint', seq: 7, hash: events.at(-1)!.hash });
    expect(await w.row()).toMatchObject({
      delivered_seq: 7,
      failures: 0,
      next_attempt_at: 0,
      last_error: null,
    });
    expect(await w.registry.getSingleMetricAsString('bulwark_audit_sink_outbox_depth')).toContain(' 0');
  });

  sqliteOnly(
    'a sink disabled by another process (the CLI), or delivered by another instance, leaves no stale lag behind',
    async () => {
      const w = await world();
      await w.record(4);
      let leads = true;
      const loop = createSinkDelivery({ ...w.deps(), leads: async () => leads });
      w.receiver.down = true;
      await loop.tick();
      const depth = () => w.registry.getSingleMetricAsString('bulwark_audit_sink_outbox_depth');
      expect(await depth()).toContain(`sink="${SINK}"`);
      // Disabled in the database by someone else: this loop never hears of it but from its next pass.
      await w.store.update(ORG, SINK, { enabled: 0 });
      await loop.tick();
      expect(await depth()).not.toContain(`sink="${SINK}"`);
      // Enabled again; then another instance takes the delivery lease: this one's gauges go.
      await w.store.update(ORG, SINK, { enabled: 1 });
      w.clock.advance(10_000);
      await loop.tick();
      expect(await depth()).toContain(`sink="${SINK}"`);
      leads = false;
      await loop.tick();
      expect(await depth()).not.toContain(`sink="${SINK}"`);
      leads = true;
      await loop.tick();
      expect(await depth()).toContain(`sink="${SINK}"`);
    },
  );

  sqliteOnly(
    'a process that stops mid-delivery is followed by one that sends the unacknowledged batch again',
    async () => {
      const w = await world({ batchesPerPass: 1 });
      await w.record(6);
      const first = w.delivery();
      await first.tick();
      await first.stop();
      expect((await w.row()).delivered_seq).toBe(3);
      // The next process starts from the cursor; the receiver had already taken batch 1 only.
      const second = w.delivery();
      await second.tick();
      await second.tick();
      const seqs = (await w.delivered()).filter((line) => line.kind === undefined).map((line) => line.seq);
      expect(seqs).toEqual([1, 2, 3, 4, 5, 6]);
    },
  );

  sqliteOnly(
    'no more than `concurrency` sinks deliver at once; the ones left over go first next pass',
    async () => {
      const w = await world({ concurrency: 2 });
      await w.record(1);
      const template = await w.row();
      const ids = [SINK, ...[1, 2, 3, 4].map((n) => `${SINK.slice(0, -1)}${n}`)];
      for (const id of ids.slice(1)) await w.store.insert({ ...template, id, name: id });
      // Opening a configuration is the first thing a delivery does, synchronously within the pass:
      // held open, it shows how many deliveries the pass started.
      const opened: string[] = [];
      let release!: () => void;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      w.hooks.open = async (row) => {
        opened.push(row.id);
        await held;
        return { kind: 'file' };
      };
      const loop = w.delivery();
      const pass = loop.tick();
      while (opened.length === 0) await new Promise((resolve) => setImmediate(resolve));
      expect(opened).toHaveLength(2);
      // Still delivering: a second pass starts none (the bound counts deliveries of earlier passes).
      let duringDone = false;
      const during = loop.tick().then(() => {
        duringDone = true;
      });
      while (!duringDone && opened.length === 2) await new Promise((resolve) => setImmediate(resolve));
      expect(opened).toHaveLength(2);
      release();
      await Promise.all([pass, during]);
      await loop.tick();
      await loop.tick();
      // Every sink had its turn, those left out first: five sinks, two at a time, three passes (a
      // configuration is opened once per sink and then cached, so each id appears once).
      expect(new Set(opened)).toEqual(new Set(ids));
      expect(opened).toHaveLength(5);
    },
  );

  sqliteOnly('lines carry `shown` (opened personal data) only for a sink that opted in', async () => {
    const w = await world();
    await w.record(1);
    await w.delivery().tick();
    expect((await w.delivered()).filter((line) => line.kind === undefined)[0]).not.toHaveProperty('shown');
    w.hooks.open = async () => ({ kind: 'file', personalData: true });
    await w.record(1);
    await w.delivery().tick();
    const events = (await w.delivered()).filter((line) => line.kind === undefined);
    expect(events.map((line) => line.seq)).toEqual([1, 2]);
    expect(events[1]).toHaveProperty('shown');
  });

  sqliteOnly(
    'critical events of a backlog go out first, then again in order (receivers dedupe on id)',
    async () => {
      const w = await world({ batchesPerPass: 1 });
      await w.record(8);
      await w.record(1, 'auth.break_glass_sign_in');
      await w.record(1, 'keys.workload_identity_rotated');
      await w.record(2);
      await w.delivery().tick();
      const seqs = (await w.delivered())
        .filter((line) => line.kind === undefined)
        .map((line) => [line.seq, line.action]);
      expect(seqs).toEqual([
        [9, 'auth.break_glass_sign_in'],
        [10, 'keys.workload_identity_rotated'],
        [1, 'team.created'],
        [2, 'team.created'],
        [3, 'team.created'],
      ]);
    },
  );
});

it('backs off exponentially with equal jitter, under the cap', () => {
  expect([1, 2, 3, 4, 5, 10].map((n) => backoffMs(n, 1000, 8000, () => 0))).toEqual([
    500, 1000, 2000, 4000, 4000, 4000,
  ]);
  expect([1, 2, 3, 4, 5, 10].map((n) => backoffMs(n, 1000, 8000, () => 1))).toEqual([
    1000, 2000, 4000, 8000, 8000, 8000,
  ]);
});
