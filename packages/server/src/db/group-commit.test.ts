import type { Transaction } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { testDatabases } from '../test-support/databases.js';
import type { Database } from './database.js';
import { createGroupCommit } from './group-commit.js';
import { migrateToLatest } from './migrate.js';
import type { DB } from './schema.js';

describe.each(testDatabases())('group commit on $dialect', (target) => {
  let writer: Database;
  let reader: Database;
  let drop: () => Promise<void>;

  beforeEach(async () => {
    const created = await target.create();
    writer = created.open();
    await migrateToLatest(writer);
    reader = created.open();
    drop = created.drop;
  });
  afterEach(async () => {
    await writer.close();
    await reader.close();
    await drop();
  });

  const org = (id: string) => ({ id, slug: id.replace('_', '-'), name: id, created_at: 1, mfa_required: 1 });
  const orgIds = async (db: Database) =>
    (await db.db.selectFrom('orgs').select('id').orderBy('id').execute()).map((row) => row.id);

  it('commits the writes of one turn together, and each caller learns of it only once committed', async () => {
    const groupCommit = createGroupCommit(writer.db);
    const seen: Transaction<DB>[] = [];
    const insert = (id: string) =>
      groupCommit(async (trx) => {
        seen.push(trx);
        await trx.insertInto('orgs').values(org(id)).execute();
        return id;
      });

    const firstTurn = [insert('org_a'), insert('org_b'), insert('org_c')];
    expect(await Promise.all(firstTurn)).toEqual(['org_a', 'org_b', 'org_c']);
    // One transaction for the three, and already visible to another connection when they resolved.
    expect(new Set(seen).size).toBe(1);
    expect(await orgIds(reader)).toEqual(['org_a', 'org_b', 'org_c']);

    await insert('org_d');
    expect(seen).toHaveLength(4);
    expect(seen[3]).not.toBe(seen[0]);
  });

  it('fails a bad write alone: the others of its batch still commit', async () => {
    const groupCommit = createGroupCommit(writer.db);
    await writer.db.insertInto('orgs').values(org('org_taken')).execute();
    const insert = (id: string) => groupCommit((trx) => trx.insertInto('orgs').values(org(id)).execute());

    const results = await Promise.allSettled([insert('org_a'), insert('org_taken'), insert('org_b')]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(await orgIds(reader)).toEqual(['org_a', 'org_b', 'org_taken']);
  });

  it('keeps the order of writes to the same row: a later guarded update sees the earlier one', async () => {
    const groupCommit = createGroupCommit(writer.db);
    await writer.db.insertInto('orgs').values(org('org_a')).execute();
    const rename = (from: string, to: string) =>
      groupCommit(async (trx) => {
        const result = await trx
          .updateTable('orgs')
          .set({ name: to })
          .where('id', '=', 'org_a')
          .where('name', '=', from)
          .executeTakeFirst();
        return Number(result.numUpdatedRows);
      });

    expect(
      await Promise.all([rename('org_a', 'first'), rename('first', 'second'), rename('org_a', 'x')]),
    ).toEqual([1, 1, 0]);
    expect(await reader.db.selectFrom('orgs').select('name').executeTakeFirstOrThrow()).toEqual({
      name: 'second',
    });
  });
});
