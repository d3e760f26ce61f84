import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { ALL_ORGS, ORG_SETTING } from '../db/org-scope.js';
import { type BackingTlsSettings, createBackingTls, postgresTls } from '../net/backing-tls.js';

/**
 * The database half of a backup (PLAT-7): a consistent snapshot of SQLite or PostgreSQL without the
 * short-lived bearer material, and its restore into an empty target.
 */

/**
 * Tables whose rows never leave in a backup: live sign-ins and what only lives as long as one.
 * Their ids are hashed at rest, but a restored installation must start with nobody signed in, and
 * a backup is kept far longer than any of them lives.
 */
export const EXCLUDED_TABLES = ['sessions', 'live_tickets', 'webauthn_challenges', 'sso_sign_ins'] as const;

export class BackupTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackupTargetError';
  }
}

/**
 * A private (0600) scratch file name in `dir`, created empty so nobody else can create it first. Its
 * name carries the creating process's id, so a sweep at start can tell a live one from a crash's.
 */
export function privateScratchFile(dir: string, label: string): string {
  const file = path.join(dir, `.${label}-${process.pid}-${randomBytes(8).toString('hex')}.tmp`);
  closeSync(openSync(file, 'wx', 0o600));
  return file;
}

/** The scratch files of backups and restores (the id-less form is what earlier versions made). */
const SCRATCH_NAME = /^\.(?:backup|restore|pgpass|pgroots)-(?:(\d+)-)?[0-9a-f]{16}\.tmp$/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes what a backup or restore that crashed left in `dirs`: plaintext copies of the database
 * (sessions left out, but every other row) and PGPASSFILEs holding the database password. A file
 * whose process still runs (a `bulwark backup create` beside the server) is left alone.
 */
export function sweepScratchFiles(dirs: string[]): string[] {
  const removed: string[] = [];
  for (const dir of new Set(dirs)) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const match = SCRATCH_NAME.exec(name);
      if (!match) continue;
      const pid = match[1] ? Number(match[1]) : undefined;
      if (pid !== undefined && (pid === process.pid || alive(pid))) continue;
      rmSync(path.join(dir, name), { force: true });
      removed.push(path.join(dir, name));
    }
  }
  return removed;
}

export interface SnapshotFacts {
  /** Rows per table in the snapshot as it is restored (excluded tables count 0). */
  tables: Record<string, number>;
  /** The newest migration the snapshot has. */
  migration: string;
}

const lastMigration = 'select name from bulwark_migrations order by name desc limit 1';

/**
 * SQLite: the online backup API copies the live database page by page into a private scratch file
 * beside it (a reader: the server keeps writing; a write during the copy makes SQLite restart it),
 * then the copy loses the excluded rows. secure_delete and VACUUM leave no trace of them in free pages.
 */
export async function snapshotSqlite(
  file: string,
  scratch: string,
  onProgress: (pagesDone: number, pagesTotal: number) => void,
): Promise<SnapshotFacts> {
  const source = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    source.pragma('busy_timeout = 10000');
    await source.backup(scratch, {
      progress: ({ totalPages, remainingPages }) => {
        onProgress(totalPages - remainingPages, totalPages);
        // 16 MiB of 4 KiB pages a step: few restarts under writes, progress still visible.
        return 4096;
      },
    });
  } finally {
    source.close();
  }
  const copy = new BetterSqlite3(scratch);
  try {
    copy.pragma('journal_mode = DELETE');
    copy.pragma('secure_delete = ON');
    const names = (
      copy
        .prepare(
          "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name",
        )
        .all() as Array<{ name: string }>
    ).map(({ name }) => name);
    for (const table of EXCLUDED_TABLES)
      if (names.includes(table)) copy.prepare(`delete from "${table}"`).run();
    copy.exec('VACUUM');
    const tables: Record<string, number> = {};
    for (const name of names)
      tables[name] = (copy.prepare(`select count(*) as n from "${name}"`).get() as { n: number }).n;
    const migration = (copy.prepare(lastMigration).get() as { name: string } | undefined)?.name ?? '';
    return { tables, migration };
  } finally {
    copy.close();
  }
}

/**
 * Checks a restored SQLite file before it takes the database's place: SQLite's own check, and every
 * table's row count against what the manifest says was backed up.
 */
