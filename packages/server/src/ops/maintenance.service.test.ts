import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pino from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import type { Database } from '../db/database.js';
import { migrateToLatest } from '../db/migrate.js';
import type { CommandStatus, CommandsTable } from '../db/schema.js';
import { createCredentialSeals } from '../identity/credential-seals.js';
import { createSessionsService } from '../identity/sessions.service.js';
import { createSessionsStore } from '../identity/sessions.store.js';
import { createDataKeyring } from '../secrets/data-keyring.js';
import { createDataKeysStore } from '../secrets/data-keys.store.js';
import { createLocalKeyProvider } from '../secrets/key-provider.js';
import { manualClock } from '../test-support/audit.js';
import { freshDatabasePerTest, testDatabases } from '../test-support/databases.js';
import { LogCapture } from '../test-support/server.js';
import { createMaintenanceService, MAINTENANCE_JOBS, type MaintenanceJob } from './maintenance.service.js';
import { createMaintenanceStore } from './maintenance.store.js';
import { createMetrics } from './metrics.js';

/**
 * The maintenance jobs against real databases, with the clock held still: exactly the rows past
 * their end are deleted (a row exactly at its expiry counts as past it, as the code that reads it
 * decides), live rows stay, and a backlog larger than one chunk is deleted in several statements.
 */

const NOW = Date.UTC(2026, 5, 1, 12);
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const IDLE_MS = 30 * MINUTE;
const ABSOLUTE_MS = 12 * HOUR;
const RETENTION_DAYS = 30;
const CUTOFF = NOW - RETENTION_DAYS * DAY;

const ORG = 'org_acme';
const USER = 'usr_owner';
const AGENT = 'agt_web1';

async function seedWorld(database: Database): Promise<void> {
  await migrateToLatest(database);
  const { db } = database;
  await db
    .insertInto('orgs')
    .values({ id: ORG, slug: 'acme', name: 'Acme', created_at: 1, mfa_required: 0 })
    .execute();
  await db
    .insertInto('users')
    .values({
      id: USER,
      email: 'owner@acme.test',
      display_name: 'Owner',
      password_hash: null,
      status: 'active',
      password_change_required_at: null,
      password_changed_at: null,
      created_at: 1,
      updated_at: 1,
    })
    .execute();
  await db
    .insertInto('agents')
    .values({
      id: AGENT,
      org_id: ORG,
      name: 'web-1',
      hostname: 'web-1',
      labels: '{}',
      signing_key: 'sig-web1',
      encryption_key: 'enc-web1',
      status: 'active',
      registration_token_id: 'rgt_expired',
      created_at: 1,
      updated_at: 1,
      last_seen_at: null,
      key_seal: '',
    })
    .execute();
}

function insertSession(database: Database, id: string, times: { lastSeenAt: number; expiresAt: number }) {
  return database.db
    .insertInto('sessions')
    .values({
      id,
      token_hash: `hash-${id}`,
      user_id: USER,
      created_at: times.lastSeenAt,
      last_seen_at: times.lastSeenAt,
      expires_at: times.expiresAt,
      authenticated_at: times.lastSeenAt,
      ip: null,
      user_agent: null,
      revoked_at: null,
      revoked_reason: null,
      second_factor_pending: 0,
      second_factor_at_provider: 0,
      seal: '',
    })
    .execute();
}

function insertToken(
  database: Database,
  id: string,
  expiresAt: number,
  extra: { revoked_at?: number; uses?: number } = {},
) {
  return database.db
    .insertInto('registration_tokens')
    .values({
      id,
      org_id: ORG,
      token_hash: `hash-${id}`,
      description: '',
      labels: '{}',
      uses_allowed: 1,
      seal: '',
      uses: extra.uses ?? 0,
      created_by: USER,
      created_at: expiresAt - HOUR,
      expires_at: expiresAt,
      revoked_at: extra.revoked_at ?? null,
    })
    .execute();
}

function insertInvitation(
  database: Database,
  id: string,
  expiresAt: number,
  extra: { accepted_at?: number; revoked_at?: number } = {},
) {
  return database.db
    .insertInto('invitations')
    .values({
      id,
      org_id: ORG,
      email: `${id}@acme.test`,
      role: 'viewer',
      token_hash: `hash-${id}`,
      invited_by: USER,
      seal: '',
      created_at: expiresAt - 7 * DAY,
      expires_at: expiresAt,
      accepted_at: extra.accepted_at ?? null,
      accepted_by: extra.accepted_at === undefined ? null : USER,
      revoked_at: extra.revoked_at ?? null,
    })
    .execute();
}

