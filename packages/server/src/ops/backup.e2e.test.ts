import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { openCore } from '../core.js';
import { createLogger } from '../logging.js';
import { orgScope } from '../secrets/data-keyring.js';
import { createLocalKeyProvider } from '../secrets/key-provider.js';
import { reloadMasterKeys } from '../secrets/master-key.js';
import { secretValueContext } from '../secrets/secrets.service.js';
import { registerAgent } from '../test-support/agents.js';
import { createPostgresDatabase, openBeside, postgresUrl, tableRows } from '../test-support/databases.js';
import { BACKENDS, type Backend, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { runCli } from '../test-support/processes.js';
import { startTestServer, type TestServer } from '../test-support/server.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';
import { createBackupService, restoreBackup } from './backup.service.js';
import { BackupAuthenticationError } from './backup-envelope.js';
import { BackupTargetError, EXCLUDED_TABLES } from './backup-snapshot.js';

/**
 * Backups end to end (PLAT-7, CLI-1): a running installation with members, an agent, a secret, live
 * sessions and audit events is backed up online with `bulwark backup create`, restored with
 * `bulwark backup restore` onto a fresh data directory (SQLite) or a fresh database (PostgreSQL,
 * pg_dump/pg_restore), and compared table by table.
 *
 * Attacks: someone who steals the backup file looks in it for a secret's value, a password, a
 * registration or invitation token, or a session they could ride (the cookie or its hash); someone
 * restores it and presents a session cookie from before. Neither may find or use anything. Through
 * the API, a member who is not the instance's owner, an owner of only one of its organizations, and
 * an owner whose sign-in is stale all ask for a backup: all refused.
 */

const SECRET_VALUE = 'db-password-Vq8Lm2Xr5Tz9Kw4N';
const PASSPHRASE = 'backup passphrase of the acme owner';

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Filled {
  world: OrgWorld;
  secretId: string;
  orgId: string;
  /** Plaintext credentials that must not appear in a backup. */
  plaintexts: string[];
}

/**
 * Scratch files as a killed backup or restore leaves them: a plaintext copy of the database made by
 * an earlier version (no process id in its name) and a PGPASSFILE of a process that is gone; and one
 * of a process that still runs (this one), which a sweep must leave alone.
 */
function plantScratch(dir: string): { stale: string[]; live: string } {
  const gone = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
  const stale = [
    path.join(dir, '.backup-0123456789abcdef.tmp'),
    path.join(dir, `.pgpass-${gone}-0123456789abcdef.tmp`),
  ];
  const live = path.join(dir, `.restore-${process.pid}-0123456789abcdef.tmp`);
  for (const file of [...stale, live]) writeFileSync(file, 'plaintext rows', { mode: 0o600 });
  return { stale, live };
}

async function filledWorld(backend: Backend): Promise<Filled> {
  const world = await startOrgWorld({}, backend);
  cleanups.push(() => world.close());
  const owner = world.owner.client;
  const member = await world.join('operator@acme.test', 'operator');
  const invitation = await world.invite('pending@acme.test', 'viewer');
  const secret = await owner.json<{ id: string }>('POST', '/api/orgs/acme/secrets', {
    name: 'DATABASE_PASSWORD',
    description: 'primary',
    value: SECRET_VALUE,
  });
  expect(secret.status).toBe(201);
  const registration = await owner.json<{ token: string }>(
    'POST',
    '/api/orgs/acme/agent-registration-tokens',
    {
      uses: 2,
    },
  );
  await registerAgent(world.server.url, registration.body.token, 'web-1');
  const database = openBeside(world.server.config.database);
  const org = await database.db
    .selectFrom('orgs')
    .select('id')
    .where('slug', '=', 'acme')
    .executeTakeFirstOrThrow();
  await database.close();
  return {
    world,
    secretId: secret.body.id,
    orgId: org.id,
    plaintexts: [
      SECRET_VALUE,
      OWNER.password,
      invitation,
      registration.body.token,
      owner.cookie!,
      member.client.cookie!,
    ],
  };
}

/** A fresh place to restore into: a data directory holding only the installation's master key file. */
async function freshTarget(world: OrgWorld, backend: Backend, withMasterKey = true) {
  const dir = await tempDir('restore');
  cleanups.push(() => dir.remove());
  if (withMasterKey) copyFileSync(world.server.config.masterKeyFile, path.join(dir.path, 'master.key'));
  const postgres = backend === 'postgresql' ? await createPostgresDatabase(postgresUrl()!) : undefined;
  if (postgres) cleanups.push(() => postgres.drop());
  const env = {
    BULWARK_DATA_DIR: dir.path,
    ...(postgres ? { BULWARK_DATABASE_URL: postgres.url } : {}),
  };
  return {
    dir: dir.path,
    env,
    cli: (args: string[], extra: Record<string, string> = {}) =>
      runCli(args, { cwd: dir.path, env: { ...env, ...extra } }),
    config: () => loadConfig({ env, cwd: dir.path }),
  };
}

type Rows = Array<{ table: string; rows: string[] }>;
const localKeys = (file: string) => {
  const source = { fromEnv: undefined, file };
  return createLocalKeyProvider(reloadMasterKeys(source), () => reloadMasterKeys(source));
};
const actionOf = (row: string) => (JSON.parse(row) as { action: string }).action;

/** Every table row for row, but for what the backup leaves out and what the two logs added since. */
function expectSameTables(source: Rows, restored: Rows): void {
  expect(restored.map((t) => t.table)).toEqual(source.map((t) => t.table));
  for (const { table, rows } of source) {
    const copy = restored.find((t) => t.table === table)!.rows;
    if ((EXCLUDED_TABLES as readonly string[]).includes(table)) {
      expect(copy, table).toEqual([]);
    } else if (table === 'audit_events') {
      // The source logged the backup after its snapshot; the restore logged itself in the copy.
      expect(rows.filter((row) => !copy.includes(row)).map(actionOf)).toEqual(['backup.created']);
      expect(copy.filter((row) => !rows.includes(row)).map(actionOf)).toEqual(['backup.restored']);
    } else if (table !== 'audit_chain_heads' && table !== 'audit_checkpoints') {
      expect(copy, table).toEqual(rows);
    }
  }
  expect(source.find((t) => t.table === 'sessions')!.rows.length).toBeGreaterThan(0);
}

describe.each(BACKENDS)('backup and restore on %s', (backend) => {
  let filled: Filled;
  let file: string;
  let target: Awaited<ReturnType<typeof freshTarget>>;
  beforeAll(async () => {
    filled = await filledWorld(backend);
    file = `${filled.world.server.dataDir}.bwb`;
    cleanups.push(async () => rmSync(file, { force: true }));
  }, 60_000);

  it('backs up a running installation and restores it onto a fresh target: every table but the sessions', async () => {
    const { world, plaintexts } = filled;
    // A backup killed earlier left its plaintext copy and the database password behind: swept.
    const planted = plantScratch(world.server.dataDir);
    const created = await world.cli('backup', 'create', '-o', file);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toContain('sessions left out');
    expect(created.stderr).toMatch(/written: [\d.]+ MiB/);
    expect(planted.stale.filter((scratch) => existsSync(scratch))).toEqual([]);
    expect(created.stderr).toContain(path.basename(planted.stale[1]!));
    expect(existsSync(planted.live)).toBe(true);
    rmSync(planted.live);

    target = await freshTarget(world, backend);
    const restored = await target.cli(['backup', 'restore', file]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toContain('opened with the master key');

    // A second restore onto the now-populated target is refused before it touches anything.
    await expect(
      restoreBackup(target.config(), { file, masterKeys: localKeys(world.server.config.masterKeyFile) }),
    ).rejects.toBeInstanceOf(BackupTargetError);
    // A doctored copy (one bit flipped deep in the database) is refused, and the empty target stays empty.
    const doctored = `${file}.doctored`;
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length * 0.7)]! ^= 0x10;
    writeFileSync(doctored, bytes);
    cleanups.push(async () => rmSync(doctored, { force: true }));
    const untouched = await freshTarget(world, backend);
    await expect(
      restoreBackup(untouched.config(), {
        file: doctored,
        masterKeys: localKeys(world.server.config.masterKeyFile),
      }),
    ).rejects.toBeInstanceOf(BackupAuthenticationError);
    expect(readdirSync(untouched.dir)).toEqual(['master.key']);
    const untouchedDb = openBeside(untouched.config().database);
    try {
      expect(await tableRows(untouchedDb)).toEqual([]);
    } finally {
      await untouchedDb.close();
    }

    const sourceDb = openBeside(world.server.config.database);
    const restoredDb = openBeside(target.config().database);
    try {
      expectSameTables(await tableRows(sourceDb), await tableRows(restoredDb));
      // Nothing a thief could use, in what the backup restores (for SQLite: the very file inside it).
      const database = target.config().database;
      const restoredText =
        database.kind === 'sqlite'
          ? readFileSync(database.file).toString('latin1')
          : JSON.stringify(await tableRows(restoredDb));
      const sessionHashes = (await sourceDb.db.selectFrom('sessions').select('token_hash').execute()).map(
        (row) => row.token_hash,
      );
      const backupText = readFileSync(file).toString('latin1');
      for (const plaintext of [...plaintexts, ...sessionHashes]) {
        expect(restoredText).not.toContain(plaintext);
        expect(backupText).not.toContain(plaintext);
      }
    } finally {
      await sourceDb.close();
      await restoredDb.close();
    }
  }, 60_000);

  it('restored: the audit log verifies, the sealed secret opens with the same master key, no session from before works', async () => {
    const { world, secretId, orgId } = filled;
    const verified = await target.cli(['audit', 'verify']);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    // The restored installation, with the same master key: the sealed secret opens...
    const core = await openCore(target.config(), createLogger({ level: 'silent' }));
    try {
      const row = await core.database.db
        .selectFrom('secret_versions')
        .select('value_sealed')
        .where('secret_id', '=', secretId)
        .executeTakeFirstOrThrow();
      const opened = await core.dataKeys.open(
        orgScope(orgId),
        row.value_sealed,
        secretValueContext(orgId, secretId, 1),
      );
      expect(opened.plaintext.toString()).toBe(SECRET_VALUE);
    } finally {
      await core.audit.close();
      await core.database.close();
    }
    // ...and a session from before is not a session there; the owner signs in again (the sealed password verifier opens).
    // The server sweeps what a crashed backup left, too.
    const planted = plantScratch(target.dir);
    const server: TestServer = await startTestServer(target.env, { dataDir: target.dir });
    try {
      expect(planted.stale.filter((scratch) => existsSync(scratch))).toEqual([]);
      expect(existsSync(planted.live)).toBe(true);
      rmSync(planted.live);
      const stale = new SessionClient(server.url);
      stale.cookie = world.owner.client.cookie;
      expect((await stale.send('GET', '/api/auth/session')).status).toBe(401);
      expect((await new SessionClient(server.url).login(OWNER.email, OWNER.password)).status).toBe(200);
    } finally {
      await server.stop();
    }
  }, 60_000);

  // On PostgreSQL too: the owner check reads every organization's memberships from within one
  // organization's request, which row-level security would otherwise keep it from seeing.
  it('API: an owner of every organization downloads a passphrase backup; others are refused', async () => {
    const { world } = filled;
    // A second organization the owner owns too: the check must see it from within acme's request.
    await world.createOrg('Initech');
    // The API, once: an owner of every organization downloads a passphrase backup, which restores
    // anywhere with the passphrase alone (secrets still need the master key).
    const download = await world.owner.client.send('POST', '/api/orgs/acme/backups', {
      recipient: 'passphrase',
      passphrase: PASSPHRASE,
    });
    expect(download.status).toBe(200);
    const bytes = Buffer.from(await download.arrayBuffer());
    // A SQLite snapshot's size is known before it is sent; pg_dump's output is streamed as it comes.
    if (backend === 'sqlite') expect(Number(download.headers.get('content-length'))).toBe(bytes.length);
    else expect(download.headers.get('content-length')).toBeNull();
    const downloaded = `${file}.api`;
    writeFileSync(downloaded, bytes, { mode: 0o600 });
    cleanups.push(async () => rmSync(downloaded, { force: true }));
    // Restored without the master key: the passphrase opens it (the CLI path is the test above).
    const elsewhere = await freshTarget(world, backend, false);
    const restored = await restoreBackup(elsewhere.config(), { file: downloaded, passphrase: PASSPHRASE });
    expect(restored.openedBy).toBe('scrypt');
    const sourceDb2 = openBeside(world.server.config.database);
    try {
      const event = await sourceDb2.db
        .selectFrom('audit_events')
        .selectAll()
        .where('action', '=', 'backup.created')
        .where('actor_id', '=', world.owner.id)
        .executeTakeFirstOrThrow();
      expect(JSON.parse(event.details)).toMatchObject({
        recipients: ['passphrase'],
        // Recorded as the download starts: unknown yet for a dump still streaming.
        sizeBytes: backend === 'sqlite' ? bytes.length : null,
      });
    } finally {
      await sourceDb2.close();
    }

    // Refused: a member without backups:manage, a stale sign-in, an owner of only some organizations.
    const admin = await world.join('admin@acme.test', 'admin');
    const asAdmin = await admin.client.send('POST', '/api/orgs/acme/backups', { recipient: 'keyring' });
    expect(asAdmin.status).toBe(403);
    world.clock.advance(16 * 60_000);
    const stale = await world.owner.client.send('POST', '/api/orgs/acme/backups', { recipient: 'keyring' });
    expect(stale.status).toBe(403);
    expect(((await stale.json()) as { error: { code: string } }).error.code).toBe('step_up_required');
    const reauth = await world.owner.client.send('POST', '/api/auth/reauth', { password: OWNER.password });
    expect(reauth.status).toBe(200);
    // Another organization the owner does not belong to (made beside the server, as the CLI would).
    const beside = openBeside(world.server.config.database);
    await beside.db
      .insertInto('orgs')
      .values({
        id: 'org_01GLOBEX',
        slug: 'globex',
        name: 'Globex',
        created_at: Date.now(),
        mfa_required: 0,
      })
      .execute();
    await beside.close();
    const partOwner = await world.owner.client.send('POST', '/api/orgs/acme/backups', {
      recipient: 'keyring',
    });
    expect(partOwner.status).toBe(403);
    const partOwnerBody = await partOwner.text();
    expect((JSON.parse(partOwnerBody) as { error: { code: string } }).error.code).toBe(
      'instance_owner_required',
    );
    // Not a word of the organization the owner is not part of: not in the answer, not in acme's log.
    expect(partOwnerBody.toLowerCase()).not.toContain('globex');
    const denials = await world.owner.client.send(
      'GET',
      '/api/orgs/acme/audit/events?action=access.denied&limit=50',
    );
    const denialsText = await denials.text();
    expect(denialsText).toContain('a backup holds every organization');
    expect(denialsText.toLowerCase()).not.toContain('globex');

    // A download its client stops reading is ended after the idle timeout, and takes its
    // scratch copy (a plaintext database, or pg_dump's open snapshot) with it. Watched on SQLite,
    // whose scratch copy is a file beside the database.
    if (backend !== 'sqlite') return;
    const core = await openCore(world.server.config, createLogger({ level: 'silent' }));
    try {
      const service = createBackupService({
        config: world.server.config,
        masterKeys: core.masterKeys,
        audit: core.audit,
      });
      const database = world.server.config.database;
      if (database.kind !== 'sqlite') throw new Error('this test reads the SQLite scratch copy');
      const scratch = () =>
        readdirSync(path.dirname(database.file)).filter((name) => name.startsWith('.backup-'));
      const stalled = await service.create({
        keyring: true,
        actor: { type: 'system', id: 'test', display: 'stalled client' },
        idleTimeoutMs: 50,
      });
      expect(scratch()).toHaveLength(1);
      stalled.stream.on('error', () => {});
      await new Promise((resolve) => stalled.stream.once('close', resolve));
      expect(stalled.stream.errored?.message).toMatch(/took nothing/);
      expect(scratch()).toEqual([]);
    } finally {
      await core.audit.close();
      await core.database.close();
    }
  }, 60_000);
});
