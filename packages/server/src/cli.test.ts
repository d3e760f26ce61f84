import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';
import { openCore } from './core.js';
import { openDatabase } from './db/database.js';
import { createPostgresDatabase, postgresUrl } from './test-support/databases.js';
import { BACKENDS, type Backend } from './test-support/org-world.js';
import { runCli } from './test-support/processes.js';
import { tempDir } from './test-support/temp.js';

/**
 * The `bulwark` CLI as operators run it (the built file, in its own process), against a real SQLite
 * file or PostgreSQL database that a test tampers with directly, as an attacker with write access to
 * the disk or the database would.
 */

let dir: { path: string; remove(): Promise<void> };
let env: Record<string, string>;
let postgres: { url: string; drop(): Promise<void> } | undefined;

beforeEach(async () => {
  dir = await tempDir('cli');
  env = { BULWARK_DATA_DIR: path.join(dir.path, 'data') };
});
afterEach(async () => {
  await dir.remove();
  await postgres?.drop();
  postgres = undefined;
});

/** Puts the data of each test of the calling suite on `backend` (SQLite, in the data directory, by default). */
function onBackend(backend: Backend) {
  beforeEach(async () => {
    if (backend !== 'postgresql') return;
    postgres = await createPostgresDatabase(postgresUrl()!);
    env = { ...env, BULWARK_DATABASE_URL: postgres.url };
  });
}

async function seed(events: number) {
  const config = loadConfig({ env, cwd: dir.path });
  const core = await openCore(config, pino({ level: 'silent' }));
  for (let n = 1; n <= events; n++) {
    await core.audit.record({
      orgId: 'org_acme',
      actor: { type: 'user', id: 'usr_ada', display: 'Ada' },
      action: 'audit.exported',
      target: { type: 'audit_log', id: 'org_acme' },
      outcome: 'success',
      details: { n },
    });
  }
  await core.audit.close();
  await core.database.close();
}

async function tamper(statements: string[]) {
  const database = openDatabase(loadConfig({ env, cwd: dir.path }));
  try {
    for (const statement of statements) await sql.raw(statement).execute(database.db);
  } finally {
    await database.close();
  }
}

const verify = () => runCli(['audit', 'verify'], { cwd: dir.path, env });

describe.each(BACKENDS)('bulwark audit verify on %s', (backend) => {
  onBackend(backend);

  it('passes an intact log', async () => {
    await seed(30);
    const result = await verify();
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('ok      org_acme: 30 events, 1 signed checkpoints matched');
    expect(result.stdout).toContain('audit log verified: 1 chains, 30 events');
  });

  it('catches an edited row and names it', async () => {
    await seed(30);
    // Attack: change what an event says happened.
    await tamper([`update audit_events set outcome = 'denied' where chain_id = 'org_acme' and seq = 12`]);
    const result = await verify();
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(
      /BROKEN {2}org_acme: first broken link at seq 12 \(event evt_\w+\): event content does not match its hash \(edited\)/,
    );
    expect(result.stderr).toContain('audit log verification failed: 1 of 1 chains broken');
  });

  it('catches a deleted row', async () => {
    await seed(30);
    // Attack: erase the record of an action.
    await tamper([`delete from audit_events where chain_id = 'org_acme' and seq = 17`]);
    const result = await verify();
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('first broken link at seq 17: event(s) 17..17 are missing (deleted)');
  });

  it('catches two swapped rows', async () => {
    await seed(30);
    // Attack: reorder history by exchanging the positions of two events.
    await tamper([
      `update audit_events set seq = -1 where chain_id = 'org_acme' and seq = 5`,
      `update audit_events set seq = 5 where chain_id = 'org_acme' and seq = 9`,
      `update audit_events set seq = 9 where chain_id = 'org_acme' and seq = -1`,
    ]);
    const result = await verify();
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(
      /first broken link at seq 5 \(event evt_\w+\): previous-hash link does not match/,
    );
  });

  it('refuses to trust a signing key swapped in the database', async () => {
    await seed(3);
    // Attack: replace the stored public key so checkpoints signed by the attacker's key would verify.
    const other = await tempDir('other');
    const otherEnv = { BULWARK_DATA_DIR: path.join(other.path, 'data') };
    const otherCore = await openCore(
      loadConfig({ env: otherEnv, cwd: other.path }),
      pino({ level: 'silent' }),
    );
    await otherCore.database.close();
    const foreign = new BetterSqlite3(path.join(other.path, 'data', 'bulwark.db'));
    const { public_key } = foreign.prepare(`select public_key from server_keys`).get() as {
      public_key: string;
    };
    foreign.close();
    await other.remove();
    await tamper([`update server_keys set public_key = '${public_key}'`]);
    const result = await verify();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('stored public key does not match its private key');
  });
});

