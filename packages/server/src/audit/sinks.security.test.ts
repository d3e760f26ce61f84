/**
 * Audit sinks (AUD-6) against the attacks they exist for.
 *
 * - Someone with database access deletes the newest audit events together with their signed
 *   checkpoints and moves the chain head back: what is left is a shorter chain that verifies. The
 *   copy a sink delivered outside the database still holds the signed checkpoints, and
 *   `bulwark audit verify --witness` finds the database no longer holds them.
 * - A file sink rotating its file must not drop a line; syslog must reach a real rsyslog over TLS
 *   only when the receiver's certificate is from the configured CA (no talking to an impostor).
 * - Reading the database must not give away a sink's credentials: the webhook signing secret is
 *   sealed, shown once and never returned; every configuration change is in the audit log.
 * - A person's erasure shreds the key of their sealed personal fields, but cannot reach a copy already
 *   delivered in the clear: so no sink (not even the file on this server's disk) gets people's opened
 *   email/name, IP or user agent unless its configuration opts in, visibly and audited.
 * - An organization admin creates sinks without end, each a delivery and a connection per pass: the
 *   count is capped (409 `audit_sink_limit`).
 * - A member without the security-configuration permission cannot list or change sinks (403), and an
 *   organization cannot reach another's sink by its id (404).
 */
