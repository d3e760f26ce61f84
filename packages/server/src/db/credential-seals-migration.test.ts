import { randomBytes } from 'node:crypto';
import { generateToken, tokenHash } from '@bulwark/protocol';
import { hash } from '@node-rs/argon2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { createCredentialSeals } from '../identity/credential-seals.js';
import { ARGON2_PARAMS, createPasswordHasher } from '../identity/password-hasher.js';
import { createPasswords } from '../identity/passwords.js';
import { createDataKeyring } from '../secrets/data-keyring.js';
import { createDataKeysStore } from '../secrets/data-keys.store.js';
import { createLocalKeyProvider } from '../secrets/key-provider.js';
import { testDatabases } from '../test-support/databases.js';
import { startTestServer } from '../test-support/server.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';
import { type Database, openSqlite } from './database.js';
import { MigrationFailedError, migrateToLatest, migrateUpTo, pendingMigrations } from './migrate.js';

/**
 * The upgrade that seals credential verifiers (migration 0017). A database from before it holds
 * plain argon2id hashes and unsealed token rows; after it, every one of them still works (nobody is
 * signed out, no key or password stops working), sealed as the database held them at that moment.
 * What it must never do is seal rows written later: it runs once, and running it again fails.
 */

const PASSWORD = 'Correct-Horse-Battery-Staple-9';
const T0 = Date.UTC(2026, 10, 1);

/** Rows as a server from before the upgrade wrote them: no seal column, a plain password hash. */
async function seedBeforeUpgrade(database: Database) {
  const db = database.db;
  const token = { session: generateToken('bws'), apiKey: generateToken('bwk') };
  await db
    .insertInto('orgs')
    .values({ id: 'org_a', slug: 'a', name: 'A', created_at: T0, mfa_required: 0 })
    .execute();
  const user = {
    id: 'usr_a',
    email: 'a@a.test',
    display_name: 'A',
    password_hash: await hash(PASSWORD, ARGON2_PARAMS),
    status: 'active' as const,
    password_change_required_at: null,
    password_changed_at: T0,
    created_at: T0,
    updated_at: T0,
  };
  await db.insertInto('users').values(user).execute();
  const session = {
    id: 'ses_a',
    token_hash: tokenHash(token.session),
    user_id: user.id,
    created_at: T0,
    last_seen_at: T0,
    expires_at: T0 + 3_600_000,
    authenticated_at: T0,
    ip: null,
    user_agent: null,
    revoked_at: null,
    revoked_reason: null,
    second_factor_pending: 0,
  };
  await db
    .insertInto('sessions')
    .values(session as never)
    .execute();
  const apiKey = {
    id: 'apk_a',
    org_id: 'org_a',
    user_id: user.id,
    parent_key_id: null,
    name: 'ci',
    token_hash: tokenHash(token.apiKey),
    token_hint: token.apiKey.slice(0, 8),
    permissions: '["agents:read"]',
    selector: null,
    created_at: T0,
    expires_at: T0 + 86_400_000,
    last_used_at: null,
    last_used_ip: null,
    revoked_at: null,
    revoked_reason: null,
  };
  await db
    .insertInto('api_keys')
    .values(apiKey as never)
    .execute();
  const recoveryCode = { user_id: user.id, code_hash: tokenHash('code'), created_at: T0, used_at: null };
  const usedCode = { user_id: user.id, code_hash: tokenHash('used'), created_at: T0, used_at: T0 + 1 };
  await db
    .insertInto('recovery_codes')
    .values([recoveryCode, usedCode] as never)
    .execute();
  const invitation = {
    id: 'inv_a',
    org_id: 'org_a',
    email: 'b@a.test',
    role: 'viewer',
    token_hash: tokenHash(generateToken('bwi')),
    invited_by: user.id,
    created_at: T0,
    expires_at: T0 + 86_400_000,
    accepted_at: null,
    accepted_by: null,
    revoked_at: null,
  };
  await db
    .insertInto('invitations')
    .values(invitation as never)
    .execute();
  return { user, session, apiKey, recoveryCode, invitation };
}

