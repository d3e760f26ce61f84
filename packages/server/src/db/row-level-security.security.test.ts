import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureTestRole, postgresUrl } from '../test-support/databases.js';
import { startOrgWorld } from '../test-support/org-world.js';
import { type Database, openPostgres } from './database.js';
import { migrateDatabase, migrateToLatest, migrateUpTo } from './migrate.js';
import { ORG_OWNED_TABLES } from './migrations/0030-row-level-security.js';
import { ALL_ORGS, inOrgScope } from './org-scope.js';

/**
 * The attack: a query that forgets its organization filter (a bug in some store, a new route that
 * looks a row up by id alone) while serving a member of organization A. Row-level security is the
 * second lock: the server connects as a role that owns nothing and cannot bypass the policies, each
 * checkout of a connection names the organization it works for, and PostgreSQL itself keeps every
 * other organization's rows out of sight and out of reach, table by table.
 */

/** Tables that belong to no organization, and why. A new table must be classified here or in migration 0030. */
const NOT_ORG_OWNED: Record<string, string> = {
  orgs: 'the organizations themselves, read by slug before one is chosen',
  users: 'people, who may belong to several organizations',
  sessions: "a person's sign-ins, before and across organizations",
  mfa_factors: "a person's second factors",
  recovery_codes: "a person's recovery codes",
  webauthn_challenges: "a session's passkey challenges",
  sso_identities: "a person's provider accounts, linked across organizations",
  notifications: "a person's notifications",
  user_devices: "a person's known devices",
  email_outbox: 'mail to people, sent by the instance',
  audit_pii_keys: "a person's PII key, erased with them",
  server_keys: "the instance's signing keys",
  workload_identity_keys: "the instance's workload-identity keys",
  upgrade_notes: 'what migrations did, for the instance chain',
  bulwark_migrations: 'the schema version',
  bulwark_migrations_lock: 'the migration lock',
};

const owner = `bulwark_rls_owner_${randomBytes(4).toString('hex')}`;
const app = `bulwark_rls_app_${randomBytes(4).toString('hex')}`;
const databases: string[] = [];

async function asAdmin<T>(work: (admin: pg.Client) => Promise<T>, database?: string): Promise<T> {
  const url = new URL(postgresUrl()!);
  if (database) url.pathname = `/${database}`;
  const admin = new pg.Client({ connectionString: url.toString() });
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}

/** The same database's URL as the owner. */
const ownerUrlOf = (appUrl: string) => {
  const url = new URL(appUrl);
  url.username = owner;
  return url.toString();
};

/** A fresh database owned by `owner`, and its URLs as the owner and as the application role. */
async function createDatabase(): Promise<{ name: string; ownerUrl: string; appUrl: string }> {
  const name = `bulwark_test_${randomBytes(6).toString('hex')}`;
  await asAdmin((admin) => admin.query(`create database ${name} owner ${owner}`));
  databases.push(name);
  const urlAs = (role: string) => {
    const url = new URL(postgresUrl()!);
    url.username = role;
    url.password = '';
    url.pathname = `/${name}`;
    return url.toString();
  };
  return { name, ownerUrl: urlAs(owner), appUrl: urlAs(app) };
}

const ORG_A = 'org_rlsa';
const ORG_B = 'org_rlsb';

interface Column {
  table: string;
  column: string;
  type: string;
  nullable: boolean;
  hasDefault: boolean;
}
interface ForeignKey {
  table: string;
  column: string;
  parent: string;
  parentColumn: string;
}

/**
 * One row for each organization in every table, whatever the schema holds: every column not null
 * gets a value of its type, a foreign key the value of its parent's row of the same organization,
 * and the column naming the organization the organization. Nothing here knows the tables, so a table
 * a later migration adds is seeded (and then attacked) too.
 */
