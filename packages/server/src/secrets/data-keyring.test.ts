import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Database } from '../db/database.js';
import { migrateToLatest } from '../db/migrate.js';
import { testDatabases } from '../test-support/databases.js';
import { createDataKeyring, orgScope } from './data-keyring.js';
import { createDataKeysStore } from './data-keys.store.js';
import { createLocalKeyProvider } from './key-provider.js';
import { SealedValueError } from './keyring.js';
import type { MasterKeys } from './master-key.js';

/**
 * The keyring on a real database (SEC-1, SEC-2): values sealed by per-organization data keys, the
 * data keys wrapped by the master key, both rotated while values keep opening.
 */

describe.each(testDatabases())('data keyring on $dialect', (target) => {
  let database: Database;
  let drop: () => Promise<void>;
  /** The key file, as `bulwark keys rotate` rewrites it. */
  let masterKeys: MasterKeys;

  beforeEach(async () => {
    const created = await target.create();
    database = created.open();
    await migrateToLatest(database);
    drop = created.drop;
    masterKeys = { current: randomBytes(32), previous: [] };
  });
  afterEach(async () => {
    await database.close();
    await drop();
  });

  /** A server process's keyring: its own caches, the shared database and key file. */
  const keyring = () =>
    createDataKeyring({
      store: createDataKeysStore(database.db),
      provider: createLocalKeyProvider(masterKeys, () => masterKeys),
      clock: Date.now,
    });
  const rotateMasterKey = () => {
    masterKeys = { current: randomBytes(32), previous: [masterKeys.current, ...masterKeys.previous] };
  };
  const acme = orgScope('org_acme');
  const globex = orgScope('org_globex');

  it('seals each organization under its own data key, named on the value, and never in clear', async () => {
    const ring = keyring();
    const sealed = await ring.seal(acme, 'hunter2-database-password', 'secrets/sec_1/v1');
    const other = await ring.seal(globex, 'hunter2-database-password', 'secrets/sec_1/v1');
    const keys = await ring.list();
    expect(keys.map((k) => k.scope).sort()).toEqual([acme, globex]);
    expect(sealed.split('.')[1]).toBe(keys.find((k) => k.scope === acme)!.id);
    expect(other.split('.')[1]).toBe(keys.find((k) => k.scope === globex)!.id);
    for (const value of [sealed, ...keys.map((k) => k.wrapped_key)])
      expect(value).not.toContain(Buffer.from('hunter2').toString('base64url').slice(0, 8));
    // Another process (another instance, or after a restart) opens it from the database.
    const opened = await keyring().open(acme, sealed, 'secrets/sec_1/v1');
    expect(opened).toEqual({ plaintext: Buffer.from('hunter2-database-password'), stale: false });
  });

  it('refuses a value copied to another organization, row or purpose, and any tampered part', async () => {
    // Attack: someone who can write the database but holds no key moves or edits sealed values.
    const ring = keyring();
    const sealed = await ring.seal(acme, 'value', 'secrets/sec_1/v1');
    await ring.seal(globex, 'other', 'secrets/sec_2/v1');
    await expect(ring.open(globex, sealed, 'secrets/sec_1/v1')).rejects.toThrow('belongs to another scope');
    await expect(keyring().open(globex, sealed, 'secrets/sec_1/v1')).rejects.toThrow(
      'belongs to another scope',
    );
    await expect(ring.open(acme, sealed, 'secrets/sec_2/v1')).rejects.toThrow(SealedValueError);
    const parts = sealed.split('.');
    for (const index of [2, 3, 4]) {
      const bytes = Buffer.from(parts[index]!, 'base64url');
      bytes[0]! ^= 0x01;
      const tampered = parts.map((part, i) => (i === index ? bytes.toString('base64url') : part)).join('.');
      await expect(ring.open(acme, tampered, 'secrets/sec_1/v1')).rejects.toThrow('failed authentication');
    }
    const unknownKey = [parts[0], 'dek_01M81RWRK97VAF84EJG8N16590', ...parts.slice(2)].join('.');
    await expect(ring.open(acme, unknownKey, 'secrets/sec_1/v1')).rejects.toThrow('unknown data key');
  });

  it('refuses a data key whose wrapped form was moved from another scope', async () => {
    // Attack: copy organization B's wrapped data key into organization A's row, so that A's values
    // would be sealed under a key B's people can use.
    await keyring().seal(acme, 'value', 'c');
    await keyring().seal(globex, 'value', 'c');
    const [a, b] = await database.db.selectFrom('data_keys').selectAll().orderBy('scope').execute();
    await database.db
      .updateTable('data_keys')
      .set({ wrapped_key: b!.wrapped_key })
      .where('id', '=', a!.id)
      .execute();
    const fresh = keyring();
    await expect(fresh.seal(acme, 'x', 'c')).rejects.toThrow('failed authentication');
  });

  it('rotates the master key twice and the data keys twice, and every value still opens', async () => {
    const ring = keyring();
    const values = new Map<string, { scope: typeof acme; context: string; plaintext: string }>();
    const sealSome = async (round: number) => {
      for (const scope of [acme, globex, 'instance' as const]) {
        const context = `test/${scope}/${round}`;
        const plaintext = `value ${round} of ${scope}`;
        values.set(await ring.seal(scope, plaintext, context), {
          scope: scope as typeof acme,
          context,
          plaintext,
        });
      }
    };
    const openAll = async (reader = keyring()) => {
      for (const [sealed, { scope, context, plaintext }] of values)
        expect((await reader.open(scope, sealed, context)).plaintext.toString()).toBe(plaintext);
    };

    await sealSome(0);
    for (let round = 1; round <= 2; round++) {
      rotateMasterKey();
      const rewrap = await keyring().rewrapAll();
      expect(rewrap.rewrapped).toBe((await ring.list()).length);
      expect(new Set((await ring.list()).map((k) => k.master_key_id)).size).toBe(1);
      // The running process keeps its unwrapped keys and goes on sealing and opening.
      await sealSome(round);
      await openAll(ring);
      await openAll();
    }
    // Only the newest master key is needed now: the data keys are all wrapped by it.
    masterKeys = { current: masterKeys.current, previous: [] };
    await openAll();

    for (let round = 3; round <= 4; round++) {
      for (const scope of [acme, globex, 'instance' as const]) await ring.rotate(scope);
      await sealSome(round);
    }
    await openAll();
    const keys = await ring.list();
    expect(keys.filter((k) => k.status === 'active')).toHaveLength(3);
    expect(keys.filter((k) => k.status === 'retired')).toHaveLength(6);

    // Values under a retired data key open, and say they should be sealed again (lazily).
    const [oldest, { scope, context }] = [...values.entries()][0]!;
    const opened = await ring.open(scope, oldest, context);
    expect(opened.stale).toBe(true);
    const resealed = await ring.seal(scope, opened.plaintext, context);
    expect((await ring.open(scope, resealed, context)).stale).toBe(false);
  });

  it('says which master key is missing when a data key is wrapped by one the key file no longer holds', async () => {
    await keyring().seal(acme, 'value', 'c');
    masterKeys = { current: randomBytes(32), previous: [] };
    await expect(keyring().seal(acme, 'x', 'c')).rejects.toThrow('which this server does not hold');
  });

  it('makes one active data key per scope when two processes need the first one at once', async () => {
    const [first, second] = await Promise.all([
      keyring().seal(acme, 'one', 'c'),
      keyring().seal(acme, 'two', 'c'),
    ]);
    const active = (await keyring().list()).filter((k) => k.scope === acme && k.status === 'active');
    expect(active).toHaveLength(1);
    expect(first.split('.')[1]).toBe(active[0]!.id);
    expect(second.split('.')[1]).toBe(active[0]!.id);
  });
});
