import { type Kysely, PostgresAdapter, sql } from 'kysely';

/**
 * Row-level security (HA-2, ACC-1's second enforcement). Every org-owned table carries its
 * organization, and on PostgreSQL a policy admits only the rows of the organization named by the
 * connection's `bulwark.org_id` setting (db/org-scope.ts), or every row when it is `*`; with nothing
 * set, none. FORCE applies the policies to the tables' owner too, so a deployment that runs the
 * application as the owning role is covered as well; only a superuser or a BYPASSRLS role escapes
 * them, and the server warns at every start when it connects as one (ops/privilege-warnings.ts).
 *
 * Child tables that reached their organization only through a parent (secret versions, approvals,
 * output, the SSO sign-ins and SAML replay cache of a connection) get an `org_id` column, filled from
 * the parent. SQLite has no row-level security; there the column is written and kept all the same,
 * nullable because SQLite cannot add a NOT NULL column without a default to a table with rows.
 */

/** Tables whose rows belong to one organization, by the column naming it. */
export const ORG_OWNED_TABLES: Readonly<Record<string, string>> = {
  agents: 'org_id',
  api_keys: 'org_id',
  audit_events: 'org_id',
  audit_sinks: 'org_id',
  bulk_runs: 'org_id',
  command_approvals: 'org_id',
  command_output: 'org_id',
  command_policies: 'org_id',
  commands: 'org_id',
  invitations: 'org_id',
  live_tickets: 'org_id',
  memberships: 'org_id',
  registration_tokens: 'org_id',
  role_bindings: 'org_id',
  roles: 'org_id',
  saml_assertions: 'org_id',
  scim_configs: 'org_id',
  scim_groups: 'org_id',
  scim_users: 'org_id',
  secret_versions: 'org_id',
  secrets: 'org_id',
  services: 'org_id',
  sso_connections: 'org_id',
  sso_domains: 'org_id',
  sso_sign_ins: 'org_id',
  team_members: 'org_id',
  teams: 'org_id',
  // A chain is an organization's (its id) or the instance's (`instance`, seen only across orgs).
  audit_chain_heads: 'chain_id',
  audit_checkpoints: 'chain_id',
};

/** Child tables given their organization's id, with the parent that has it. */
const CHILDREN: ReadonlyArray<{ table: string; parent: string; key: string }> = [
  { table: 'secret_versions', parent: 'secrets', key: 'secret_id' },
  { table: 'command_approvals', parent: 'commands', key: 'command_id' },
  { table: 'command_output', parent: 'commands', key: 'command_id' },
  { table: 'sso_sign_ins', parent: 'sso_connections', key: 'connection_id' },
  { table: 'saml_assertions', parent: 'sso_connections', key: 'connection_id' },
];

const setting = sql`current_setting('bulwark.org_id', true)`;

export async function up(db: Kysely<unknown>): Promise<void> {
  const postgres = db.getExecutor().adapter instanceof PostgresAdapter;
  for (const { table, parent, key } of CHILDREN) {
    await db.schema
      .alterTable(table)
      .addColumn('org_id', 'text', (c) => c.references('orgs.id').onDelete('cascade'))
      .execute();
    await sql`UPDATE ${sql.table(table)} SET org_id =
      (SELECT p.org_id FROM ${sql.table(parent)} p WHERE p.id = ${sql.ref(`${table}.${key}`)})`.execute(db);
    if (postgres) await sql`ALTER TABLE ${sql.table(table)} ALTER COLUMN org_id SET NOT NULL`.execute(db);
    await db.schema.createIndex(`${table}_org`).on(table).column('org_id').execute();
  }
  if (!postgres) return;
  for (const [table, column] of Object.entries(ORG_OWNED_TABLES)) {
    const owner = sql.ref(column);
    const admitted = sql`(${owner} = ${setting} OR ${setting} = '*')`;
    await sql`ALTER TABLE ${sql.table(table)} ENABLE ROW LEVEL SECURITY`.execute(db);
    await sql`ALTER TABLE ${sql.table(table)} FORCE ROW LEVEL SECURITY`.execute(db);
    await sql`CREATE POLICY org_isolation ON ${sql.table(table)} USING ${admitted} WITH CHECK ${admitted}`.execute(
      db,
    );
  }
  // An organization's data keys, by their scope; the instance's data key serves every organization.
  const dataKeyAdmitted = sql`(scope = 'instance' OR scope = 'org:' || ${setting} OR ${setting} = '*')`;
  await sql`ALTER TABLE data_keys ENABLE ROW LEVEL SECURITY`.execute(db);
  await sql`ALTER TABLE data_keys FORCE ROW LEVEL SECURITY`.execute(db);
  await sql`CREATE POLICY org_isolation ON data_keys USING ${dataKeyAdmitted} WITH CHECK ${dataKeyAdmitted}`.execute(
    db,
  );
}

export async function down(db: Kysely<unknown>): Promise<void> {
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    for (const table of [...Object.keys(ORG_OWNED_TABLES), 'data_keys']) {
      await sql`DROP POLICY org_isolation ON ${sql.table(table)}`.execute(db);
      await sql`ALTER TABLE ${sql.table(table)} NO FORCE ROW LEVEL SECURITY`.execute(db);
      await sql`ALTER TABLE ${sql.table(table)} DISABLE ROW LEVEL SECURITY`.execute(db);
    }
  }
  for (const { table } of CHILDREN) {
    await db.schema.dropIndex(`${table}_org`).execute();
    await db.schema.alterTable(table).dropColumn('org_id').execute();
  }
}