// A missing SQLite file; a PostgreSQL database that is not there is a connection error, not this.
describe('bulwark audit verify on a new data directory', () => {
  it('says plainly when there is no database', async () => {
    const result = await verify();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('no database at');
  });
});

describe.each(BACKENDS)('bulwark audit export on %s', (backend) => {
  onBackend(backend);

  it('writes a private file, never overwrites one, and the export is itself audited', async () => {
    await seed(5);
    const output = path.join(dir.path, 'acme.csv');
    const first = await runCli(['audit', 'export', '--org', 'org_acme', '--format', 'csv', '-o', output], {
      cwd: dir.path,
      env,
    });
    expect(first.code).toBe(0);
    expect(statSync(output).mode & 0o777).toBe(0o600);
    const lines = readFileSync(output, 'utf8').trimEnd().split('\r\n');
    expect(lines).toHaveLength(1 + 6); // header, 5 seeded events, and this export's own record
    expect(lines.at(-1)).toContain(',audit.exported,audit_log,org_acme,');
    expect(lines.at(-1)).toContain('cli:');

    const again = await runCli(['audit', 'export', '--org', 'org_acme', '-o', output], {
      cwd: dir.path,
      env,
    });
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`${output} already exists; exports never overwrite a file`);

    // The refused export wrote nothing and recorded nothing; this one records itself too.
    const filtered = await runCli(['audit', 'export', '--org', 'org_acme', '--actor', 'cli'], {
      cwd: dir.path,
      env,
    });
    const exports = filtered.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { action: string; details: { format: string } });
    expect(exports.map((e) => [e.action, e.details.format])).toEqual([
      ['audit.exported', 'csv'],
      ['audit.exported', 'ndjson'],
    ]);
  });
});

// Refused while reading the arguments, before any data is read: the same on every backend.
describe('bulwark audit export arguments', () => {
  it('refuses bad input with a clear message', async () => {
    await seed(1);
    const badFormat = await runCli(['audit', 'export', '--org', 'org_acme', '--format', 'xml'], {
      cwd: dir.path,
      env,
    });
    expect(badFormat.code).toBe(1);
    expect(badFormat.stderr).toContain("argument 'xml' is invalid. Allowed choices are ndjson, csv.");
    const badTime = await runCli(['audit', 'export', '--org', 'org_acme', '--since', 'yesterday'], {
      cwd: dir.path,
      env,
    });
    expect(badTime.code).toBe(1);
    expect(badTime.stderr).toContain('expected an ISO-8601 date or time');
    const noOrg = await runCli(['audit', 'export'], { cwd: dir.path, env });
    expect(noOrg.code).toBe(1);
    expect(noOrg.stderr).toContain("required option '--org <id>' not specified");
  });
});

describe('bulwark config check', () => {
  it('prints the effective configuration with secrets masked', async () => {
    const key = 'q7XkPz0c4mJ9vN2bR5tY8wA1sD3fG6hL0oI4uE7rT9w=';
    const result = await runCli(['config', 'check'], {
      cwd: dir.path,
      env: { ...env, BULWARK_MASTER_KEY: key },
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('BULWARK_MASTER_KEY=**** (set)  [env]');
    expect(result.stdout).toContain('BULWARK_HOST=127.0.0.1  [default]');
    expect(result.stdout).toContain('configuration is valid');
    expect(result.stdout).not.toContain(key);
  });

  it('exits 1 naming each wrong setting', async () => {
    const result = await runCli(['config', 'check'], {
      cwd: dir.path,
      env: { ...env, BULWARK_HOST: '0.0.0.0' },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      'BULWARK_HOST: binding to 0.0.0.0 (not loopback) would serve credentials over plain HTTP',
    );
  });

  it('prints help and rejects unknown commands', async () => {
    const help = await runCli(['--help'], { cwd: dir.path });
    expect(help.code).toBe(0);
    for (const command of ['serve', 'migrate', 'config', 'audit']) expect(help.stdout).toContain(command);
    const unknown = await runCli(['frobnicate'], { cwd: dir.path });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");
  });
});
