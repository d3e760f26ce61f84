import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createAuditService } from '../audit/audit.service.js';
import { createAuditStore } from '../audit/audit.store.js';
import { createAuditPii, ERASED } from '../audit/audit-pii.js';
import type { Database } from '../db/database.js';
import { migrateToLatest } from '../db/migrate.js';
import { createMetrics } from '../ops/metrics.js';
import { freshDatabasePerTest, testDatabases } from '../test-support/databases.js';
import { createDataKeyring } from './data-keyring.js';
import { createDataKeysStore } from './data-keys.store.js';
import { createLocalKeyProvider } from './key-provider.js';
import { rewrapDataKeys } from './key-rotation.js';
import type { MasterKeys } from './master-key.js';
import { createServerKeysService } from './server-keys.service.js';
import { createServerKeysStore } from './server-keys.store.js';

/**
 * Master-key rotation reaches the people's PII keys too (SEC-2, DATA-2): after `bulwark keys rotate`
 * an operator removes the old master key from the key file once nothing needs it, and a PII key still
 * wrapped by it would make that person's sealed audit fields open nowhere: an erasure of everyone.
 */

const ALICE = { id: 'usr_alice', email: 'alice@rotation.test', display: 'Alice Example' };
const BOB = { id: 'usr_bob', email: 'bob@rotation.test', display: 'Bob Example' };
const ACTOR = { type: 'system' as const, id: 'cli', display: 'operator (keys rewrap)' };