function insertChallenge(
  database: Database,
  sessionId: string,
  purpose: 'register' | 'authenticate',
  expiresAt: number,
) {
  return database.db
    .insertInto('webauthn_challenges')
    .values({ session_id: sessionId, purpose, challenge: `challenge-${sessionId}`, expires_at: expiresAt })
    .execute();
}

async function insertCommand(
  database: Database,
  id: string,
  status: CommandStatus,
  times: { finishedAt: number | null; outputAt: number; outputRows?: number },
) {
  const row: Omit<CommandsTable, 'seal'> = {
    id,
    org_id: ORG,
    agent_id: AGENT,
    service: 'web',
    action: 'restart',
    params: '{}',
    reason: 'test',
    risk: 'low',
    required_approvals: 0,
    requested_by: USER,
    status,
    idempotency_key: null,
    request_hash: `hash-${id}`,
    nonce: `nonce-${id}`,
    timeout_seconds: 60,
    created_at: times.outputAt - MINUTE,
    updated_at: times.finishedAt ?? times.outputAt,
    approval_expires_at: null,
    expires_at: times.outputAt + HOUR,
    dispatched_at: times.outputAt - MINUTE,
    started_at: times.outputAt - MINUTE,
    finished_at: times.finishedAt,
    exit_code: null,
    message: '',
    output_bytes: 0,
    output_truncated: 0,
    final_acked: 0,
    secrets: '[]',
    bulk_run_id: null,
  };
  // Columns that later migrations add to commands have database defaults; these rows are never
  // dispatched, so what those columns hold does not matter here.
  await database.db
    .insertInto('commands')
    .values(row as CommandsTable)
    .execute();
  const count = times.outputRows ?? 2;
  for (let seq = 0; seq < count; seq++) {
    await database.db
      .insertInto('command_output')
      .values({
        command_id: id,
        org_id: row.org_id,
        seq,
        stream: 'stdout',
        data: `line ${seq}\n`,
        created_at: times.outputAt,
      })
      .execute();
  }
}

const ids = async (database: Database, table: 'sessions' | 'registration_tokens' | 'invitations') =>
  (await database.db.selectFrom(table).select('id').orderBy('id').execute()).map((row) => row.id);

const challenges = async (database: Database) =>
  (
    await database.db
      .selectFrom('webauthn_challenges')
      .select(['session_id', 'purpose'])
      .orderBy('session_id')
      .orderBy('purpose')
      .execute()
  ).map((row) => `${row.session_id}/${row.purpose}`);