export function checkSqliteCopy(file: string, expected: Record<string, number>): void {
  const copy = new BetterSqlite3(file, { fileMustExist: true });
  try {
    const check = copy.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new BackupTargetError(`the restored database fails SQLite's check: ${check}`);
    for (const [table, rows] of Object.entries(expected)) {
      const found = (
        copy.prepare(`select count(*) as n from "${table.replaceAll('"', '')}"`).get() as { n: number }
      ).n;
      if (found !== rows)
        throw new BackupTargetError(`table ${table} has ${found} rows, the backup said ${rows}`);
    }
  } finally {
    copy.close();
  }
}

/**
 * A backup is of every organization: its connections admit every organization's rows under the
 * row-level-security policies (db/org-scope.ts), as the server's own work for no one organization does.
 */
const EVERY_ORG = `-c ${ORG_SETTING}=${ALL_ORGS}`;

/**
 * How pg_dump and pg_restore reach the database without its password on their command line, where
 * every user of the host can read it (ps, /proc/<pid>/cmdline): the URL without its password as
 * `--dbname`, and the password in a private PGPASSFILE that exists only while they run. TLS is the
 * server's own policy (NET-4, net/backing-tls.ts) in libpq's terms: `verify-full` against the CA the
 * server trusts wherever the server verifies, never libpq's unverified `require` or `prefer`.
 */
export function libpqConnection(
  url: string,
  scratchDir: string,
  backingTls: BackingTlsSettings,
): { dbname: string; env: NodeJS.ProcessEnv; done(): void } {
  const { connectionString, libpq } = postgresTls(url, createBackingTls(backingTls));
  const parsed = new URL(connectionString);
  const password = decodeURIComponent(parsed.password);
  parsed.password = '';
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    PGAPPNAME: 'bulwark-backup',
    PGSSLMODE: libpq.sslmode,
    PGOPTIONS: EVERY_ORG,
  };
  const scratch: string[] = [];
  const done = () => {
    for (const file of scratch) rmSync(file, { force: true });
  };
  try {
    if (libpq.sslmode === 'verify-full') {
      if (libpq.rootCertFile) {
        env.PGSSLROOTCERT = libpq.rootCertFile;
      } else {
        // No CA configured: the roots Node (and so the server) trusts, as a file for libpq.
        const roots = privateScratchFile(scratchDir, 'pgroots');
        scratch.push(roots);
        writeFileSync(roots, `${rootCertificates.join('\n')}\n`);
        env.PGSSLROOTCERT = roots;
      }
    }
    // Always a file of ours: without a password in the URL, libpq must not pick one up from the
    // operator's own ~/.pgpass instead.
    const passfile = privateScratchFile(scratchDir, 'pgpass');
    scratch.push(passfile);
    // .pgpass format: host:port:database:user:password, with `\` and `:` escaped in each field.
    if (password)
      writeFileSync(passfile, `*:*:*:*:${password.replaceAll('\\', '\\\\').replaceAll(':', '\\:')}\n`);
    env.PGPASSFILE = passfile;
  } catch (error) {
    done();
    throw error;
  }
  return { dbname: parsed.toString(), env, done };
}

/** A `pg` client for `url` with the server's own TLS options (NET-4). */
function backupClient(url: string, backingTls: BackingTlsSettings): pg.Client {
  const { connectionString, ssl } = postgresTls(url, createBackingTls(backingTls));
  return new pg.Client({ connectionString, ssl, application_name: 'bulwark-backup', options: EVERY_ORG });
}

/**
 * PostgreSQL: a repeatable-read transaction exports its snapshot; the row counts are read in it and
 * pg_dump dumps exactly that snapshot (`--snapshot`), so manifest and dump agree. The custom format
 * streams from pg_dump's stdout; the excluded tables keep their definitions but no rows.
 */