describe.each(testDatabases())('master-key rotation and PII keys on $dialect', (target) => {
  const database = freshDatabasePerTest(target);

  /** A process on the database and the key file `keys()` reads, as the server and the CLI are. */
  function open(db: Database, keys: () => MasterKeys) {
    const provider = createLocalKeyProvider(keys(), keys);
    const dataKeys = createDataKeyring({ store: createDataKeysStore(db.db), provider, clock: Date.now });
    const pii = createAuditPii({ db: db.db, provider, clock: Date.now });
    const audit = createAuditService({
      store: createAuditStore(db.db, db.dialect),
      serverKeys: createServerKeysService({
        store: createServerKeysStore(db.db),
        dataKeys,
        masterKeys: provider,
        clock: Date.now,
      }),
      clock: Date.now,
      logger: pino({ level: 'silent' }),
      metrics: createMetrics().audit,
      options: { checkpointEvery: 1000, retentionDays: 365, checkpointIntervalSeconds: 300 },
      pii,
    });
    return { dataKeys, pii, audit };
  }

  it('re-wraps every PII key, in batches, so fields still open once the old master key is removed; an erased key stays gone', async () => {
    const db = database();
    await migrateToLatest(db);
    for (const person of [ALICE, BOB])
      await db.db
        .insertInto('users')
        .values({
          id: person.id,
          email: person.email,
          display_name: person.display,
          password_hash: null,
          status: 'active',
          password_change_required_at: null,
          password_changed_at: null,
          created_at: 1,
          updated_at: 1,
        })
        .execute();
    // The key file as `bulwark keys rotate` rewrites it.
    let keyFile: MasterKeys = { current: randomBytes(32), previous: [] };
    const server = open(db, () => keyFile);
    // The instance's data key, which rotation already re-wrapped before PII keys existed.
    const secret = await server.dataKeys.seal('instance', 'a sealed setting', 'test/setting');
    for (const person of [ALICE, BOB])
      await server.audit.record({
        orgId: null,
        actor: { type: 'user', id: person.id, display: person.display },
        action: 'auth.login_succeeded',
        target: { type: 'user', id: person.id, display: person.email },
        outcome: 'success',
        context: { ip: '198.51.100.7', userAgent: `browser of ${person.id}`, requestId: 'req_1' },
      });
    // A third key, for an address with no account, so that batches of one take three transactions.
    await server.audit.record({
      orgId: null,
      actor: { type: 'anonymous', display: 'carol@rotation.test' },
      action: 'auth.login_failed',
      target: { type: 'user' },
      outcome: 'failure',
      context: { ip: '198.51.100.8', requestId: 'req_2' },
    });
    const personal = async (reader: ReturnType<typeof open>) =>
      (
        await reader.pii.openRows(
          await db.db
            .selectFrom('audit_events')
            .selectAll()
            .where('action', 'like', 'auth.%')
            .orderBy('seq')
            .execute(),
        )
      ).map((row) => [row.actor_display, row.ip, row.user_agent]);
    const before = [
      [ALICE.display, '198.51.100.7', `browser of ${ALICE.id}`],
      [BOB.display, '198.51.100.7', `browser of ${BOB.id}`],
      ['carol@rotation.test', '198.51.100.8', null],
    ];
    expect(await personal(server)).toEqual(before);

    // Bob is erased: his key row is deleted (crypto-shredding).
    await db.db.transaction().execute((tx) => server.pii.shred(tx, { userId: BOB.id, email: BOB.email }));
    const afterErasure = [before[0], [ERASED, ERASED, ERASED], before[2]];
    expect(await personal(open(db, () => keyFile))).toEqual(afterErasure);

    // A key no master key opens (Alice's wrapped key copied onto another row: bound to its row, it
    // fails to open), first in id order: the rotation must pass over it, not stop at it.
    const alice = await db.db
      .selectFrom('audit_pii_keys')
      .selectAll()
      .where('user_id', '=', ALICE.id)
      .executeTakeFirstOrThrow();
    await db.db
      .insertInto('audit_pii_keys')
      .values({ ...alice, user_id: 'usr_broken', id: 'pik_0' })
      .execute();

    // `bulwark keys rotate`: a new master key on top of the file, then the re-wrap (a new process).
    const oldKey = keyFile.current;
    keyFile = { current: randomBytes(32), previous: [oldKey] };
    const cli = open(db, () => keyFile);
    const result = await rewrapDataKeys({ ...cli, actor: ACTOR, batchSize: 1 });

    // The operator removes the old master key, as the docs say once nothing names it.
    keyFile = { current: keyFile.current, previous: [] };
    const restarted = open(db, () => keyFile);
    expect(await personal(restarted)).toEqual(afterErasure);
    const opened = await restarted.dataKeys.open('instance', secret, 'test/setting');
    expect(opened.plaintext.toString()).toBe('a sealed setting');
    expect(result.piiKeys).toEqual({ rewrapped: 2, unopenable: ['pik_0'], left: 1 });
    // The re-wrap brought no erased key back, and leaves nothing for a second run.
    const keyRows = await db.db.selectFrom('audit_pii_keys').select('user_id').execute();
    expect(keyRows.map((row) => row.user_id).sort()).toEqual([
      expect.stringMatching(/^email:/),
      ALICE.id,
      'usr_broken',
    ]);
    expect((await rewrapDataKeys({ ...restarted, actor: ACTOR })).piiKeys).toEqual({
      rewrapped: 0,
      unopenable: ['pik_0'],
      left: 1,
    });

    // Audited with counts, never key material: the data keys in one event, then one per PII batch.
    const events = await db.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'keys.data_keys_rewrapped')
      .orderBy('seq')
      .execute();
    expect(events.map((event) => JSON.parse(event.details!))).toEqual([
      { rewrapped: 1, alreadyCurrent: 0 },
      { piiKeysRewrapped: 0, piiKeysUnopenable: 1 },
      { piiKeysRewrapped: 1, piiKeysUnopenable: 0 },
      { piiKeysRewrapped: 1, piiKeysUnopenable: 0 },
      { rewrapped: 0, alreadyCurrent: 1 },
      { piiKeysRewrapped: 0, piiKeysUnopenable: 1 },
    ]);
    for (const audit of [server.audit, cli.audit, restarted.audit]) await audit.close();
  });
});
