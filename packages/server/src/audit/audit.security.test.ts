import { describe, expect, it } from 'vitest';
import { countEvents, manualClock, openAudit, rewriteChain } from '../test-support/audit.js';
import { freshDatabasePerTest, type TestDatabase, testDatabases } from '../test-support/databases.js';
import { csvCell } from './audit.export.js';
import type { AuditInput } from './audit.types.js';

/**
 * Attacks on the audit log by someone who can write the database (a stolen backup restored, a
 * compromised DBA account, a SQL injection elsewhere) but holds neither the master key nor the
 * server's signing key, and by callers who control the text that gets audited.
 */

const event = (n: number, extra: Partial<AuditInput> = {}): AuditInput => ({
  orgId: 'org_a',
  actor: { type: 'user', id: `usr_${n % 3}`, display: `user ${n % 3}` },
  action: 'audit.exported',
  outcome: n % 4 === 0 ? 'denied' : 'success',
  details: { n },
  ...extra,
});

describe.each(testDatabases())('audit log under attack on $dialect', (target: TestDatabase) => {
  const database = freshDatabasePerTest(target);

  it('a chain rewritten from the start with its checkpoints deleted is caught, and no checkpoint vouches for it', async () => {
    const { audit, db, store, masterKey } = await openAudit(database(), { checkpointEvery: 5 });
    for (let batch = 0; batch < 3; batch++) {
      await Promise.all(Array.from({ length: 400 }, (_, n) => audit.record(event(batch * 400 + n))));
    }
    await audit.settled();
    await audit.checkpointAll();
    const original = await store.head('org_a');
    // Attack: rewrite history, then delete the signed checkpoints that would contradict it.
    await rewriteChain(db, 'org_a', () => ({ outcome: 'success' }));
    await db.deleteFrom('audit_checkpoints').where('chain_id', '=', 'org_a').execute();
    const result = await audit.verify('org_a');
    expect(result.ok).toBe(false);
    expect(result.broken?.reason).toContain('1200 events follow the last signed statement (seq 0)');

    // The running server may sign again only what it wrote itself (the original head, which contradicts
    // the forgery); it already signed that head, so it signs nothing and the chain stays broken.
    await audit.checkpointAll();
    for (const checkpoint of await store.checkpoints('org_a')) expect(checkpoint.hash).toBe(original?.hash);
    expect((await audit.verify('org_a')).ok).toBe(false);
    await audit.close();

    // A restarted server vouches for nothing it did not verify: it signs nothing new at all.
    await db.deleteFrom('audit_checkpoints').where('chain_id', '=', 'org_a').execute();
    const restarted = await openAudit(database(), { checkpointEvery: 5, masterKey });
    await restarted.audit.checkpointAll();
    expect(await store.checkpoints('org_a')).toEqual([]);
    expect((await restarted.audit.verify('org_a')).ok).toBe(false);
    await restarted.audit.close();
  });

  it('a server that did not write the unsigned tail itself verifies it before signing', async () => {
    const first = await openAudit(database(), { checkpointEvery: 1000 });
    for (let n = 0; n < 30; n++) await first.audit.record(event(n));
    await first.audit.settled();
    // The first server dies without its closing checkpoint: 30 events are unsigned.
    // Attack while it is down: edit one of them without re-hashing.
    await first.db.updateTable('audit_events').set({ outcome: 'denied' }).where('seq', '=', 8).execute();
    const restarted = await openAudit(database(), { checkpointEvery: 1000, masterKey: first.masterKey });
    await restarted.audit.checkpointAll();
    // The restarted server verified the tail, found the edit, and signed nothing over it.
    expect(await first.store.checkpoints('org_a')).toEqual([]);
    expect((await restarted.audit.verify('org_a')).broken).toMatchObject({
      seq: 8,
      reason: expect.stringContaining('edited'),
    });
    await restarted.audit.close();
  });

  it('refuses to mint a new signing key when signed checkpoints exist but their key is gone', async () => {
    const { audit, db } = await openAudit(database());
    await audit.record(event(1));
    await audit.close();
    // Attack: delete the server key, so that a fresh one would sign a rewritten log on the next start.
    await db.deleteFrom('server_keys').execute();
    await expect(audit.ensureSigningKey()).rejects.toThrow('signing key is missing');
    expect(await db.selectFrom('server_keys').selectAll().execute()).toEqual([]);
  });

  it('still verifies, and reports, a chain whose head record was deleted', async () => {
    const { audit, db } = await openAudit(database());
    await audit.record(event(1));
    await audit.record({ ...event(2), orgId: 'org_b' });
    await audit.close();
    // Attack: drop org_a's head record so "verify all" would not look at org_a at all.
    await db.deleteFrom('audit_chain_heads').where('chain_id', '=', 'org_a').execute();
    expect(await audit.chains()).toEqual(['org_a', 'org_b']);
    const results = await audit.verifyAll();
    expect(results.find((r) => r.chainId === 'org_a')?.broken?.reason).toContain('head record is missing');
    expect(results.find((r) => r.chainId === 'org_b')?.ok).toBe(true);
  });

  it('a back-dated event cannot pull recent history into pruning', async () => {
    const clock = manualClock();
    const { audit, db } = await openAudit(database(), { retentionDays: 30, clock: clock.now });
    for (let n = 0; n < 20; n++) await audit.record(event(n));
    await audit.settled();
    await audit.checkpointAll();
    // An instance whose clock is decades behind (or an attacker re-hashing the unsigned tail) writes
    // an event dated 1970 after twenty recent ones; pruning by "newest old event" would delete all 21.
    clock.set(0);
    await audit.record(event(20));
    clock.set(Date.UTC(2026, 0, 2));
    const [result] = await audit.prune();
    expect(result).toEqual({ chainId: 'org_a', deleted: 0 });
    expect(await countEvents(db)).toBe(21);
    await audit.close();
  });

  it('stores hostile text (a lone surrogate, NUL) so that the chain still verifies', async () => {
    // A lone surrogate would be hashed as written but stored as U+FFFD, breaking the chain for good;
    // NUL makes PostgreSQL refuse the whole batch, failing other callers' events with it.
    const { audit, db } = await openAudit(database());
    const hostile = event(1, {
      // An agent's name: stored as written (a user's would be sealed, DATA-2).
      actor: { type: 'agent', id: 'agt_x', display: 'Mallory \ud800 the lone surrogate' },
      context: { ip: '192.0.2.1', userAgent: 'curl\u0000/8', requestId: 'req_1' },
    });
    const [ref] = await Promise.all([audit.record(hostile), audit.record(event(2))]);
    const row = await db
      .selectFrom('audit_events')
      .selectAll()
      .where('id', '=', ref.id)
      .executeTakeFirstOrThrow();
    expect(row.actor_display).toBe('Mallory \ufffd the lone surrogate');
    expect(row.user_agent).toBe('curl\ufffd/8');
    expect((await audit.verify('org_a')).ok).toBe(true);
    await audit.close();
  });

  it('verifies a chain while it grows without a false alarm', async () => {
    const { audit } = await openAudit(database(), { checkpointEvery: 100 });
    await Promise.all(Array.from({ length: 200 }, (_, n) => audit.record(event(n))));
    const appending = Promise.all(Array.from({ length: 2000 }, (_, n) => audit.record(event(n))));
    const during = await audit.verify('org_a');
    await appending;
    expect(during.broken).toBeUndefined();
    expect((await audit.verify('org_a')).ok).toBe(true);
    await audit.close();
  });
});

describe('CSV cells', () => {
  it('quotes every locale separator and makes the formula prefix reversible', () => {
    // Excel in a ';' locale would split an unquoted cell here and start a new cell with '='.
    expect(csvCell("x;=cmd|' /C calc'!A0")).toBe(`"x;=cmd|' /C calc'!A0"`);
    expect(csvCell('a\tb')).toBe(`"'a\tb"`.replace("'a", 'a'));
    expect(csvCell('\t=1')).toBe(`"'\t=1"`);
    // A cell that already starts with a quote gets one more, so stripping one quote restores any cell.
    expect(csvCell("'=x")).toBe("''=x");
    expect(csvCell('=x')).toBe("'=x");
    expect(csvCell('plain')).toBe('plain');
    expect(csvCell(null)).toBe('');
  });
});
