import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { freshDatabasePerTest, testDatabases } from '../test-support/databases.js';
import { compiledOnce } from './compiled-once.js';
import { migrateToLatest } from './migrate.js';

describe.each(testDatabases())('compiled-once queries on $dialect', (target) => {
  const database = freshDatabasePerTest(target);

  async function seed() {
    const { db } = database();
    await migrateToLatest(database());
    const org = (id: string, slug: string) => ({ id, slug, name: slug, created_at: 1, mfa_required: 1 });
    await db
      .insertInto('orgs')
      .values([org('org_a', 'alpha'), org('org_b', 'beta')])
      .execute();
    return db;
  }

  it('binds new arguments on every call, an argument used twice included, and keeps constants', async () => {
    const db = await seed();
    let builds = 0;
    const query = compiledOnce(db, (args: { slug: string; other: string }) => {
      builds++;
      return db
        .selectFrom('orgs')
        .select(['id', 'slug'])
        .where((eb) =>
          eb.or([eb('slug', '=', args.slug), eb('name', '=', args.slug), eb('id', '=', args.other)]),
        )
        .where('created_at', '=', 1) // a constant stays a constant
        .orderBy('id');
    });
    expect(await query.all({ slug: 'alpha', other: 'none' })).toEqual([{ id: 'org_a', slug: 'alpha' }]);
    expect(await query.all({ slug: 'beta', other: 'org_a' })).toEqual([
      { id: 'org_a', slug: 'alpha' },
      { id: 'org_b', slug: 'beta' },
    ]);
    expect(await query.first({ slug: 'gamma', other: 'none' })).toBeUndefined();
    expect(builds).toBe(1);
  });

  it('runs in the transaction it is given, with an array of arguments for a multi-row insert', async () => {
    const db = await seed();
    const insert = compiledOnce(db, (values: unknown[]) =>
      db.insertInto('orgs').values(
        [0, 1].map((row) => ({
          id: values[row * 2] as string,
          slug: values[row * 2 + 1] as string,
          name: 'n',
          created_at: 1,
          mfa_required: 1,
        })),
      ),
    );
    const slugs = async () =>
      (await db.selectFrom('orgs').select('slug').orderBy('slug').execute()).map((r) => r.slug);
    // Rolled back with its transaction: the insert ran in it, not beside it on the database.
    await expect(
      db.transaction().execute(async (trx) => {
        await insert.execute(['org_c', 'gamma', 'org_d', 'delta'], trx);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await slugs()).toEqual(['alpha', 'beta']);
    await db.transaction().execute((trx) => insert.execute(['org_c', 'gamma', 'org_d', 'delta'], trx));
    expect(await slugs()).toEqual(['alpha', 'beta', 'delta', 'gamma']);
  });

  it('treats a value that looks like a placeholder as data, never as an argument', async () => {
    // Attack: a caller-supplied value crafted to resemble the placeholder text. Placeholders carry a
    // random marker chosen at compile time, so no input can name another argument.
    const db = await seed();
    const query = compiledOnce(db, (args: { slug: string }) =>
      db.selectFrom('orgs').select('id').where('slug', '=', args.slug),
    );
    // (Without the leading NUL of the real marker, which PostgreSQL refuses in text anyway.)
    expect(await query.all({ slug: 'arg-0000000000000000:slug' })).toEqual([]);
    expect(await query.all({ slug: 'beta' })).toEqual([{ id: 'org_b' }]);
  });

  it('refuses at compile time an argument used other than as a bound value', async () => {
    const db = await seed();
    const spliced = compiledOnce(db, (args: { column: string }) =>
      db.selectFrom('orgs').select('id').where(sql.ref(args.column), '=', 'alpha'),
    );
    await expect(spliced.all({ column: 'slug' })).rejects.toThrow(/outside its bound values/);
    const transformed = compiledOnce(db, (args: { slug: string }) =>
      db.selectFrom('orgs').select('id').where('slug', '=', args.slug.toUpperCase()),
    );
    await expect(transformed.all({ slug: 'alpha' })).rejects.toThrow(/outside its bound values/);
    const concatenated = compiledOnce(db, (args: { slug: string }) =>
      db.selectFrom('orgs').select('id').where('slug', 'like', `%${args.slug}%`),
    );
    await expect(concatenated.all({ slug: 'alp' })).rejects.toThrow(/other than as a bound value/);
  });
});
