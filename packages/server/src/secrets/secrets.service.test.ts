import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Caller } from '../access/caller.js';
import { createAuditedTransactions } from '../audit/audited-transaction.js';
import type { Database } from '../db/database.js';
import { openAudit } from '../test-support/audit.js';
import { testDatabases } from '../test-support/databases.js';
import { createDataKeyring } from './data-keyring.js';
import { createDataKeysStore } from './data-keys.store.js';
import { createLocalKeyProvider } from './key-provider.js';
import { createSecretsService } from './secrets.service.js';

/**
 * Two requests creating a secret of the same name at once, on PostgreSQL (where both transactions
 * run; SQLite has one writer). The interleaving is forced: another connection holds an uncommitted
 * row of that name, the service's own check cannot see it and its insert waits on the unique index;
 * when the other commits, the service must answer 409 `secret_exists`, not fail with a 500.
 */

const postgres = testDatabases().filter((target) => target.dialect === 'postgres');

describe.skipIf(postgres.length === 0)('creating a secret whose name another transaction is taking', () => {
  let database: Database;
  let other: Database;
  let drop: () => Promise<void>;

  beforeEach(async () => {
    const created = await postgres[0]!.create();
    database = created.open();
    other = created.open();
    drop = created.drop;
  });
  afterEach(async () => {
    await other.close();
    await database.close();
    await drop();
  });

  it('answers 409 secret_exists once the other commits', async () => {
    const { audit, db } = await openAudit(database);
    await db
      .insertInto('orgs')
      .values({ id: 'org_acme', slug: 'acme', name: 'Acme', created_at: 1, mfa_required: 1 })
      .execute();
    const masterKeys = { current: randomBytes(32), previous: [] };
    const secrets = createSecretsService({
      db,
      transact: createAuditedTransactions(audit),
      dataKeys: createDataKeyring({
        store: createDataKeysStore(db),
        provider: createLocalKeyProvider(masterKeys, () => masterKeys),
        clock: Date.now,
      }),
      clock: Date.now,
    });
    const caller = {
      userId: 'usr_owner',
      actor: { type: 'user', id: 'usr_owner', display: 'owner@acme.test' },
      org: { id: 'org_acme', slug: 'acme', name: 'Acme', role: 'owner' },
      context: {},
    } as unknown as Caller;

    let commitOther!: () => void;
    const otherCommitted = other.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('secrets')
        .values({
          id: 'sec_other',
          org_id: 'org_acme',
          name: 'RACE',
          description: '',
          current_version: 1,
          created_by: 'usr_other',
          created_at: 1,
          updated_by: 'usr_other',
          updated_at: 1,
        })
        .execute();
      await new Promise<void>((resolve) => {
        commitOther = resolve;
      });
    });
    await vi.waitFor(() => expect(commitOther).toBeTypeOf('function'));

    const created = secrets.create(caller, { name: 'RACE', description: '', value: 'value' });
    const outcome = created.then(
      () => 'stored',
      (error: { status?: number; code?: string }) => `${error.status} ${error.code}`,
    );
    // Released only once the service's insert is waiting on the other transaction's row.
    await vi.waitFor(
      async () => {
        const waiting = await sql<{
          n: number;
        }>`select count(*)::int as n from pg_locks where not granted`.execute(db);
        expect(waiting.rows[0]!.n).toBeGreaterThan(0);
      },
      { timeout: 10_000, interval: 20 },
    );
    commitOther();
    await otherCommitted;
    expect(await outcome).toBe('409 secret_exists');
    await audit.close();
  });
});