const outputOf = async (database: Database) => {
  const rows = await database.db
    .selectFrom('command_output')
    .select(['command_id', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('command_id')
    .orderBy('command_id')
    .execute();
  return Object.fromEntries(rows.map((row) => [row.command_id, Number(row.n)]));
};

describe.each(testDatabases())('maintenance jobs on $dialect', (target) => {
  const database = freshDatabasePerTest(target);
  let clock: ReturnType<typeof manualClock>;
  let metrics: ReturnType<typeof createMetrics>;
  let logs: LogCapture;

  const maintenance = (chunkSize?: number) =>
    createMaintenanceService({
      store: createMaintenanceStore(database().db),
      clock: clock.now,
      logger: pino({ level: 'debug' }, logs),
      metrics: metrics.maintenance,
      options: {
        sessionIdleMs: IDLE_MS,
        commandOutputRetentionDays: RETENTION_DAYS,
        ...(chunkSize === undefined ? {} : { chunkSize }),
      },
    });

  beforeEach(async () => {
    clock = manualClock(NOW);
    metrics = createMetrics();
    logs = new LogCapture();
    await seedWorld(database());
  });

  it('deletes the sessions the session service would refuse, and keeps those it would accept', async () => {
    // Sessions made by the real service at chosen times, so their rows are what sign-in writes.
    // No per-user limit comes into it: a user may hold more sessions than this test starts.
    const policy = { idleMs: IDLE_MS, absoluteMs: ABSOLUTE_MS, maxPerUser: 100 };
    const masterKeys = { current: randomBytes(32), previous: [] };
    const sessions = createSessionsService({
      store: createSessionsStore(database().db),
      seals: createCredentialSeals({
        dataKeys: createDataKeyring({
          store: createDataKeysStore(database().db),
          provider: createLocalKeyProvider(masterKeys, () => masterKeys),
          clock: clock.now,
        }),
      }),
      clock: clock.now,
      policy,
    });
    const startAt = async (at: number, options: { expiresAt?: number } = {}) => {
      clock.set(at);
      return sessions.start(USER, {}, options);
    };
    const idleEdge = await startAt(NOW - IDLE_MS); // unused for exactly the idle timeout
    const idleLive = await startAt(NOW - IDLE_MS + 1);
    const lifetimeEdge = await startAt(NOW - 10 * MINUTE, { expiresAt: NOW }); // at its absolute end
    const lifetimeLive = await startAt(NOW - 10 * MINUTE, { expiresAt: NOW + 1 });
    const longGone = await startAt(NOW - 3 * DAY);
    const loggedOut = await startAt(NOW - 5 * MINUTE);
    clock.set(NOW - MINUTE);
    await sessions.end(loggedOut.sessionId, 'logout');
    clock.set(NOW);

    expect((await maintenance().runJob('sessions')).removed).toBe(3);

    // An ended session stays until it would have expired anyway; it opens nothing meanwhile.
    expect(await ids(database(), 'sessions')).toEqual(
      [idleLive.sessionId, lifetimeLive.sessionId, loggedOut.sessionId].sort(),
    );
    // What stayed is what the service still accepts (the logged-out one aside); what went, it refuses.
    expect(await sessions.resolve(idleLive.token)).toBeDefined();
    expect(await sessions.resolve(lifetimeLive.token)).toBeDefined();
    for (const gone of [idleEdge, lifetimeEdge, longGone, loggedOut])
      expect(await sessions.resolve(gone.token)).toBeUndefined();
  });

  it('deletes registration tokens at and past their expiry, whatever their state, and no agent', async () => {
    await insertToken(database(), 'rgt_expired', NOW - DAY, { uses: 1 });
    await insertToken(database(), 'rgt_edge', NOW);
    await insertToken(database(), 'rgt_revoked_expired', NOW - 1, { revoked_at: NOW - HOUR });
    await insertToken(database(), 'rgt_live', NOW + 1);
    await insertToken(database(), 'rgt_revoked_live', NOW + HOUR, { revoked_at: NOW - HOUR });
    await insertToken(database(), 'rgt_used_live', NOW + HOUR, { uses: 1 });

    expect((await maintenance().runJob('registration_tokens')).removed).toBe(3);

    expect(await ids(database(), 'registration_tokens')).toEqual([
      'rgt_live',
      'rgt_revoked_live',
      'rgt_used_live',
    ]);
    // The agent registered with the deleted token is untouched.
    expect(await database().db.selectFrom('agents').select('id').execute()).toEqual([{ id: AGENT }]);
  });

  it('deletes invitations at and past their expiry, pending, accepted or revoked', async () => {
    await insertInvitation(database(), 'inv_expired', NOW - DAY);
    await insertInvitation(database(), 'inv_edge', NOW);
    await insertInvitation(database(), 'inv_accepted_expired', NOW - 1, { accepted_at: NOW - 2 * DAY });
    await insertInvitation(database(), 'inv_revoked_expired', NOW - 1, { revoked_at: NOW - 2 * DAY });
    await insertInvitation(database(), 'inv_live', NOW + 1);
    await insertInvitation(database(), 'inv_accepted_live', NOW + DAY, { accepted_at: NOW - HOUR });

    expect((await maintenance().runJob('invitations')).removed).toBe(4);

    expect(await ids(database(), 'invitations')).toEqual(['inv_accepted_live', 'inv_live']);
  });

  it('deletes passkey challenges at and past their expiry; a dead session takes its own along', async () => {
    await insertSession(database(), 'ses_a', { lastSeenAt: NOW, expiresAt: NOW + HOUR });
    await insertSession(database(), 'ses_b', { lastSeenAt: NOW, expiresAt: NOW + HOUR });
    await insertSession(database(), 'ses_dead', { lastSeenAt: NOW - DAY, expiresAt: NOW - HOUR });
    await insertChallenge(database(), 'ses_a', 'register', NOW - MINUTE);
    await insertChallenge(database(), 'ses_a', 'authenticate', NOW);
    await insertChallenge(database(), 'ses_b', 'register', NOW + 1);
    await insertChallenge(database(), 'ses_b', 'authenticate', NOW + MINUTE);
    await insertChallenge(database(), 'ses_dead', 'authenticate', NOW + MINUTE);

    expect((await maintenance().runJob('webauthn_challenges')).removed).toBe(2);
    expect(await challenges(database())).toEqual([
      'ses_b/authenticate',
      'ses_b/register',
      'ses_dead/authenticate',
    ]);

    await maintenance().runJob('sessions');
    expect(await challenges(database())).toEqual(['ses_b/authenticate', 'ses_b/register']);
  });

  it('prunes the output of commands that ended at or before the retention cutoff, and nothing else', async () => {
    await insertCommand(database(), 'cmd_old_succeeded', 'succeeded', {
      finishedAt: CUTOFF - DAY,
      outputAt: CUTOFF - DAY - MINUTE,
    });
    await insertCommand(database(), 'cmd_edge_failed', 'failed', {
      finishedAt: CUTOFF,
      outputAt: CUTOFF - MINUTE,
    });
    for (const status of ['timed_out', 'cancelled', 'expired', 'rejected'] as const)
      await insertCommand(database(), `cmd_old_${status}`, status, {
        finishedAt: CUTOFF - HOUR,
        outputAt: CUTOFF - 2 * HOUR,
      });
    // Ended one millisecond too late to be pruned.
    await insertCommand(database(), 'cmd_recent', 'succeeded', {
      finishedAt: CUTOFF + 1,
      outputAt: CUTOFF - MINUTE,
    });
    // Its output is old, but it has not ended: nothing of it goes.
    await insertCommand(database(), 'cmd_running', 'running', {
      finishedAt: null,
      outputAt: CUTOFF - DAY,
    });
    // A long run that ended after the cutoff: its early output is older than the cutoff, and stays.
    await insertCommand(database(), 'cmd_straddling', 'timed_out', {
      finishedAt: NOW - DAY,
      outputAt: CUTOFF - HOUR,
    });
    await insertCommand(database(), 'cmd_fresh', 'succeeded', {
      finishedAt: NOW - HOUR,
      outputAt: NOW - HOUR,
    });

    expect((await maintenance().runJob('command_output')).removed).toBe(12);

    expect(await outputOf(database())).toEqual({
      cmd_fresh: 2,
      cmd_recent: 2,
      cmd_running: 2,
      cmd_straddling: 2,
    });
    // The commands themselves stay, with their status and history.
    const commands = await database().db.selectFrom('commands').select('id').execute();
    expect(commands).toHaveLength(10);
  });

  it.each(MAINTENANCE_JOBS)(
    'deletes a backlog larger than a chunk in bounded statements (%s)',
    async (job) => {
      const seeds: Record<MaintenanceJob, () => Promise<void>> = {
        sessions: async () => {
          for (let i = 0; i < 10; i++)
            await insertSession(database(), `ses_old${i}`, { lastSeenAt: NOW - DAY, expiresAt: NOW - HOUR });
          await insertSession(database(), 'ses_live', { lastSeenAt: NOW, expiresAt: NOW + HOUR });
        },
        registration_tokens: async () => {
          for (let i = 0; i < 10; i++) await insertToken(database(), `rgt_old${i}`, NOW - i);
          await insertToken(database(), 'rgt_live', NOW + 1);
        },
        invitations: async () => {
          for (let i = 0; i < 10; i++) await insertInvitation(database(), `inv_old${i}`, NOW - i);
          await insertInvitation(database(), 'inv_live', NOW + 1);
        },
        webauthn_challenges: async () => {
          for (let i = 0; i < 5; i++) {
            await insertSession(database(), `ses_${i}`, { lastSeenAt: NOW, expiresAt: NOW + HOUR });
            await insertChallenge(database(), `ses_${i}`, 'register', NOW - i);
            await insertChallenge(database(), `ses_${i}`, 'authenticate', NOW - i);
          }
          await insertSession(database(), 'ses_live', { lastSeenAt: NOW, expiresAt: NOW + HOUR });
          await insertChallenge(database(), 'ses_live', 'register', NOW + 1);
        },
        command_output: async () => {
          // Ten rows of one command: the chunks split a command's output, not only between commands.
          await insertCommand(database(), 'cmd_old', 'succeeded', {
            finishedAt: CUTOFF - DAY,
            outputAt: CUTOFF - 2 * DAY,
            outputRows: 10,
          });
          await insertCommand(database(), 'cmd_live', 'succeeded', {
            finishedAt: NOW,
            outputAt: NOW,
            outputRows: 1,
          });
        },
      };
      const remaining: Record<MaintenanceJob, () => Promise<unknown>> = {
        sessions: () => ids(database(), 'sessions'),
        registration_tokens: () => ids(database(), 'registration_tokens'),
        invitations: () => ids(database(), 'invitations'),
        webauthn_challenges: () => challenges(database()),
        command_output: () => outputOf(database()),
      };
      const live: Record<MaintenanceJob, unknown> = {
        sessions: ['ses_live'],
        registration_tokens: ['rgt_live'],
        invitations: ['inv_live'],
        webauthn_challenges: ['ses_live/register'],
        command_output: { cmd_live: 1 },
      };
      await seeds[job]();

      // Ten rows in chunks of four: two full chunks, then one of two that ends the run.
      expect(await maintenance(4).runJob(job)).toEqual({ job, removed: 10, chunks: 3 });
      expect(await remaining[job]()).toEqual(live[job]);
      expect(await metrics.maintenance.removed.get()).toMatchObject({
        values: [{ labels: { job }, value: 10 }],
      });
    },
  );

  it('runs every job once per run, logs and counts what each removed, and reports a failing job without stopping the others', async () => {
    await insertSession(database(), 'ses_old', { lastSeenAt: NOW - DAY, expiresAt: NOW - HOUR });
    await insertToken(database(), 'rgt_old', NOW - 1);
    await insertToken(database(), 'rgt_live', NOW + 1);
    await insertCommand(database(), 'cmd_old', 'succeeded', { finishedAt: CUTOFF, outputAt: CUTOFF });
    // A real failure of one job: its table is gone.
    await sql`drop table invitations`.execute(database().db);

    const results = await maintenance().runAll();

    expect(results.map((result) => [result.job, result.removed])).toEqual([
      ['webauthn_challenges', 0],
      ['sessions', 1],
      ['registration_tokens', 1],
      ['command_output', 2],
    ]);
    expect(await ids(database(), 'registration_tokens')).toEqual(['rgt_live']);
    const removed = (await metrics.maintenance.removed.get()).values;
    expect(Object.fromEntries(removed.map((value) => [value.labels.job, value.value]))).toEqual({
      sessions: 1,
      registration_tokens: 1,
      command_output: 2,
    });
    expect((await metrics.maintenance.failures.get()).values).toEqual([
      expect.objectContaining({ labels: { job: 'invitations' }, value: 1 }),
    ]);
    const entries = logs.entries();
    expect(entries).toContainEqual(
      expect.objectContaining({ level: 50, job: 'invitations', msg: 'maintenance job failed' }),
    );
    expect(entries).toContainEqual(
      expect.objectContaining({
        level: 30,
        msg: 'maintenance removed expired rows',
        removed: { webauthn_challenges: 0, sessions: 1, registration_tokens: 1, command_output: 2 },
      }),
    );
  });

  it('logs nothing above debug when there is nothing to remove', async () => {
    await insertToken(database(), 'rgt_live', NOW + 1);
    const results = await maintenance().runAll();
    expect(results.every((result) => result.removed === 0 && result.chunks === 1)).toBe(true);
    expect(logs.entries().filter((entry) => (entry.level as number) > 20)).toEqual([]);
  });

  it('after stop, a job ends with the chunk it is deleting, and a new run does nothing', async () => {
    for (let i = 0; i < 10; i++)
      await insertSession(database(), `ses_old${i}`, { lastSeenAt: NOW - DAY, expiresAt: NOW - HOUR });
    const service = maintenance(4);
    service.stop();
    expect(await service.runJob('sessions')).toEqual({ job: 'sessions', removed: 4, chunks: 1 });
    expect(await service.runAll()).toEqual([]);
    expect(await ids(database(), 'sessions')).toHaveLength(6);
  });
});