export async function dumpPostgres(
  url: string,
  scratchDir: string,
  backingTls: BackingTlsSettings,
): Promise<{ facts: SnapshotFacts; dump: Readable; finished: Promise<void>; stop(): void }> {
  const client = backupClient(url, backingTls);
  await client.connect();
  let connection: ReturnType<typeof libpqConnection>;
  try {
    connection = libpqConnection(url, scratchDir, backingTls);
  } catch (error) {
    await client.end().catch(() => {});
    throw error;
  }
  try {
    await client.query('begin isolation level repeatable read read only');
    const snapshot = (await client.query<{ id: string }>('select pg_export_snapshot() as id')).rows[0]!.id;
    const { rows: names } = await client.query<{ name: string; schema: string }>(
      `select table_name as name, table_schema as schema from information_schema.tables
        where table_schema = current_schema() and table_type = 'BASE TABLE' order by table_name`,
    );
    const tables: Record<string, number> = {};
    for (const { name } of names)
      tables[name] = (EXCLUDED_TABLES as readonly string[]).includes(name)
        ? 0
        : Number((await client.query(`select count(*) as n from "${name}"`)).rows[0].n);
    const migration = (await client.query<{ name: string }>(lastMigration)).rows[0]?.name ?? '';
    const schema = names[0]?.schema ?? 'public';
    const child = spawn(
      'pg_dump',
      [
        '--format=custom',
        `--snapshot=${snapshot}`,
        // Dump through the policies (which admit every organization here) rather than fail on them;
        // they are enabled in the archive's post-data section, after a restore has loaded the rows.
        '--enable-row-security',
        ...EXCLUDED_TABLES.map((table) => `--exclude-table-data=${schema}.${table}`),
        `--dbname=${connection.dbname}`,
      ],
      { env: connection.env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const finished = new Promise<void>((resolve, reject) => {
      child.on('error', (error) => reject(new BackupTargetError(`could not run pg_dump: ${error.message}`)));
      child.on('close', (code) => {
        if (code === 0) resolve();
        else reject(new BackupTargetError(`pg_dump failed (exit ${code}): ${stderr.trim()}`));
      });
    }).finally(async () => {
      connection.done();
      await client.query('commit').catch(() => {});
      await client.end().catch(() => {});
    });
    // A consumer that stops early (a download cut off) leaves no pg_dump behind.
    finished.catch(() => {});
    const stop = () => {
      if (child.exitCode === null) child.kill();
    };
    return { facts: { tables, migration }, dump: child.stdout, finished, stop };
  } catch (error) {
    connection.done();
    await client.end().catch(() => {});
    throw error;
  }
}

/** Counts the tables of the URL's database in its current schema: a restore goes only into an empty one. */
async function postgresTables(url: string, backingTls: BackingTlsSettings): Promise<Record<string, number>> {
  const client = backupClient(url, backingTls);
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string }>(
      `select table_name as name from information_schema.tables
        where table_schema = current_schema() and table_type = 'BASE TABLE'`,
    );
    const counts: Record<string, number> = {};
    for (const { name } of rows)
      counts[name] = Number((await client.query(`select count(*) as n from "${name}"`)).rows[0].n);
    return counts;
  } finally {
    await client.end();
  }
}

export async function assertEmptyPostgres(url: string, backingTls: BackingTlsSettings): Promise<void> {
  const tables = Object.keys(await postgresTables(url, backingTls));
  if (tables.length > 0)
    throw new BackupTargetError(
      `the database is not empty (it has ${tables.length} tables, e.g. ${tables[0]}); restore into a new, empty database`,
    );
}

/**
 * Restores a custom-format dump file (already authenticated whole) with pg_restore in one
 * transaction: it either all lands or none does. Then checks every table's rows against the manifest.
 */
export async function restorePostgres(
  url: string,
  dumpFile: string,
  scratchDir: string,
  expected: Record<string, number>,
  backingTls: BackingTlsSettings,
): Promise<void> {
  await assertEmptyPostgres(url, backingTls);
  const connection = libpqConnection(url, scratchDir, backingTls);
  try {
    const child = spawn(
      'pg_restore',
      [
        '--single-transaction',
        '--exit-on-error',
        '--no-owner',
        '--no-privileges',
        `--dbname=${connection.dbname}`,
        dumpFile,
      ],
      { env: connection.env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', (error) =>
        reject(new BackupTargetError(`could not run pg_restore: ${error.message}`)),
      );
      child.on('close', resolve);
    });
    if (code !== 0) throw new BackupTargetError(`pg_restore failed (exit ${code}): ${stderr.trim()}`);
  } finally {
    connection.done();
  }
  const found = await postgresTables(url, backingTls);
  for (const [table, rows] of Object.entries(expected))
    if (found[table] !== rows)
      throw new BackupTargetError(`table ${table} has ${found[table] ?? 'no'} rows, the backup said ${rows}`);
}
