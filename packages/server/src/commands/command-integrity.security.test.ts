import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openPostgres, openSqlite } from '../db/database.js';
import { type AgentProcesses, agentProcesses, type RunningAgent } from '../test-support/agent-process.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';
import { tempDir } from '../test-support/temp.js';

/**
 * CMD-7 against someone who can write to the database but cannot read the master key: a restored
 * backup, an open SQL console, a compromised replica. Between a command's creation and its delivery
 * they rewrite what it runs (action, params, service, agent, timeout, secrets, deadline), who asked for
 * it, which organization it belongs to, how many approvals it needs, or write in an approval nobody
 * gave. A real agent process is connected when the server dispatches, its actions leave a marker file
 * when they run: no tampered command may leave one, and each ends `failed` with `command_integrity`,
 * a critical audit event naming what differed, and a count on /metrics. An untouched command beside
 * them runs, so the check is not simply refusing everything.
 */

type View = { id: string; status: string; message: string };
const METRICS_TOKEN = 'integrity-metrics-token-0123456789abcdef';

describe.each(BACKENDS)('commands sealed by the server on %s', (backend: Backend) => {
  let world: OrgWorld;
  let approver: Member;
  let agents: AgentProcesses;
  let work: { path: string; remove(): Promise<void> };
  let attacker: Database;
  let agentId = '';
  let spareAgentId = '';
  let otherOrgId = '';
  let agent: RunningAgent;
  const marks = () => path.join(work.path, 'marks');

  beforeAll(async () => {
    // The real agent checks envelope deadlines on real time: the server's clock starts now.
    world = await startOrgWorld({ BULWARK_METRICS_TOKEN: METRICS_TOKEN }, backend, Date.now());
    approver = await world.join('approver@acme.test', 'operator');
    work = await tempDir('integrity');
    mkdirSync(marks());
    agents = agentProcesses(work.path);
    const database = world.server.config.database;
    attacker =
      database.kind === 'sqlite'
        ? openSqlite({ file: database.file, busyTimeoutMs: 10_000 })
        : openPostgres({ url: database.url, poolMax: 2 });
    // A second agent that never runs: commands made for it are moved onto the real one.
    // Each agent connects once to report its services, then goes offline.
    const spareDir = path.join(work.path, 'spare');
    mkdirSync(spareDir);
    const spare = agentProcesses(spareDir);
    await spare.register(world.server.url, world.owner.client, 'spare', 'acme');
    spareAgentId = await reportedOnce(spare, spareDir);
    await agents.register(world.server.url, world.owner.client, 'app-1', 'acme');
    agentId = await reportedOnce(agents, work.path);
    const created = await world.cli('admin', 'create-org', '--name', 'Other', '--owner', 'owner@acme.test');
    expect(created.code, created.stderr).toBe(0);
    otherOrgId = /\((org_[^)]+)\)/.exec(created.stdout)![1]!;
  }, 120_000);

  afterAll(async () => {
    await agents?.killAll();
    await attacker?.db.destroy();
    await world?.close();
    await work?.remove();
  });

  async function reportedOnce(processes: AgentProcesses, dir: string): Promise<string> {
    const running = processes.run(agentConfig(dir));
    const id = (await running.next('online')).agentId as string;
    await running.next('report accepted');
    expect(await running.stop()).toBe(0);
    return id;
  }

  /** The agent's config: two services declaring the same actions, each writing `marks/<name>` when run. */
  function agentConfig(dir: string): string {
    const script = `require('node:fs').writeFileSync(${JSON.stringify(marks())} + '/' + process.argv[1], 'ran')`;
    const action = (name: string, risk: string) => ({
      name,
      description: `${risk} marker`,
      risk,
      timeoutSeconds: 30,
      params: {
        type: 'object',
        properties: { name: { type: 'string', pattern: '^[a-z0-9-]+$', maxLength: 40 } },
        required: ['name'],
        additionalProperties: false,
      },
      exec: { argv: [process.execPath, '-e', script, '{{name}}'] },
    });
    const actions = [
      action('mark', 'low'),
      action('other', 'low'),
      action('guarded', 'high'),
      action('vital', 'critical'),
    ];
    const file = path.join(dir, 'agent', 'agent.yaml');
    writeFileSync(
      file,
      JSON.stringify({
        stateFile: 'state.json',
        services: ['app', 'app2'].map((name) => ({ name, kind: 'shell', health: { status: 'up' }, actions })),
      }),
    );
    return file;
  }

  const create = async (action: string, name: string, agent = agentId) => {
    const created = await world.owner.client.json<View>('POST', '/api/orgs/acme/commands', {
      agent,
      service: 'app',
      action,
      params: { name },
      reason: 'integrity test',
      confirm: true,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body;
  };
  const tamper = (id: string, changes: Record<string, unknown>) =>
    attacker.db.updateTable('commands').set(changes).where('id', '=', id).execute();
  /** Follows the command's live stream until it ends, then reads it. */
  async function ended(id: string): Promise<View> {
    await (await world.owner.client.openEvents('acme', id)).text();
    return (await world.owner.client.json<View>('GET', `/api/orgs/acme/commands/${id}`)).body;
  }
  const integrityEvents = async () =>
    (
      await world.owner.client.json<{
        events: Array<{ target: { id: string }; details: { mismatched: string[]; severity: string } }>;
      }>('GET', '/api/orgs/acme/audit/events?action=command.integrity_failed&limit=100')
    ).body.events;

  it('delivers nothing that was changed in the database after the server accepted it', async () => {
    // Made while the agent is offline; they wait in the queue (or for approval) for its connection.
    const control = await create('mark', 'control');
    const cases: Array<{ name: string; field: string; id: string }> = [];
    const add = async (
      name: string,
      field: string,
      action: string,
      change: (id: string) => Promise<unknown>,
      agent?: string,
    ) => {
      const command = await create(action, name, agent);
      await change(command.id);
      cases.push({ name, field, id: command.id });
    };
    await add('action', 'action', 'mark', (id) => tamper(id, { action: 'other' }));
    await add('params', 'params', 'mark', (id) => tamper(id, { params: JSON.stringify({ name: 'evil' }) }));
    await add('service', 'service', 'mark', (id) => tamper(id, { service: 'app2' }));
    await add('agent', 'agentId', 'mark', (id) => tamper(id, { agent_id: agentId }), spareAgentId);
    await add('org', 'orgId', 'mark', (id) => tamper(id, { org_id: otherOrgId }));
    await add('requester', 'requestedBy', 'mark', (id) => tamper(id, { requested_by: approver.id }));
    await add('timeout', 'timeoutSeconds', 'mark', (id) => tamper(id, { timeout_seconds: 86_400 }));
    await add('deadline', 'expiresAt', 'mark', (id) => tamper(id, { expires_at: Date.UTC(2030, 0, 1) }));
    await add('secrets', 'secrets', 'mark', (id) =>
      tamper(id, { secrets: JSON.stringify([{ name: 'DB_PASSWORD', secretId: 'sec_x', version: 1 }]) }),
    );
    // Approvals skipped: a high-risk command put straight in the queue, with and without a lowered requirement.
    await add('skip-approval', 'approvals', 'guarded', (id) => tamper(id, { status: 'queued' }));
    await add('fewer-approvals', 'requiredApprovals', 'guarded', (id) =>
      tamper(id, { status: 'queued', required_approvals: 0 }),
    );
    await add('lower-risk', 'risk', 'vital', (id) =>
      tamper(id, { status: 'queued', risk: 'low', required_approvals: 0 }),
    );
    // An approval nobody gave, written in by hand.
    await add('fake-approval', `approval:${approver.id}`, 'guarded', async (id) => {
      const { org_id } = await attacker.db
        .selectFrom('commands')
        .select('org_id')
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      await attacker.db
        .insertInto('command_approvals')
        .values({
          command_id: id,
          org_id,
          user_id: approver.id,
          decision: 'approved',
          comment: 'ok',
          created_at: Date.now(),
          seal: '',
        })
        .execute();
      await tamper(id, { status: 'queued' });
    });

    // Ended commands put back in the queue: one cancelled before it ran, one its approver rejected.
    await add('resurrected-cancel', 'ended', 'mark', async (id) => {
      const cancelled = await world.owner.client.json('POST', `/api/orgs/acme/commands/${id}/cancel`);
      expect(cancelled.status).toBe(200);
      await tamper(id, { status: 'queued', finished_at: null, message: '' });
    });
    await add('resurrected-reject', 'rejected', 'guarded', async (id) => {
      const rejected = await approver.client.json('POST', `/api/orgs/acme/commands/${id}/reject`, {
        comment: 'no',
      });
      expect(rejected.status).toBe(200);
      await tamper(id, { status: 'queued', finished_at: null, message: '' });
    });

    // The real agent connects: everything queued for it is dispatched now.
    agent = agents.run(agentConfig(work.path));
    await agent.next('online');

    const controlView = await ended(control.id);
    expect(controlView.status, controlView.message).toBe('succeeded');
    expect(existsSync(path.join(marks(), 'control'))).toBe(true);
    // The agent's commands are dispatched one after another in the order they were made: once the
    // last has ended, so have the others. Read from the database, as one moved to another
    // organization is no longer visible in this one.
    await ended(cases.at(-1)!.id);
    for (const tampered of cases) {
      const row = await attacker.db
        .selectFrom('commands')
        .select(['status', 'message'])
        .where('id', '=', tampered.id)
        .executeTakeFirstOrThrow();
      expect(row.status, tampered.name).toBe('failed');
      expect(row.message, tampered.name).toContain('command_integrity');
      expect(existsSync(path.join(marks(), tampered.name)), tampered.name).toBe(false);
      const event = await attacker.db
        .selectFrom('audit_events')
        .select('details')
        .where('action', '=', 'command.integrity_failed')
        .where('target_id', '=', tampered.id)
        .executeTakeFirstOrThrow();
      const details = JSON.parse(event.details) as { severity: string; mismatched: string[] };
      expect(details.severity, tampered.name).toBe('critical');
      expect(details.mismatched, tampered.name).toContain(tampered.field);
    }
    // Nothing ran but the control, under any name (a tampered params could have picked another).
    expect((await import('node:fs')).readdirSync(marks())).toEqual(['control']);
    const scrape = await fetch(`${world.server.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    const metrics = await scrape.text();
    expect(metrics).toMatch(new RegExp(`bulwark_command_integrity_failures_total ${cases.length}\\b`));
    // The log alone proves what was asked: command.created carries the SHA-256 of the canonical params.
    const created = await world.owner.client.json<{
      events: Array<{ target: { id: string }; details: { paramsHash: string } }>;
    }>('GET', `/api/orgs/acme/audit/events?action=command.created&target=${control.id}`);
    const { createHash } = await import('node:crypto');
    expect(created.body.events[0]!.details.paramsHash).toBe(
      createHash('sha256').update('{"name":"control"}').digest('hex'),
    );
  }, 120_000);

  it('refuses the approval of a command changed while it awaited approval, and ends it', async () => {
    const command = await create('guarded', 'approved-after-edit');
    await tamper(command.id, { params: JSON.stringify({ name: 'evil-too' }) });
    const approved = await approver.client.json<{ error: { code: string } }>(
      'POST',
      `/api/orgs/acme/commands/${command.id}/approve`,
      { comment: 'looks fine' },
    );
    expect(approved.status).toBe(409);
    expect(approved.body.error.code).toBe('command_integrity');
    expect(await ended(command.id)).toMatchObject({ status: 'failed' });
    expect(existsSync(path.join(marks(), 'evil-too'))).toBe(false);
    expect(existsSync(path.join(marks(), 'approved-after-edit'))).toBe(false);
    const event = (await integrityEvents()).find((e) => e.target.id === command.id);
    expect(event?.details.mismatched).toEqual(['params']);
  }, 60_000);

  it('refuses an approval given on a view the database showed differently, then put back', async () => {
    // The attacker makes the waiting command look harmless while the approver reads it, and puts the
    // real params back before the approval arrives: the seal holds again, but the approver approved
    // something else. The approval carries the paramsHash it was shown, and is refused.
    const command = await create('guarded', 'real-params');
    await tamper(command.id, { params: JSON.stringify({ name: 'harmless' }) });
    const shown = await approver.client.json<{ paramsHash: string }>(
      'GET',
      `/api/orgs/acme/commands/${command.id}`,
    );
    await tamper(command.id, { params: JSON.stringify({ name: 'real-params' }) });
    const approved = await approver.client.json<{ error: { code: string } }>(
      'POST',
      `/api/orgs/acme/commands/${command.id}/approve`,
      { comment: 'harmless, go', paramsHash: shown.body.paramsHash },
    );
    expect(approved.status).toBe(409);
    expect(approved.body.error.code).toBe('command_changed');
    expect(existsSync(path.join(marks(), 'real-params'))).toBe(false);

    // Shown as it is, the same approval goes through, and the command runs: the seal made at
    // approval holds.
    const current = await approver.client.json<{ paramsHash: string }>(
      'GET',
      `/api/orgs/acme/commands/${command.id}`,
    );
    const again = await approver.client.json('POST', `/api/orgs/acme/commands/${command.id}/approve`, {
      comment: 'ok',
      paramsHash: current.body.paramsHash,
    });
    expect(again.status).toBe(200);
    expect(await ended(command.id)).toMatchObject({ status: 'succeeded' });
    expect(existsSync(path.join(marks(), 'real-params'))).toBe(true);
  }, 60_000);

  it("refuses, on the agent, a critical action whose risk was lowered in the server's database", async () => {
    // The risk comes from what the agent reported, stored in the services table: lowered there before
    // anyone asks, the server accepts, seals and signs the action as low risk with no approval. The
    // agent knows its own declaration (critical: two approvals) and refuses the signed command.
    const services = await attacker.db
      .selectFrom('services')
      .select(['id', 'actions'])
      .where('agent_id', '=', agentId)
      .execute();
    for (const service of services) {
      const actions = (JSON.parse(service.actions) as Array<{ name: string; risk: string }>).map((a) =>
        a.name === 'vital' ? { ...a, risk: 'low' } : a,
      );
      await attacker.db
        .updateTable('services')
        .set({ actions: JSON.stringify(actions) })
        .where('id', '=', service.id)
        .execute();
    }
    const command = await create('vital', 'downgraded');
    const view = await ended(command.id);
    expect(view.status).toBe('failed');
    expect(view.message).toContain('insufficient_approvals');
    expect(existsSync(path.join(marks(), 'downgraded'))).toBe(false);
  }, 60_000);
});