import { chmod, chown, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Database, openSqlite } from '../db/database.js';
import { type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { runCli } from '../test-support/processes.js';
import { type Rsyslog, startRsyslog } from '../test-support/rsyslog.js';
import { tempDir } from '../test-support/temp.js';
import { makeTestCa } from '../test-support/test-ca.js';
import { checkSinkDir, createFileTransport } from './sinks.file.js';
import { testLine } from './sinks.lines.js';

interface SinkAnswer {
  sink: { id: string; kind: string; config: Record<string, unknown>; delivery: Record<string, unknown> };
  signingSecret?: string;
}
type Line = Record<string, unknown> & { chain: string; seq: number; hash: string; kind?: string };

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('audit sinks', () => {
  let world: OrgWorld;
  let rsyslog: Rsyslog;
  let sinkDir: { path: string; remove(): Promise<void> };
  let otherCa: { path: string; remove(): Promise<void> };
  let impostorCa: string;
  let database: Database;
  let orgId: string;

  const api = <T>(method: string, route: string, body?: unknown) =>
    world.owner.client.json<T>(method, `/api/orgs/acme/audit/sinks${route}`, body);
  const head = async () =>
    (
      await database.db
        .selectFrom('audit_chain_heads')
        .select(['seq', 'hash'])
        .where('chain_id', '=', orgId)
        .executeTakeFirstOrThrow()
    ).seq;
  /** A sink's files, oldest first: rotated ones by their time, then the current one. */
  const sinkFiles = async (sinkId: string) => {
    const names = (await readdir(sinkDir.path)).filter((name) => name.startsWith(`${sinkId}.`));
    const rotated = names.filter((name) => name !== `${sinkId}.ndjson`).sort();
    return [...rotated, ...(names.includes(`${sinkId}.ndjson`) ? [`${sinkId}.ndjson`] : [])].map((name) =>
      path.join(sinkDir.path, name),
    );
  };
  const sinkLines = async (sinkId: string): Promise<Line[]> => {
    const lines: Line[] = [];
    for (const file of await sinkFiles(sinkId))
      for (const text of (await readFile(file, 'utf8')).split('\n')) if (text) lines.push(JSON.parse(text));
    return lines;
  };
  /** The audit events of the org's chain about one sink, oldest first. */
  const auditedChanges = (sinkId: string) =>
    database.db
      .selectFrom('audit_events')
      .select(['action', 'details'])
      .where('chain_id', '=', orgId)
      .where('target_id', '=', sinkId)
      .orderBy('seq')
      .execute();
  const makeEvents = async (n: number, label: string) => {
    for (let i = 0; i < n; i++)
      expect(
        (await world.owner.client.json('POST', '/api/orgs/acme/teams', { name: `${label}-${i}` })).status,
      ).toBe(201);
  };

  beforeAll(async () => {
    sinkDir = await tempDir('sinks');
    otherCa = await tempDir('other-ca');
    rsyslog = await startRsyslog();
    impostorCa = makeTestCa(otherCa.path, 'impostor').caPem;
    world = await startOrgWorld({
      BULWARK_AUDIT_SINK_DIR: sinkDir.path,
      // rsyslog listens on loopback, which the outbound guard refuses unless told.
      BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1',
      BULWARK_AUDIT_SINK_POLL_MS: '20',
      BULWARK_AUDIT_SINK_FILE_MAX_BYTES: '4096',
      BULWARK_AUDIT_CHECKPOINT_EVERY: '5',
    });
    const { database: where } = world.server.config;
    if (where.kind !== 'sqlite') throw new Error('this suite reads the SQLite file');
    database = openSqlite({ file: where.file, busyTimeoutMs: 5000 });
    orgId = (
      await database.db.selectFrom('orgs').select('id').where('slug', '=', 'acme').executeTakeFirstOrThrow()
    ).id;
  }, 60_000);

  afterAll(async () => {
    await database?.close();
    await world?.close();
    await rsyslog?.stop();
    await sinkDir?.remove();
    await otherCa?.remove();
  });

  test('a file sink gets every event in order with its signed checkpoints, across rotations; a witness catches a truncated tail', async () => {
    const created = await api<SinkAnswer>('POST', '', { name: 'local file', config: { kind: 'file' } });
    expect(created.status).toBe(201);
    const sinkId = created.body.sink.id;
    expect(created.body.sink.config).toEqual({
      kind: 'file',
      file: `${sinkId}.ndjson`,
      personalData: false,
    });
    await makeEvents(24, 'file');
    const target = await head();
    const signed = async () =>
      (
        await database.db
          .selectFrom('audit_checkpoints')
          .select((eb) => eb.fn.max('seq').as('seq'))
          .where('chain_id', '=', orgId)
          .executeTakeFirstOrThrow()
      ).seq;
    // Caught up: its cursor at the head and at the newest checkpoint (read the files only then: a
    // rotation between listing and reading them would hide lines from this reader, not from the sink).
    await until('the file sink to catch up', async () => {
      const { delivery } = (await api<SinkAnswer['sink']>('GET', `/${sinkId}`)).body;
      return delivery.deliveredSeq === target && delivery.checkpointSeq === (await signed())
        ? true
        : undefined;
    });
    const lines = await sinkLines(sinkId);
    // Not opted in to personal data: only the sealed form, which the owner's erasure would reach.
    expect(lines.some((line) => 'shown' in line)).toBe(false);
    expect(JSON.stringify(lines)).not.toContain(OWNER.email);
    expect(lines.filter((line) => line.kind === 'checkpoint').length).toBeGreaterThanOrEqual(4);
    // Rotation happened (4 KiB files), and no line was lost or cut: every event 1..head, once or more.
    expect((await sinkFiles(sinkId)).length).toBeGreaterThan(2);
    const events = lines.filter((line) => line.kind === undefined);
    const seqs = [...new Set(events.map((line) => line.seq))];
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    // In chain order, each line linked to the one before it (the export's line form).
    for (let i = 1; i < events.length; i++) {
      if (events[i]!.seq === events[i - 1]!.seq + 1) expect(events[i]!.prevHash).toBe(events[i - 1]!.hash);
      else expect(events[i]!.seq).toBeLessThanOrEqual(events[i - 1]!.seq);
    }
    const stored = await database.db
      .selectFrom('audit_events')
      .select(['seq', 'hash'])
      .where('chain_id', '=', orgId)
      .execute();
    const hashes = new Map(stored.map((row) => [row.seq, row.hash]));
    for (const line of events) expect(line.hash).toBe(hashes.get(line.seq));
    // A checkpoint line comes after the event it covers.
    for (const checkpoint of lines.filter((line) => line.kind === 'checkpoint')) {
      const at = lines.indexOf(checkpoint);
      expect(lines.slice(0, at).some((line) => line.kind === undefined && line.seq === checkpoint.seq)).toBe(
        true,
      );
      expect(checkpoint.hash).toBe(hashes.get(checkpoint.seq));
      expect(typeof checkpoint.signature).toBe('string');
    }

    // The copy an operator keeps (the sink goes on writing: a snapshot of what it had delivered).
    const saved = path.join(otherCa.path, 'witness.ndjson');
    await writeFile(saved, lines.map((line) => `${JSON.stringify(line)}\n`).join(''));

    // The attack: delete the newest events and their checkpoints, and move the head back onto what is left.
    const witnessed = Math.max(...lines.filter((line) => line.kind === 'checkpoint').map((line) => line.seq));
    const keep = witnessed - 3;
    const kept = await database.db
      .selectFrom('audit_events')
      .select('hash')
      .where('chain_id', '=', orgId)
      .where('seq', '=', keep)
      .executeTakeFirstOrThrow();
    await database.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('audit_events').where('chain_id', '=', orgId).where('seq', '>', keep).execute();
      await trx
        .deleteFrom('audit_checkpoints')
        .where('chain_id', '=', orgId)
        .where('seq', '>', keep)
        .execute();
      await trx
        .updateTable('audit_chain_heads')
        .set({ seq: keep, hash: kept.hash })
        .where('chain_id', '=', orgId)
        .execute();
    });

    // The database alone cannot tell: the shorter chain verifies.
    const plain = await world.cli('audit', 'verify', '--org', orgId);
    expect(plain.code, plain.stdout + plain.stderr).toBe(0);
    // The sink's copy can.
    const witness = await world.cli('audit', 'verify', '--org', orgId, '--witness', saved);
    expect(witness.code).not.toBe(0);
    expect(witness.stdout).toContain(`BROKEN  witness: ${orgId} at seq ${keep + 1}`);
    expect(witness.stdout).toMatch(/its tail was truncated/);
  }, 60_000);

  test('the instance chain streams to sinks configured on the host, with its checkpoints; no organization reaches them', async () => {
    // Events of no organization (a workload-identity key rotation, the sink's own configuration) left
    // the database nowhere: an attacker with database access could rewrite the instance chain's tail
    // unwitnessed. An operator on the host adds a sink for it; an org owner must not see or change it.
    // The CLI runs with the server's configuration (file sinks need its sink directory).
    const { dataDir, database: where } = world.server.config;
    const hostCli = (...args: string[]) =>
      runCli(args, {
        cwd: dataDir,
        env: {
          BULWARK_DATA_DIR: dataDir,
          BULWARK_DATABASE_URL: where.kind === 'sqlite' ? `sqlite:${where.file}` : where.url,
          BULWARK_AUDIT_SINK_DIR: sinkDir.path,
        },
      });
    const added = await hostCli('audit', 'sinks', 'add', '--name', 'host siem', '--file');
    expect(added.code, added.stderr).toBe(0);
    const sinkId = /^(snk_\S+)/.exec(added.stdout)?.[1];
    expect(sinkId).toBeDefined();
    const rotated = await world.cli('keys', 'rotate-workload-identity');
    expect(rotated.code, rotated.stderr).toBe(0);
    const lines = await until('the instance sink to deliver the rotation and a checkpoint', async () => {
      const got = await sinkLines(sinkId!);
      return got.some((line) => line.action === 'keys.workload_identity_rotated') &&
        got.some((line) => line.kind === 'checkpoint')
        ? got
        : undefined;
    });
    expect(new Set(lines.map((line) => line.chain))).toEqual(new Set(['instance']));
    expect(lines.some((line) => line.action === 'audit.sink_created')).toBe(true);
    const saved = path.join(otherCa.path, 'instance-witness.ndjson');
    await writeFile(saved, lines.map((line) => `${JSON.stringify(line)}\n`).join(''));
    const witnessed = await world.cli('audit', 'verify', '--org', 'instance', '--witness', saved);
    expect(witnessed.code, witnessed.stdout + witnessed.stderr).toBe(0);

    // The organization's API: not in its list, and its id answers 404 to every verb.
    const listed = await api<{ sinks: Array<{ id: string }> }>('GET', '');
    expect(listed.body.sinks.map((sink) => sink.id)).not.toContain(sinkId);
    expect((await api('GET', `/${sinkId}`)).status).toBe(404);
    expect((await api('PATCH', `/${sinkId}`, { enabled: false })).status).toBe(404);
    expect((await api('POST', `/${sinkId}/test`)).status).toBe(404);
    expect((await api('DELETE', `/${sinkId}`)).status).toBe(404);

    // The host's CLI lists it, with its delivery, and removes it; an org's sink id is not the CLI's.
    const list = await hostCli('audit', 'sinks', 'list');
    expect(list.stdout).toContain(`${sinkId}  host siem  file  enabled`);
    const orgSink = await api<SinkAnswer>('POST', '', {
      name: 'org file',
      config: { kind: 'file' },
      from: 'now',
    });
    const foreign = await hostCli('audit', 'sinks', 'remove', orgSink.body.sink.id);
    expect(foreign.code).not.toBe(0);
    expect(foreign.stderr).toContain('No such audit sink');
    expect((await api('DELETE', `/${orgSink.body.sink.id}`)).status).toBe(200);
    const removed = await hostCli('audit', 'sinks', 'remove', sinkId!);
    expect(removed.code, removed.stderr).toBe(0);
    const deleted = await database.db
      .selectFrom('audit_events')
      .select('action')
      .where('chain_id', '=', 'instance')
      .where('action', '=', 'audit.sink_deleted')
      .execute();
    expect(deleted).toHaveLength(1);
  }, 60_000);

  test('syslog goes to rsyslog over TLS (RFC 5424, octet-counted), and never to a receiver the configured CA did not sign', async () => {
    const wrong = await api<SinkAnswer>('POST', '', {
      name: 'impostor check',
      config: { kind: 'syslog', host: '127.0.0.1', port: rsyslog.port, caPem: impostorCa },
      from: 'now',
    });
    expect(wrong.status).toBe(201);
    const refused = await api<{ ok: boolean; problem?: string }>('POST', `/${wrong.body.sink.id}/test`);
    expect(refused.body.ok).toBe(false);
    expect(refused.body.problem).toMatch(/certificate/i);
    expect((await api('DELETE', `/${wrong.body.sink.id}`)).status).toBe(200);

    const created = await api<SinkAnswer>('POST', '', {
      name: 'siem',
      config: {
        kind: 'syslog',
        host: '127.0.0.1',
        port: rsyslog.port,
        caPem: rsyslog.caPem,
        appHostname: 'bulwark-test',
      },
    });
    expect(created.status).toBe(201);
    const tested = await api<{ ok: boolean }>('POST', `/${created.body.sink.id}/test`);
    expect(tested.body).toEqual({ ok: true });
    await makeEvents(3, 'syslog');
    const target = await head();
    const received = await rsyslog.waitFor((lines) =>
      lines.some((line) => line.includes(` seq="${target}" kind="event"`)),
    );
    const parse = (line: string) => {
      const match =
        /^<(\d+)>1 (\S+) (\S+) bulwark - (\S+) \[bulwark@32473 chain="([^"]+)" seq="(\d+)" kind="(\w+)" id="[^"]+"\] \uFEFF(.*)$/.exec(
          line,
        );
      expect(match, line).not.toBeNull();
      return {
        pri: Number(match![1]),
        host: match![3],
        msgid: match![4],
        seq: Number(match![6]),
        kind: match![7],
        body: JSON.parse(match![8]!),
      };
    };
    const messages = received.map(parse);
    expect(messages.some((m) => m.kind === 'test')).toBe(true);
    const events = messages.filter((m) => m.kind === 'event');
    // From the start of the chain, in order, each message the chain's own line (facility 13, log audit).
    expect(events.map((m) => m.seq).slice(0, target)).toEqual(
      Array.from({ length: target }, (_, i) => i + 1),
    );
    for (const m of events) {
      expect(m.host).toBe('bulwark-test');
      expect(m.body.seq).toBe(m.seq);
      expect(m.msgid).toBe(m.body.action);
      expect(Math.floor(m.pri / 8)).toBe(13);
    }
    expect(messages.some((m) => m.kind === 'checkpoint')).toBe(true);
  }, 60_000);

  test('credentials are sealed and shown once; changes are audited; only the permission reaches sinks, and only in their org', async () => {
    const created = await api<SinkAnswer>('POST', '', {
      name: 'webhook',
      config: { kind: 'webhook', url: 'https://hooks.example.test/bulwark?channel=audit' },
      from: 'now',
    });
    expect(created.status).toBe(201);
    const sinkId = created.body.sink.id;
    const secret = created.body.signingSecret!;
    expect(secret).toMatch(/^bwh_/);
    const listed = await api<{ sinks: unknown[] }>('GET', '');
    expect(JSON.stringify(listed.body)).not.toContain(secret);
    expect(JSON.stringify(listed.body)).toContain('hooks.example.test');
    const row = await database.db
      .selectFrom('audit_sinks')
      .selectAll()
      .where('id', '=', sinkId)
      .executeTakeFirstOrThrow();
    expect(JSON.stringify(row)).not.toContain(secret);
    expect(JSON.stringify(row)).not.toContain(secret.slice(4, 20));
    // The destination is sealed too: a database writer cannot point the stream elsewhere unnoticed.
    expect(row.config_sealed).not.toContain('hooks.example.test');

    const rotated = await api<SinkAnswer>('PATCH', `/${sinkId}`, {
      rotateSigningSecret: true,
      enabled: false,
    });
    expect(rotated.status).toBe(200);
    expect(rotated.body.signingSecret).toMatch(/^bwh_/);
    expect(rotated.body.signingSecret).not.toBe(secret);
    expect((await api<SinkAnswer['sink']>('GET', `/${sinkId}`)).body).not.toHaveProperty('signingSecret');

    const viewer = await world.join('viewer@acme.test', 'viewer');
    for (const [method, route, body] of [
      ['GET', '', undefined],
      ['POST', '', { name: 'mine', config: { kind: 'file' } }],
      ['GET', `/${sinkId}`, undefined],
      ['PATCH', `/${sinkId}`, { enabled: true }],
      ['POST', `/${sinkId}/test`, undefined],
      ['DELETE', `/${sinkId}`, undefined],
    ] as const)
      expect(
        (await viewer.client.json(method, `/api/orgs/acme/audit/sinks${route}`, body)).status,
        `${method} ${route}`,
      ).toBe(403);

    await world.createOrg('Globex');
    for (const [method, route, body] of [
      ['GET', `/${sinkId}`, undefined],
      ['PATCH', `/${sinkId}`, { enabled: true }],
      ['POST', `/${sinkId}/test`, undefined],
      ['DELETE', `/${sinkId}`, undefined],
    ] as const)
      expect(
        (await world.owner.client.json(method, `/api/orgs/globex/audit/sinks${route}`, body)).status,
        `${method} ${route}`,
      ).toBe(404);

    expect((await api('DELETE', `/${sinkId}`)).status).toBe(200);
    const audited = await auditedChanges(sinkId);
    expect(audited.map((event) => event.action)).toEqual([
      'audit.sink_created',
      'audit.sink_updated',
      'audit.sink_deleted',
    ]);
    expect(JSON.stringify(audited)).not.toContain('bwh_');
    expect(JSON.stringify(audited)).not.toContain('channel=audit');
  }, 60_000);
  test('personal data reaches a sink only when it opts in (shown in its view, audited); sinks per org are capped', async () => {
    const created = await api<SinkAnswer>('POST', '', {
      name: 'with personal data',
      config: { kind: 'file' },
      from: 'now',
      personalData: true,
    });
    expect(created.status).toBe(201);
    const sinkId = created.body.sink.id;
    expect(created.body.sink.config).toMatchObject({ personalData: true });
    await makeEvents(1, 'personal');
    const target = await head();
    await until('the sink to catch up', async () =>
      Number((await api<SinkAnswer['sink']>('GET', `/${sinkId}`)).body.delivery.deliveredSeq) >= target
        ? true
        : undefined,
    );
    const event = (await sinkLines(sinkId)).find((line) => line.kind === undefined && line.seq === target);
    expect(event).toMatchObject({ shown: { actorDisplay: OWNER.email } });

    const off = await api<SinkAnswer>('PATCH', `/${sinkId}`, { personalData: false });
    expect(off.status).toBe(200);
    expect(off.body.sink.config).toMatchObject({ personalData: false });
    const changes = await auditedChanges(sinkId);
    expect(changes.map((change) => [change.action, JSON.parse(change.details).personalData])).toEqual([
      ['audit.sink_created', true],
      ['audit.sink_updated', false],
    ]);

    // Up to the cap, then a stable 409; the sinks made here are removed again.
    const made: string[] = [sinkId];
    const count = async () => (await api<{ sinks: unknown[] }>('GET', '')).body.sinks.length;
    for (let n = await count(); n < 10; n++) {
      const more = await api<SinkAnswer>('POST', '', {
        name: `cap ${n}`,
        config: { kind: 'file' },
        from: 'now',
      });
      expect(more.status).toBe(201);
      made.push(more.body.sink.id);
    }
    const over = await api<{ error: { code: string } }>('POST', '', {
      name: 'one too many',
      config: { kind: 'file' },
      from: 'now',
    });
    expect(over.status).toBe(409);
    expect(JSON.stringify(over.body)).toContain('audit_sink_limit');
    for (const id of made) expect((await api('DELETE', `/${id}`)).status).toBe(200);
  }, 60_000);
  // Someone with a shell on the server plants a symlink named like a sink's file (or, where the sink
  // directory is open to them, swaps files in it): the audit stream, with whatever personal data it
  // holds, would be appended to a file of their choosing. The link is refused at open; a directory
  // others may write in, or that another user owns, is refused at start.
  test('a file sink never writes through a planted symlink; an unsafe sink directory is refused', async () => {
    const here = path.join(otherCa.path, 'planted');
    await mkdir(here, { mode: 0o700 });
    const victim = path.join(otherCa.path, 'victim.txt');
    await writeFile(victim, 'untouched\n');
    await symlink(victim, path.join(here, 'snk_planted.ndjson'));
    const transport = createFileTransport({ dir: here, sinkId: 'snk_planted', maxBytes: 1 << 20 });
    const error = await transport
      .send([testLine('org_x', 'snk_planted', Date.now())])
      .catch((e: unknown) => e);
    expect((error as NodeJS.ErrnoException).code).toBe('ELOOP');
    expect(await readFile(victim, 'utf8')).toBe('untouched\n');

    expect(() => checkSinkDir(here)).not.toThrow();
    for (const mode of [0o770, 0o702, 0o777]) {
      await chmod(here, mode);
      expect(() => checkSinkDir(here), mode.toString(8)).toThrow(/writable by its group or by everyone/);
    }
    await chmod(here, 0o700);
    expect(() => checkSinkDir(path.join(here, 'missing'))).toThrow(/cannot be used/);
    // Ownership can only be handed to another user by root (as in CI's container).
    if (process.getuid?.() === 0) {
      await chown(here, 1, 1);
      expect(() => checkSinkDir(here)).toThrow(/not by the server's user/);
    }
  });
  // An org admin points a syslog sink at addresses and ports inside the server's network and reads
  // the test answer or the stored error: Node's raw `connect ECONNREFUSED 10.0.0.5:6514` versus a
  // timeout would map which ports are open. Both say only a fixed reason.
  test('a failed syslog test or delivery says a fixed reason, never the resolved address and port', async () => {
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const created = await api<SinkAnswer>('POST', '', {
      name: 'closed port',
      config: { kind: 'syslog', host: '127.0.0.1', port, caPem: rsyslog.caPem },
    });
    expect(created.status).toBe(201);
    const sinkId = created.body.sink.id;
    const tested = await api<{ ok: boolean; problem?: string }>('POST', `/${sinkId}/test`);
    expect(tested.body).toEqual({
      ok: false,
      problem: 'connection_refused: the receiver refused the connection',
    });
    const failed = await until('the delivery to fail', async () => {
      const { delivery } = (await api<SinkAnswer['sink']>('GET', `/${sinkId}`)).body;
      return typeof delivery.lastError === 'string' ? delivery.lastError : undefined;
    });
    expect(failed).toBe('connection_refused: the receiver refused the connection');
    expect(`${tested.body.problem} ${failed}`).not.toContain(String(port));
    expect((await api('DELETE', `/${sinkId}`)).status).toBe(200);
  }, 60_000);
});