async function seedEveryTable(db: Database): Promise<Map<string, Map<string, Record<string, unknown>>>> {
  const columns = (
    await sql<Column>`select table_name as "table", column_name as "column", data_type as type,
        is_nullable = 'YES' as nullable, column_default is not null as "hasDefault"
      from information_schema.columns where table_schema = current_schema()
      order by table_name, ordinal_position`.execute(db.db)
  ).rows;
  const foreignKeys = (
    await sql<ForeignKey>`select c.conrelid::regclass::text as "table", a.attname as "column",
        c.confrelid::regclass::text as parent, pa.attname as "parentColumn"
      from pg_constraint c
      cross join lateral unnest(c.conkey, c.confkey) as k(child_key, parent_key)
      join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.child_key
      join pg_attribute pa on pa.attrelid = c.confrelid and pa.attnum = k.parent_key
      where c.contype = 'f' and c.connamespace = current_schema()::regnamespace`.execute(db.db)
  ).rows;
  const tables = [...new Set(columns.map((c) => c.table))];
  const parentsOf = (table: string) =>
    foreignKeys.filter((fk) => fk.table === table && fk.parent !== table).map((fk) => fk.parent);
  const seeded = new Map<string, Map<string, Record<string, unknown>>>();
  const pending = new Set(tables.filter((t) => !t.startsWith('bulwark_migrations')));
  while (pending.size > 0) {
    const ready = [...pending].filter((t) => parentsOf(t).every((p) => seeded.has(p) || !pending.has(p)));
    expect(ready.length, `a foreign-key cycle among ${[...pending].join(', ')}`).toBeGreaterThan(0);
    for (const table of ready) {
      pending.delete(table);
      const rows = new Map<string, Record<string, unknown>>();
      for (const org of [ORG_A, ORG_B]) {
        const row: Record<string, unknown> = {};
        for (const column of columns.filter((c) => c.table === table)) {
          const fk = foreignKeys.find((f) => f.table === table && f.column === column.column);
          if (table === 'orgs' && column.column === 'id') row.id = org;
          else if (ORG_OWNED_TABLES[table] === column.column) row[column.column] = org;
          else if (table === 'data_keys' && column.column === 'scope') row.scope = `org:${org}`;
          else if (fk && fk.parent !== table)
            row[column.column] = seeded.get(fk.parent)!.get(org)![fk.parentColumn];
          else if (column.nullable || column.hasDefault) continue;
          else if (/int|numeric/.test(column.type)) row[column.column] = 1;
          else if (column.type === 'boolean') row[column.column] = false;
          else row[column.column] = `${table}.${column.column}.${org}`;
        }
        await db.db
          .insertInto(table as never)
          .values(row as never)
          .execute();
        rows.set(org, row);
      }
      seeded.set(table, rows);
    }
  }
  return seeded;
}