describe.each(testDatabases())('sealing the credentials an upgrade finds on $dialect', (target) => {
  let database: Database;
  let drop: () => Promise<void>;
  const masterKeys = { current: randomBytes(32), previous: [] };
  const provider = createLocalKeyProvider(masterKeys, () => masterKeys);

  beforeEach(async () => {
    const created = await target.create();
    database = created.open();
    drop = created.drop;
    await migrateUpTo(database, '0016-agent-key-seals');
  });
  afterEach(async () => {
    await database.close();
    await drop();
  });

  /** What a server holding the master key checks credentials with. */
  function serverChecks() {
    const dataKeys = createDataKeyring({
      store: createDataKeysStore(database.db),
      provider,
      clock: Date.now,
    });
    return {
      seals: createCredentialSeals({ dataKeys }),
      passwords: createPasswords({ hasher: createPasswordHasher(), dataKeys }),
    };
  }

  it('seals what the database held, once: each still works, a row written later does not, and a rerun fails', async () => {
    const before = await seedBeforeUpgrade(database);
    await migrateToLatest(database, { context: { credentials: { masterKeys: provider, clock: Date.now } } });
    // Noted in the migration's own transaction, for the next start to record in the audit log.
    const note = await database.db.selectFrom('upgrade_notes').selectAll().executeTakeFirstOrThrow();
    expect(JSON.parse(note.details).sealed).toEqual(
      expect.arrayContaining([
        { table: 'users', rows: 1 },
        { table: 'sessions', rows: 1 },
        { table: 'api_keys', rows: 1 },
        { table: 'recovery_codes', rows: 1 },
        { table: 'invitations', rows: 1 },
      ]),
    );

    const { seals, passwords } = serverChecks();
    const db = database.db;
    const user = await db.selectFrom('users').selectAll().executeTakeFirstOrThrow();
    // The verifier is no longer a hash anyone can test guesses against, and the password still opens it.
    expect(user.password_hash).not.toContain('$argon2id$');
    expect(await passwords.check(user.id, user.password_hash!, PASSWORD)).toBe('match');
    expect(await passwords.check(user.id, user.password_hash!, 'Wrong-Horse-Battery-Staple-9')).toBe(
      'mismatch',
    );
    const about = { id: 'x' };
    const session = await db.selectFrom('sessions').selectAll().executeTakeFirstOrThrow();
    expect(await seals.holds('session', session, about)).toBe(true);
    const apiKey = await db.selectFrom('api_keys').selectAll().executeTakeFirstOrThrow();
    expect(await seals.holds('api-key', apiKey, about)).toBe(true);
    const code = await db
      .selectFrom('recovery_codes')
      .selectAll()
      .where('used_at', 'is', null)
      .executeTakeFirstOrThrow();
    expect(await seals.holds('recovery-code', code, about)).toBe(true);
    // A spent credential is left unsealed: clearing its `used_at` later revives nothing.
    const used = await db
      .selectFrom('recovery_codes')
      .selectAll()
      .where('used_at', 'is not', null)
      .executeTakeFirstOrThrow();
    expect(await seals.holds('recovery-code', used, about)).toBe(false);
    const invitation = await db.selectFrom('invitations').selectAll().executeTakeFirstOrThrow();
    expect(await seals.holds('invitation', invitation, about)).toBe(true);

    // Attack: after the upgrade, a database writer adds a session of their own, then makes the
    // upgrade look undone (its record deleted) hoping a restart seals their row. The migration's
    // columns are there already: it fails, and the row stays unsealed.
    const forged = {
      ...before.session,
      id: 'ses_forged',
      token_hash: tokenHash(generateToken('bws')),
      seal: '',
      second_factor_at_provider: 0,
    };
    await db.insertInto('sessions').values(forged).execute();
    await db
      .deleteFrom('bulwark_migrations' as never)
      .where('name' as never, '=', '0017-credential-seals' as never)
      .execute();
    await expect(
      migrateToLatest(database, { context: { credentials: { masterKeys: provider, clock: Date.now } } }),
    ).rejects.toBeInstanceOf(MigrationFailedError);
    const stored = await db
      .selectFrom('sessions')
      .selectAll()
      .where('id', '=', forged.id)
      .executeTakeFirstOrThrow();
    expect(await seals.holds('session', stored, about)).toBe(false);
  });

  it('without the master key, refuses to upgrade a database that holds credentials and leaves it as it was', async () => {
    const before = await seedBeforeUpgrade(database);
    await expect(migrateToLatest(database)).rejects.toThrow(/master key/);
    expect((await pendingMigrations(database.db))[0]).toBe('0017-credential-seals');
    const user = await database.db.selectFrom('users').select('password_hash').executeTakeFirstOrThrow();
    expect(user.password_hash).toBe(before.user.password_hash);
  });
});

describe('a server started on a database from before the upgrade', () => {
  it('seals its credentials as it migrates, signs its users in as before, and records that it did', async () => {
    const dir = await tempDir('upgrade');
    try {
      const config = loadConfig({ env: { BULWARK_DATA_DIR: dir.path }, cwd: dir.path });
      if (config.database.kind !== 'sqlite') throw new Error('expected the SQLite default');
      const old = openSqlite({ file: config.database.file, busyTimeoutMs: 5000 });
      await migrateUpTo(old, '0016-agent-key-seals');
      const { user } = await seedBeforeUpgrade(old);
      await old.db
        .insertInto('memberships')
        .values({ org_id: 'org_a', user_id: user.id, role: 'owner', created_at: T0 })
        .execute();
      await old.close();

      const server = await startTestServer({}, { dataDir: dir.path });
      try {
        const client = new SessionClient(server.url);
        expect((await client.login(user.email, PASSWORD)).status).toBe(200);
        expect(
          server.logs
            .entries()
            .some((entry) => String(entry.msg).startsWith('sealed the credentials the database held')),
        ).toBe(true);
      } finally {
        await server.stop();
      }
      // In the instance's audit chain, where an unexplained repeat would stand out.
      const after = openSqlite({ file: config.database.file, busyTimeoutMs: 5000 });
      const events = await after.db
        .selectFrom('audit_events')
        .select(['chain_id', 'details'])
        .where('action', '=', 'credential.sealed_at_upgrade')
        .execute();
      await after.close();
      expect(events).toHaveLength(1);
      expect(events[0]!.chain_id).toBe('instance');
      expect(JSON.parse(events[0]!.details)).toMatchObject({
        severity: 'critical',
        sealed: expect.arrayContaining([
          { table: 'users', rows: 1 },
          { table: 'sessions', rows: 1 },
        ]),
      });
    } finally {
      await dir.remove();
    }
  });
});
