import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { tableRows } from '../test-support/databases.js';
import { type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { fillDisk, mountSmallDisk, type SmallDisk } from '../test-support/tmpfs.js';
import {
  CHANGE_KINDS,
  type ChangeKind,
  changesOnRecord,
  type Outcome,
  Traffic,
} from '../test-support/traffic.js';
import { type Database, openSqlite } from './database.js';

/**
 * The disk under the SQLite database (and so under the audit log) fills up. Every state change must
 * then be refused with a precise 503 and leave the database exactly as it was, reads must keep
 * working, and once space is freed the same change must succeed with no restart. Changes the server
 * acknowledged while the disk was filling must all be there afterwards, each with its audit event,
 * and the audit chain must verify.
 *
 * The data directory is a small tmpfs of the test's own, which needs root to mount. In CI
 * (BULWARK_TEST_REQUIRE_SERVICES=1) not being able to mount is a failure; elsewhere the tests skip.
 */

const required = process.env.BULWARK_TEST_REQUIRE_SERVICES === '1';
/** The refusals a full disk may give: the commit failing, or the audit append failing first. */
const FULL_CODES = ['storage_full', 'audit_unavailable'];
const HANG_MS = 30_000;
const succeeded = (o: { status: number }) => o.status >= 200 && o.status < 300;
const refusedAsFull = (o: { status: number; code?: string }) =>
  o.status === 503 && FULL_CODES.includes(o.code ?? '');

describe('the SQLite disk fills up', () => {
  let disk: SmallDisk | undefined;
  let cannotMount = '';
  let world: OrgWorld | undefined;
  let reader: Database | undefined;
  let orgId = '';

  beforeAll(async () => {
    try {
      disk = await mountSmallDisk(32);
    } catch (error) {
      cannotMount = `cannot mount a tmpfs (${(error as Error).message.split('\n')[0]})`;
      if (required) throw new Error(`${cannotMount}; BULWARK_TEST_REQUIRE_SERVICES=1 forbids skipping`);
      process.stderr.write(`\n[bulwark tests] ${cannotMount}: the disk-full tests are SKIPPED.\n`);
      return;
    }
    world = await startOrgWorld({ BULWARK_DATA_DIR: disk.path });
    const database = world.server.config.database;
    if (database.kind !== 'sqlite') throw new Error('the disk-full tests need the SQLite backend');
    reader = openSqlite({ file: database.file, busyTimeoutMs: 10_000 });
    orgId = (
      await reader.db.selectFrom('orgs').select('id').where('slug', '=', world.slug).executeTakeFirstOrThrow()
    ).id;
  }, 120_000);

  afterAll(async () => {
    try {
      await reader?.close();
      await world?.close();
    } finally {
      await disk?.unmount();
    }
  });

  const change = (kind: ChangeKind, name: string) => {
    const client = world!.owner.client;
    switch (kind) {
      case 'team':
        return client.json<{ id: string }>('POST', '/api/orgs/acme/teams', { name });
      case 'apiKey':
        return client
          .json<{ apiKey: { id: string } }>('POST', '/api/orgs/acme/api-keys', {
            name,
            permissions: ['teams:read'],
          })
          .then(({ status, body }) => ({ status, body: { ...body, id: body.apiKey?.id } }));
      case 'secret':
        return client.json<{ id: string }>('POST', '/api/orgs/acme/secrets', { name, value: 'disk-full' });
    }
  };
  const signIn = (password: string) =>
    new SessionClient(world!.server.url).json('POST', '/api/auth/login', { email: OWNER.email, password });
  const READS = [
    '/api/orgs/acme/teams',
    '/api/orgs/acme/api-keys',
    '/api/orgs/acme/secrets',
    '/api/orgs/acme/audit/events?limit=5',
    '/api/auth/session',
    '/readyz',
  ];

  it('refuses every change with a precise 503, keeps reads, changes nothing, and takes the change once space is freed', async (context) => {
    if (!disk) return context.skip(cannotMount);
    // A checkpoint that empties the WAL first: SQLite rewrites a WAL from its start after a complete
    // checkpoint, into space the file already holds, so a write could still fit on a "full" disk.
    // From an empty WAL every commit needs new space.
    for (;;) {
      const { rows } = await sql<{ busy: number }>`pragma wal_checkpoint(TRUNCATE)`.execute(reader!.db);
      if (rows[0]!.busy === 0) break;
    }
    const filler = await fillDisk(disk.path);
    const answers: Record<string, { status: number; body: unknown }> = {};
    try {
      const before = await tableRows(reader!);

      for (const kind of CHANGE_KINDS) answers[kind] = await change(kind, `full_${kind}`);
      answers['sign-in'] = await signIn(OWNER.password);
      // A failed sign-in changes nothing but must be recorded: refused too, rather than unrecorded.
      answers['failed sign-in'] = await signIn('Not-The-Password-0000');
      for (const [what, answer] of Object.entries(answers)) {
        const code = (answer.body as { error?: { code?: string } } | undefined)?.error?.code;
        expect({ what, status: answer.status, code }).toEqual({
          what,
          status: 503,
          code: expect.toSatisfy((c: string) => FULL_CODES.includes(c)),
        });
      }

      // Past the session's last-seen update interval: reading would write its last-seen time, which
      // the full disk refuses; the read must not fail for it.
      world!.clock.advance(61_000);
      for (const route of READS) {
        const read = await world!.owner.client.json('GET', route);
        expect({ route, status: read.status }).toEqual({ route, status: 200 });
      }

      // Not a row more, less or different anywhere: nothing half-written, no orphan audit event.
      expect(await tableRows(reader!)).toEqual(before);
    } finally {
      await filler.remove();
    }

    // The same requests succeed on the same server once there is space again.
    for (const kind of CHANGE_KINDS) {
      const answer = await change(kind, `full_${kind}`);
      expect({ kind, status: answer.status }).toEqual({ kind, status: 201 });
      const { rows, events } = (await changesOnRecord(reader!.db, orgId))[kind];
      expect(rows.has(answer.body.id) && events.has(answer.body.id)).toBe(true);
    }
    expect((await signIn(OWNER.password)).status).toBe(200);
    expect((await signIn('Not-The-Password-0000')).status).toBe(401);

    const verified = await world!.cli('audit', 'verify');
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
  }, 120_000);

  it('loses no change it acknowledged while the disk was filling', async (context) => {
    if (!disk) return context.skip(cannotMount);
    // Reads never fail for want of space; changes succeed or are refused precisely.
    const allowed = (o: Outcome) => succeeded(o) || (o.kind !== 'read' && refusedAsFull(o));
    const traffic = new Traffic(world!.owner.client, world!.slug, {
      kinds: ['team', 'apiKey', 'read', 'secret'],
      workers: 4,
      hangMs: HANG_MS,
      backoffMs: 20,
      forbidden: (o) => !allowed(o),
    });
    onTestFailed(() => {
      process.stderr.write(`traffic:\n${traffic.summary()}\n`);
    });
    const count = (all: Outcome[], phase: string, kind: string, ok: (o: Outcome) => boolean) =>
      all.filter((o) => o.sent === phase && o.answered === phase && o.kind === kind && ok(o)).length;

    let filler: Awaited<ReturnType<typeof fillDisk>> | undefined;
    traffic.start();
    try {
      await traffic.until(
        (all) => CHANGE_KINDS.every((kind) => count(all, 'before', kind, succeeded) >= 2),
        'changes succeeded before the disk filled',
      );
      // The disk fills while the changes keep coming: some are acknowledged in the last moments.
      traffic.phase = 'filling';
      filler = await fillDisk(disk.path);
      traffic.phase = 'full';
      await traffic.until(
        (all) =>
          CHANGE_KINDS.every((kind) => count(all, 'full', kind, refusedAsFull) >= 1) &&
          count(all, 'full', 'read', succeeded) >= 1,
        'every kind of change was refused on the full disk',
      );
    } finally {
      await traffic.stop();
      await filler?.remove();
    }
    expect(
      traffic.outcomes.filter((o) => !allowed(o)),
      traffic.summary(),
    ).toEqual([]);

    const recorded = await changesOnRecord(reader!.db, orgId);
    for (const kind of CHANGE_KINDS) {
      const { rows, events } = recorded[kind];
      const acknowledged = traffic.outcomes.filter((o) => o.kind === kind && succeeded(o));
      expect(acknowledged.filter((o) => !rows.has(o.id!) || !events.has(o.id!))).toEqual([]);
      // A refused change is not there at all; nothing is there without its event, or the reverse.
      const names = new Set(rows.values());
      const refused = traffic.outcomes.filter((o) => o.kind === kind && !succeeded(o));
      expect(refused.filter((o) => names.has(o.name))).toEqual([]);
      expect([...rows.keys()].filter((id) => !events.has(id))).toEqual([]);
      expect([...events].filter((id) => !rows.has(id))).toEqual([]);
    }

    // Space freed: the same server takes changes again, and the chain verifies.
    const again = await change('team', 'after_the_disk_filled');
    expect(again.status).toBe(201);
    const verified = await world!.cli('audit', 'verify');
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
  }, 120_000);
});