describe.skipIf(!postgresUrl())('row-level security on PostgreSQL (HA-2, ACC-1)', () => {
  let appDb: Database;
  let appUrl: string;
  let seeded: Map<string, Map<string, Record<string, unknown>>>;
  let applied: string[];

  beforeAll(async () => {
    await asAdmin(async (admin) => {
      await ensureTestRole(admin, owner);
      await ensureTestRole(admin, app);
    });
    const created = await createDatabase();
    appUrl = created.appUrl;
    appDb = openPostgres({ url: appUrl, poolMax: 3 });
    // As the server starts: migrations as the owner, which grants the server's role row access.
    applied = await migrateDatabase(appDb, {
      database: { kind: 'postgres', url: appUrl, ownerUrl: created.ownerUrl },
    });
    // Outside any organization's scope (ALL_ORGS), as the application role: one row per org everywhere.
    seeded = await seedEveryTable(appDb);
  }, 120_000);

  afterAll(async () => {
    await appDb?.close();
    await asAdmin(async (admin) => {
      for (const name of databases) await admin.query(`drop database if exists ${name} with (force)`);
      await admin.query(`drop role if exists ${app}`);
      await admin.query(`drop role if exists ${owner}`);
    });
  });

  it('migrates as the owner and serves as a role that owns nothing and bypasses nothing', async () => {
    expect(applied).toContain('0030-row-level-security');
    const { rows } = await sql<{ rolsuper: boolean; rolbypassrls: boolean; owned: number }>`
      select rolsuper, rolbypassrls,
        (select count(*)::int from pg_tables where schemaname = current_schema() and tableowner = current_user) as owned
      from pg_roles where rolname = current_user`.execute(appDb.db);
    expect(rows).toEqual([{ rolsuper: false, rolbypassrls: false, owned: 0 }]);
    // Nor may it change the schema, or turn the policies off.
    await expect(sql`alter table commands disable row level security`.execute(appDb.db)).rejects.toThrow(
      /must be owner/,
    );
    await expect(sql`create table smuggled (id text)`.execute(appDb.db)).rejects.toThrow(/permission denied/);
    // It reads the schema's version and cannot rewrite it.
    await expect(sql`delete from bulwark_migrations`.execute(appDb.db)).rejects.toThrow(/permission denied/);
  });

  it('grants row access once per start, whoever else starts at the same moment', async () => {
    const { database } = {
      database: { kind: 'postgres' as const, url: appUrl, ownerUrl: ownerUrlOf(appUrl) },
    };
    // PostgreSQL refuses GRANTs on one table at once ("tuple concurrently updated"): instances
    // starting together must take turns, not fail to start.
    for (let round = 0; round < 5; round++)
      await Promise.all([1, 2, 3].map(() => migrateDatabase(appDb, { database })));
  });

  it('classifies every table: each org-owned one is forced under a policy, the rest hold no organization', async () => {
    const { rows } = await sql<{
      table: string;
      forced: boolean;
      enabled: boolean;
      policies: number;
      org: boolean;
    }>`
      select c.relname as "table", c.relrowsecurity as enabled, c.relforcerowsecurity as forced,
        (select count(*)::int from pg_policies p where p.schemaname = current_schema() and p.tablename = c.relname) as policies,
        exists (select 1 from information_schema.columns i where i.table_schema = current_schema()
          and i.table_name = c.relname and i.column_name = 'org_id') as org
      from pg_class c where c.relnamespace = current_schema()::regnamespace and c.relkind = 'r'`.execute(
      appDb.db,
    );
    const guarded = new Set([...Object.keys(ORG_OWNED_TABLES), 'data_keys']);
    for (const row of rows) {
      if (guarded.has(row.table)) {
        expect(row, row.table).toMatchObject({ enabled: true, forced: true, policies: 1 });
      } else {
        expect(
          NOT_ORG_OWNED[row.table],
          `${row.table} is neither org-owned nor classified as global`,
        ).toBeDefined();
        expect(row.org, `${row.table} names an organization but has no policy`).toBe(false);
      }
    }
    expect(rows.map((r) => r.table).sort()).toEqual([...guarded, ...Object.keys(NOT_ORG_OWNED)].sort());
  });

  it('shows a query without an org filter only the rows of the organization it serves, in every org-owned table', async () => {
    for (const [table, column] of Object.entries(ORG_OWNED_TABLES)) {
      for (const [org, other] of [
        [ORG_A, ORG_B],
        [ORG_B, ORG_A],
      ] as const) {
        const { rows } = await inOrgScope(org, () =>
          sql<{ owner: string }>`select ${sql.ref(column)} as owner from ${sql.table(table)}`.execute(
            appDb.db,
          ),
        );
        // Its own row is there (the scope works), and nothing of the other organization is.
        expect(
          rows.map((r) => r.owner),
          `${table} seen from ${org}`,
        ).toEqual([org]);
        expect(rows.some((r) => r.owner === other)).toBe(false);
      }
    }
    // An organization's data keys likewise; the instance's (serving every organization) stays visible.
    const keys = await inOrgScope(ORG_A, () =>
      sql<{ scope: string }>`select scope from data_keys`.execute(appDb.db),
    );
    expect(keys.rows.map((r) => r.scope)).toEqual([`org:${ORG_A}`]);
    // Work for no one organization (start-up, jobs) sees all of them.
    const all = await sql<{ n: number }>`select count(*)::int as n from commands`.execute(appDb.db);
    expect(all.rows[0]!.n).toBe(2);
  });

  it("lets a write without an org filter neither change, delete nor create another organization's rows", async () => {
    for (const [table, column] of Object.entries(ORG_OWNED_TABLES)) {
      const theirs = seeded.get(table)!.get(ORG_B)!;
      await inOrgScope(ORG_A, async () => {
        // Everything a forgetful delete reaches, in a transaction taken back: A's row only.
        const deleted = await appDb.db
          .transaction()
          .execute(async (trx) => {
            const result = await sql`delete from ${sql.table(table)}`.execute(trx);
            throw Object.assign(new Error('roll back'), { deleted: Number(result.numAffectedRows) });
          })
          .catch((error: { deleted?: number }) => error.deleted);
        expect(deleted, `rows of ${table} a delete from ${ORG_A} reached`).toBe(1);
        // Moving one's own row into the other organization is refused.
        await expect(
          sql`update ${sql.table(table)} set ${sql.ref(column)} = ${ORG_B}`.execute(appDb.db),
          table,
        ).rejects.toMatchObject({ code: '42501' });
        // So is writing a row that claims to be the other organization's.
        await expect(
          appDb.db
            .insertInto(table as never)
            .values(theirs as never)
            .execute(),
          table,
        ).rejects.toMatchObject({ code: '42501' });
      });
    }
    const intact = await sql<{ n: number }>`select count(*)::int as n from secrets`.execute(appDb.db);
    expect(intact.rows[0]!.n).toBe(2);
  });

  it('shows a connection that names no organization nothing at all (fail closed)', async () => {
    const bare = new pg.Client({ connectionString: appUrl });
    await bare.connect();
    try {
      for (const table of Object.keys(ORG_OWNED_TABLES)) {
        const { rows } = await bare.query(`select count(*)::int as n from ${table}`);
        expect(rows[0].n, table).toBe(0);
      }
      // And a value that is no organization matches none: ALL_ORGS is the only wildcard.
      await bare.query(`select set_config('bulwark.org_id', $1, false)`, ["' or true --"]);
      expect((await bare.query('select count(*)::int as n from commands')).rows[0].n).toBe(0);
      await bare.query(`select set_config('bulwark.org_id', $1, false)`, [ALL_ORGS]);
      expect((await bare.query('select count(*)::int as n from commands')).rows[0].n).toBe(2);
    } finally {
      await bare.end();
    }
  });

  it('gives the rows of an older database their organization as it upgrades', async () => {
    const { ownerUrl } = await createDatabase();
    const older = openPostgres({ url: ownerUrl, poolMax: 2 });
    try {
      await migrateUpTo(older, '0029-instance-audit-sinks');
      await seedEveryTable(older);
      await migrateToLatest(older);
      for (const [table, parent, key] of [
        ['secret_versions', 'secrets', 'secret_id'],
        ['command_approvals', 'commands', 'command_id'],
        ['command_output', 'commands', 'command_id'],
        ['sso_sign_ins', 'sso_connections', 'connection_id'],
        ['saml_assertions', 'sso_connections', 'connection_id'],
      ] as const) {
        const { rows } = await sql<{ child: string; parent: string }>`
          select c.org_id as child, p.org_id as parent from ${sql.table(table)} c
          join ${sql.table(parent)} p on p.id = ${sql.ref(`c.${key}`)} order by p.org_id`.execute(older.db);
        expect(rows, table).toEqual([
          { child: ORG_A, parent: ORG_A },
          { child: ORG_B, parent: ORG_B },
        ]);
      }
    } finally {
      await older.close();
    }
  });

  it("runs an organization's requests in its scope, on a server started with the two roles", async () => {
    const { name, ownerUrl, appUrl: serverUrl } = await createDatabase();
    const world = await startOrgWorld({
      BULWARK_DATABASE_URL: serverUrl,
      BULWARK_DATABASE_OWNER_URL: ownerUrl,
    });
    try {
      // A probe the database itself keeps: the organization each secret was written for.
      await asAdmin(async (admin) => {
        await admin.query('create table scope_probe (setting text)');
        await admin.query(`grant insert on scope_probe to ${app}`);
        await admin.query(`create function probe_scope() returns trigger language plpgsql as $$
          begin insert into scope_probe values (current_setting('bulwark.org_id', true)); return new; end $$`);
        await admin.query(
          'create trigger probe after insert on secrets for each row execute function probe_scope()',
        );
      }, name);
      const created = await world.owner.client.send('POST', '/api/orgs/acme/secrets', {
        name: 'PROBE',
        value: 'probe-value',
      });
      expect(created.status).toBe(201);
      const probed = await asAdmin(async (admin) => {
        const orgs = await admin.query(`select id from orgs where slug = 'acme'`);
        const settings = await admin.query('select setting from scope_probe');
        return { acme: orgs.rows[0].id as string, settings: settings.rows.map((r) => r.setting) };
      }, name);
      expect(probed.settings).toEqual([probed.acme]);

      // A streamed answer is read after its handler returned: its queries stay in the organization.
      await asAdmin(async (admin) => {
        await admin.query('create table read_probe (setting text)');
        await admin.query(`grant insert on read_probe to ${app}`);
        await admin.query(`create function probe_read() returns boolean language plpgsql volatile as $$
          begin insert into read_probe values (current_setting('bulwark.org_id', true)); return true; end $$`);
        await admin.query(
          'create policy probe_read on audit_events as restrictive for select using (probe_read())',
        );
      }, name);
      const exported = await world.owner.client.send('GET', '/api/orgs/acme/audit/export?format=ndjson');
      expect(exported.status).toBe(200);
      expect((await exported.text()).split('\n').filter(Boolean).length).toBeGreaterThan(0);
      const streamed = await asAdmin(
        async (admin) =>
          (await admin.query('select distinct setting from read_probe')).rows.map((r) => r.setting),
        name,
      );
      expect(streamed).toEqual([probed.acme]);
      expect(world.server.logs.text).not.toMatch(/superuser|BYPASSRLS|owns the schema/);
    } finally {
      await world.close();
    }
  }, 120_000);
});
