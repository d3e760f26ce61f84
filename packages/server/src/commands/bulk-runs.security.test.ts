import type { ServerMessage } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { openBeside } from '../test-support/databases.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';
import { resolveLimit } from './bulk-runs.service.js';

/**
 * Bulk runs (CMD-8) over the real API and a simulated fleet: each agent a real WebSocket connection
 * that proves its key, reports its service and answers the commands it is sent.
 *
 * What must hold: never more targets at once than the run allows; past the error threshold nothing
 * more is sent and the rest is marked skipped; one approval covers the whole run and nothing runs
 * before it; the requester cannot approve their own run, nor anyone approve its targets one by one;
 * a member's run reaches only the agents in their scope, and an approver must cover every target;
 * a command slipped into an approved run by someone writing to the database does not run.
 */

type Outcome = 'succeeded' | 'failed' | 'hold';
type Connection = Awaited<ReturnType<typeof handshake>>;

interface RunView {
  id: string;
  status: string;
  stopReason: string;
  risk: string;
  targetCount: number;
  counts: Record<string, number>;
  maxConcurrency: { asked: string; resolved: number };
  maxErrors: { asked: string; resolved: number };
  requestedBy: { id: string; email: string };
  approvals: Array<{ by: { email: string }; decision: string }>;
  targets: Array<{ commandId: string; agent: { id: string; name: string }; status: string; message: string }>;
  error: { code: string; fields?: Array<{ path: string; message: string }> };
}

const action = (name: string, risk: string) => ({
  name,
  description: `${risk} action`,
  params: {
    type: 'object',
    properties: { unit: { type: 'string', enum: ['web', 'worker'] } },
    required: ['unit'],
    additionalProperties: false,
  },
  risk,
  timeoutSeconds: 60,
  secrets: [],
});

/**
 * The fleet's side: agents that answer each command as `outcomeOf` says, or hold it until the test
 * ends it. It counts what is in flight at the agents, so that a run's concurrency is checked where it
 * matters: at the hosts.
 */
function fleet(outcomeOf: (agentName: string) => Outcome) {
  const names = new Map<string, string>();
  const held = new Map<string, Connection>();
  const delivered: Array<{ agent: string; commandId: string }> = [];
  const inFlight = new Set<string>();
  let mostAtOnce = 0;
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const waiter of waiters.splice(0)) waiter();
  };
  const send = (connection: Connection, message: Record<string, unknown>) =>
    connection.socket.send(JSON.stringify({ v: 1, ...message }));
  const finish = (
    connection: Connection,
    commandId: string,
    outcome: 'succeeded' | 'failed' | 'cancelled',
  ) => {
    inFlight.delete(commandId);
    send(connection, { type: 'command_started', commandId });
    send(connection, {
      type: 'command_finished',
      commandId,
      outcome,
      exitCode: outcome === 'succeeded' ? 0 : 1,
      message: outcome === 'failed' ? 'exit status 1' : '',
    });
  };

  function serve(name: string, connection: Connection) {
    const loop = async () => {
      for (;;) {
        const message: ServerMessage = await connection.next();
        if (message.type === 'command') {
          const { commandId } = message.envelope;
          names.set(commandId, name);
          delivered.push({ agent: name, commandId });
          inFlight.add(commandId);
          mostAtOnce = Math.max(mostAtOnce, inFlight.size);
          const outcome = outcomeOf(name);
          if (outcome === 'hold') held.set(commandId, connection);
          else finish(connection, commandId, outcome);
          wake();
        } else if (message.type === 'cancel') {
          const connectionOf = held.get(message.commandId);
          if (connectionOf) {
            held.delete(message.commandId);
            finish(connectionOf, message.commandId, 'cancelled');
          }
        }
      }
    };
    void loop();
  }

  return {
    serve,
    delivered,
    held,
    get mostAtOnce() {
      return mostAtOnce;
    },
    /** Resolves once `count` commands have been delivered in all. */
    async deliveries(count: number) {
      while (delivered.length < count) await new Promise<void>((resolve) => waiters.push(resolve));
    },
    /** Ends a held command as the agent would. */
    end(commandId: string, outcome: 'succeeded' | 'failed') {
      const connection = held.get(commandId);
      if (!connection) throw new Error(`${commandId} is not held`);
      held.delete(commandId);
      finish(connection, commandId, outcome);
    },
  };
}

describe('bulk-run limits as Systems Manager reads them', () => {
  it('resolves counts and shares against the number of targets', () => {
    expect(resolveLimit('10%', 50, 'maxConcurrency')).toBe(5);
    expect(resolveLimit('1%', 50, 'maxConcurrency')).toBe(1);
    expect(resolveLimit('3', 50, 'maxConcurrency')).toBe(3);
    expect(resolveLimit('10%', 5, 'maxErrors')).toBe(0);
    expect(resolveLimit('50%', 5, 'maxErrors')).toBe(2);
    expect(resolveLimit('0', 5, 'maxErrors')).toBe(0);
    expect(resolveLimit('0', 5, 'maxConcurrency')).toMatchObject({ problem: expect.any(String) });
    expect(resolveLimit('150%', 5, 'maxErrors')).toMatchObject({ problem: expect.any(String) });
    expect(resolveLimit('ten', 5, 'maxErrors')).toMatchObject({ problem: expect.any(String) });
    expect(resolveLimit('-1', 5, 'maxErrors')).toMatchObject({ problem: expect.any(String) });
  });
});

describe.each(BACKENDS)('bulk runs on %s', (backend: Backend) => {
  let world: OrgWorld;
  let approver: Member;
  let scoped: Member;
  const agents = new Map<string, string>();
  // prod: 50 agents and staging: 3, which hold each command until the test ends it; edge: 6 that fail.
  const agentsOf = fleet((name) => (name.startsWith('edge') ? 'failed' : 'hold'));

  async function enrol(prefix: string, count: number, labels: Record<string, string>) {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      { labels, uses: count },
    );
    for (let n = 0; n < count; n++) {
      const name = `${prefix}-${String(n).padStart(2, '0')}`;
      const registered = await registerAgent(world.server.url, body.token, name);
      const connection = await handshake(world.server.url, registered.agentId, registered.keys);
      expect(connection.answer.type).toBe('welcome');
      expect(
        (await reportApp(connection, [action('restart-low', 'low'), action('restart-high', 'high')])).type,
      ).toBe('report_result');
      agents.set(name, registered.agentId);
      agentsOf.serve(name, connection);
    }
  }

  const start = (client: Member['client'], body: Record<string, unknown>) =>
    client.json<RunView>('POST', '/api/orgs/acme/bulk-runs', {
      service: 'app',
      action: 'restart-low',
      params: { unit: 'web' },
      ...body,
    });
  const get = async (id: string, client = world.owner.client) =>
    (await client.json<RunView>('GET', `/api/orgs/acme/bulk-runs/${id}`)).body;
  /** Waits for the run to end: its last steps follow the agents' last reports. */
  const ended = (id: string) =>
    vi.waitFor(
      async () => {
        const run = await get(id);
        expect(run.status).not.toMatch(/^(running|awaiting_approval)$/);
        return run;
      },
      { timeout: 20_000, interval: 50 },
    );

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    approver = await world.join('approver@example.test', 'operator');
    // A member who holds nothing on agents but what a binding gives them on staging.
    const minimal = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'minimal',
      permissions: ['teams:read'],
    });
    scoped = await world.join('scoped@example.test', minimal.body.id);
    const binding = await world.owner.client.json('POST', '/api/orgs/acme/role-bindings', {
      role: 'operator',
      subject: { type: 'user', id: scoped.id },
      selector: 'env=staging',
    });
    expect(binding.status).toBe(201);
    await enrol('prod', 50, { env: 'prod' });
    await enrol('staging', 3, { env: 'staging' });
    await enrol('edge', 6, { env: 'edge' });
  }, 180_000);
  afterAll(() => world?.close());

  it('runs an action on 50 agents, never more at once than maxConcurrency, each exactly once', async () => {
    const before = agentsOf.delivered.length;
    const created = await start(world.owner.client, {
      selector: 'env=prod',
      maxConcurrency: '10%',
      maxErrors: '0',
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      status: 'running',
      targetCount: 50,
      maxConcurrency: { asked: '10%', resolved: 5 },
      maxErrors: { asked: '0', resolved: 0 },
      requestedBy: { email: 'owner@acme.test' },
    });
    // The hosts end their commands one at a time, oldest first: each end lets exactly one more out.
    for (let done = 0; done < 50; done++) {
      await agentsOf.deliveries(before + done + 1);
      agentsOf.end(agentsOf.delivered[before + done]!.commandId, 'succeeded');
    }
    const run = await ended(created.body.id);
    expect(run.status).toBe('succeeded');
    expect(run.counts).toEqual({ succeeded: 50 });
    const prod = agentsOf.delivered.filter((d) => d.agent.startsWith('prod'));
    expect(new Set(prod.map((d) => d.agent)).size).toBe(50);
    expect(prod).toHaveLength(50);
    expect(agentsOf.mostAtOnce).toBeLessThanOrEqual(5);
  });

  it('releases the next target only when one ends', async () => {
    const before = agentsOf.delivered.length;
    const created = await start(world.owner.client, { selector: 'env=staging', maxConcurrency: 2 });
    expect(created.status).toBe(201);
    await agentsOf.deliveries(before + 2);
    // Two are out; the third waits for its turn, whatever the agents do meanwhile.
    const during = await get(created.body.id);
    expect(during.counts.held).toBe(1);
    expect((during.counts.dispatched ?? 0) + (during.counts.running ?? 0)).toBe(2);
    const [first, second] = agentsOf.delivered.slice(before);
    agentsOf.end(first!.commandId, 'succeeded');
    await agentsOf.deliveries(before + 3);
    agentsOf.end(second!.commandId, 'succeeded');
    agentsOf.end(agentsOf.delivered[before + 2]!.commandId, 'succeeded');
    expect((await ended(created.body.id)).status).toBe('succeeded');
  });

  it('stops at the error threshold and marks the targets it never sent as skipped', async () => {
    // One edge agent is disabled: it is a target that cannot run, skipped from the start, saying why.
    const disabled = agents.get('edge-05')!;
    expect((await world.owner.client.json('POST', `/api/orgs/acme/agents/${disabled}/disable`)).status).toBe(
      200,
    );
    const before = agentsOf.delivered.length;
    const created = await start(world.owner.client, {
      selector: 'env=edge',
      maxConcurrency: 1,
      maxErrors: 1,
    });
    expect(created.status).toBe(201);
    expect(created.body.targetCount).toBe(6);
    const run = await ended(created.body.id);
    expect(run).toMatchObject({ status: 'failed', stopReason: 'error_threshold' });
    // Two failures are one more than allowed: nothing after the second was sent.
    expect(agentsOf.delivered.length - before).toBe(2);
    expect(run.counts).toEqual({ failed: 2, skipped: 4 });
    const preview = await world.owner.client.json<{
      targets: Array<{ agent: { id: string }; reason: string }>;
    }>('GET', '/api/orgs/acme/bulk-runs/preview?selector=env%3Dedge&service=app&action=restart-low');
    expect(preview.body.targets.find((t) => t.agent.id === disabled)?.reason).toMatch(/disabled/);
    const skipped = run.targets.filter((t) => t.status === 'skipped');
    expect(skipped.find((t) => t.agent.id === disabled)?.message).toMatch(/agent is disabled/);
    expect(skipped.filter((t) => /stopped after 2 failed/.test(t.message))).toHaveLength(3);
    const runEvents = await world.owner.client.json<{ events: Array<{ action: string }> }>(
      'GET',
      `/api/orgs/acme/audit/events?target=${created.body.id}`,
    );
    expect(runEvents.body.events.map((e) => e.action)).toContain('bulk_run.stopped');
    const skips = await world.owner.client.json<{ events: Array<{ target: { id: string } }> }>(
      'GET',
      '/api/orgs/acme/audit/events?action=command.skipped',
    );
    const skippedIds = skipped.map((t) => t.commandId);
    expect(skips.body.events.filter((e) => skippedIds.includes(e.target.id))).toHaveLength(4);
  });

  it('holds every target until the run is approved once, by someone else, as a whole', async () => {
    const before = agentsOf.delivered.length;
    const unconfirmed = await start(world.owner.client, { selector: 'env=staging', action: 'restart-high' });
    expect(unconfirmed.status).toBe(422);
    const created = await start(world.owner.client, {
      selector: 'env=staging',
      action: 'restart-high',
      confirm: true,
      maxConcurrency: '100%',
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      status: 'awaiting_approval',
      risk: 'high',
      counts: { awaiting_approval: 3 },
    });
    const id = created.body.id;
    // The requester approving their own run: refused.
    const own = await world.owner.client.json<RunView>('POST', `/api/orgs/acme/bulk-runs/${id}/approve`, {});
    expect(own.status).toBe(403);
    expect(own.body.error.code).toBe('own_command');
    // Approving one target alone, to run it outside the run's limits: refused.
    const target = created.body.targets[0]!.commandId;
    const single = await approver.client.json<RunView>(
      'POST',
      `/api/orgs/acme/commands/${target}/approve`,
      {},
    );
    expect(single.status).toBe(409);
    expect(single.body.error.code).toBe('bulk_run_target');
    // The inbox shows the run, not its three targets one by one.
    const inbox = await approver.client.json<{ commands: Array<{ id: string }> }>(
      'GET',
      '/api/orgs/acme/approvals',
    );
    expect(inbox.body.commands.map((c) => c.id)).not.toContain(target);
    const inboxOf = async (member: Member) =>
      (
        await member.client.json<{ runs: Array<{ id: string }> }>('GET', '/api/orgs/acme/approvals/bulk-runs')
      ).body.runs.map((r) => r.id);
    expect(await inboxOf(approver)).toContain(id);
    // Not in the requester's own inbox.
    expect(await inboxOf(world.owner)).not.toContain(id);
    expect(agentsOf.delivered.length).toBe(before);

    const approved = await approver.client.json<RunView>('POST', `/api/orgs/acme/bulk-runs/${id}/approve`, {
      comment: 'go',
    });
    expect(approved.status).toBe(200);
    expect(approved.body.approvals).toEqual([
      expect.objectContaining({
        by: expect.objectContaining({ email: 'approver@example.test' }),
        decision: 'approved',
      }),
    ]);
    // Decided: it leaves the approver's inbox.
    expect(await inboxOf(approver)).not.toContain(id);
    await agentsOf.deliveries(before + 3);
    for (const delivery of agentsOf.delivered.slice(before)) agentsOf.end(delivery.commandId, 'succeeded');
    expect((await ended(id)).status).toBe('succeeded');
  });

  it('refuses a rejection without a reason, and a rejection ends every target', async () => {
    const before = agentsOf.delivered.length;
    const created = await start(world.owner.client, {
      selector: 'env=staging',
      action: 'restart-high',
      confirm: true,
    });
    const id = created.body.id;
    const bare = await approver.client.json<RunView>('POST', `/api/orgs/acme/bulk-runs/${id}/reject`, {
      comment: '  ',
    });
    expect(bare.status).toBe(422);
    expect(bare.body.error.fields?.[0]?.path).toBe('body.comment');
    const rejected = await approver.client.json<RunView>('POST', `/api/orgs/acme/bulk-runs/${id}/reject`, {
      comment: 'not during the freeze',
    });
    expect(rejected.status).toBe(200);
    expect(rejected.body).toMatchObject({ status: 'rejected', counts: { rejected: 3 } });
    expect(agentsOf.delivered.length).toBe(before);
  });

  it("reaches only the agents in the requester's scope, and an approval must cover every target", async () => {
    // The scoped member selects every agent with an env label: the run holds their three alone.
    const created = await start(scoped.client, { selector: 'env', action: 'restart-high', confirm: true });
    expect(created.status).toBe(201);
    expect(created.body.targetCount).toBe(3);
    expect(created.body.targets.every((t) => t.agent.name.startsWith('staging'))).toBe(true);
    // The preview shows them the same three, and nothing of the agents outside their scope.
    const preview = await scoped.client.json<{
      total: number;
      risk: string;
      targets: Array<{ agent: { name: string } }>;
    }>('GET', '/api/orgs/acme/bulk-runs/preview?selector=env&service=app&action=restart-high');
    expect(preview.body).toMatchObject({ total: 3, risk: 'high' });
    expect(preview.body.targets.map((t) => t.agent.name).sort()).toEqual([
      'staging-00',
      'staging-01',
      'staging-02',
    ]);
    // Nothing outside their scope: a selector matching only prod finds no target, and says no more.
    const prodOnly = await start(scoped.client, { selector: 'env=prod' });
    expect(prodOnly.status).toBe(422);
    expect(prodOnly.body.error.code).toBe('no_targets');
    expect(JSON.stringify(prodOnly.body)).not.toContain('prod-');

    // A run of the owner's across prod and staging: the scoped member cannot approve it, nor read
    // what lies outside their scope.
    const wide = await start(world.owner.client, {
      selector: 'env in (prod, staging)',
      action: 'restart-high',
      confirm: true,
    });
    expect(wide.status).toBe(201);
    const seen = await get(wide.body.id, scoped.client);
    expect(seen.targets.every((t) => t.agent.name.startsWith('staging'))).toBe(true);
    // Nor count it: their list says three targets, not fifty-three.
    const listed = await scoped.client.json<{ runs: RunView[] }>('GET', '/api/orgs/acme/bulk-runs');
    const wideListed = listed.body.runs.find((r) => r.id === wide.body.id);
    expect(wideListed).toMatchObject({ targetCount: 3, counts: { awaiting_approval: 3 } });
    expect(seen.targetCount).toBe(3);
    // Nor stop it: cancelling stops every target, and most are not theirs to cancel.
    const stopped = await scoped.client.json<RunView>(
      'POST',
      `/api/orgs/acme/bulk-runs/${wide.body.id}/cancel`,
    );
    expect(stopped.status).toBe(403);
    // And the refusal left the run as it was: not stopped, every target still waiting.
    expect(await get(wide.body.id)).toMatchObject({ status: 'awaiting_approval', stopReason: '' });
    // Their inbox does not offer it: a decision they could give on part of it only.
    const scopedInbox = await scoped.client.json<{ runs: Array<{ id: string }> }>(
      'GET',
      '/api/orgs/acme/approvals/bulk-runs',
    );
    expect(scopedInbox.body.runs.map((r) => r.id)).not.toContain(wide.body.id);
    const approval = await scoped.client.json<RunView>(
      'POST',
      `/api/orgs/acme/bulk-runs/${wide.body.id}/approve`,
      {},
    );
    expect(approval.status).toBe(403);
    expect((await get(wide.body.id)).status).toBe('awaiting_approval');
    for (const id of [created.body.id, wide.body.id])
      expect((await world.owner.client.json('POST', `/api/orgs/acme/bulk-runs/${id}/cancel`)).status).toBe(
        200,
      );
    expect((await get(wide.body.id)).status).toBe('cancelled');
  });

  it('does not run a command slipped into an approved run by someone writing to the database', async () => {
    // A high-risk command of the owner's, alone, awaiting approval; and a run the approver will approve.
    const lone = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/commands', {
      agent: agents.get('prod-00'),
      service: 'app',
      action: 'restart-high',
      params: { unit: 'worker' },
      confirm: true,
    });
    expect(lone.status).toBe(201);
    const run = await start(world.owner.client, {
      selector: 'env=staging',
      action: 'restart-high',
      confirm: true,
    });
    // The attacker attaches the lone command to the run, hoping the run's approval carries it.
    const database = openBeside(world.server.config.database);
    try {
      await database.db
        .updateTable('commands')
        .set({ bulk_run_id: run.body.id })
        .where('id', '=', lone.body.id)
        .execute();
    } finally {
      await database.close();
    }
    const approval = await approver.client.json<RunView>(
      'POST',
      `/api/orgs/acme/bulk-runs/${run.body.id}/approve`,
      {},
    );
    expect(approval.status).toBe(409);
    expect(approval.body.error.code).toBe('command_integrity');
    const slipped = await world.owner.client.json<{ status: string; message: string }>(
      'GET',
      `/api/orgs/acme/commands/${lone.body.id}`,
    );
    expect(slipped.body.status).toBe('failed');
    expect(slipped.body.message).toMatch(/bulkRunId/);
    expect(agentsOf.delivered.some((d) => d.commandId === lone.body.id)).toBe(false);
    expect(
      (await world.owner.client.json('POST', `/api/orgs/acme/bulk-runs/${run.body.id}/cancel`)).status,
    ).toBe(200);
  });

  it('never releases a target whose run and status were rewritten in the database without its approval', async () => {
    const before = agentsOf.delivered.length;
    // Every failure tolerated, so that each target meets the check rather than the threshold.
    const created = await start(world.owner.client, {
      selector: 'env=staging',
      action: 'restart-high',
      confirm: true,
      maxErrors: '100%',
    });
    expect(created.body.status).toBe('awaiting_approval');
    // The attacker skips the approval: the run says it is running, its targets that they wait their turn.
    const database = openBeside(world.server.config.database);
    try {
      await database.db
        .updateTable('bulk_runs')
        .set({ status: 'running' })
        .where('id', '=', created.body.id)
        .execute();
      // ... and, to pass dispatch's own check, that they are low-risk and need no approval.
      await database.db
        .updateTable('commands')
        .set({ status: 'held', risk: 'low', required_approvals: 0 })
        .where('bulk_run_id', '=', created.body.id)
        .execute();
    } finally {
      await database.close();
    }
    // The scheduler's sweep finds the run; each target fails its check, and none is sent.
    const run = await ended(created.body.id);
    expect(run.counts).toEqual({ failed: 3 });
    expect(run.targets.every((t) => /command_integrity.*risk, requiredApprovals/.test(t.message))).toBe(true);
    expect(agentsOf.delivered.length).toBe(before);
  });

  it('skips the targets its requester may no longer run commands on', async () => {
    const before = agentsOf.delivered.length;
    const created = await start(scoped.client, { selector: 'env=staging', maxConcurrency: 1 });
    expect(created.status).toBe(201);
    await agentsOf.deliveries(before + 1);
    // The member loses the binding that let them run commands on staging, mid-run.
    const bindings = await world.owner.client.json<{
      bindings: Array<{ id: string; subject: { id: string } }>;
    }>('GET', '/api/orgs/acme/role-bindings');
    const theirs = bindings.body.bindings.find((b) => b.subject.id === scoped.id)!;
    expect(
      (await world.owner.client.json('DELETE', `/api/orgs/acme/role-bindings/${theirs.id}`)).status,
    ).toBe(200);
    agentsOf.end(agentsOf.delivered[before]!.commandId, 'succeeded');
    const run = await ended(created.body.id);
    expect(run.counts).toEqual({ succeeded: 1, skipped: 2 });
    expect(run.targets.filter((t) => /requester may no longer/.test(t.message))).toHaveLength(2);
    expect(agentsOf.delivered.length - before).toBe(1);
  });

  it('cancels a running run: nothing more is released, and what runs is told to stop', async () => {
    const before = agentsOf.delivered.length;
    const created = await start(world.owner.client, { selector: 'env=staging', maxConcurrency: 1 });
    await agentsOf.deliveries(before + 1);
    const cancelled = await world.owner.client.json<RunView>(
      'POST',
      `/api/orgs/acme/bulk-runs/${created.body.id}/cancel`,
    );
    expect(cancelled.status).toBe(200);
    const run = await ended(created.body.id);
    expect(run.status).toBe('cancelled');
    expect(run.counts).toEqual({ cancelled: 3 });
    expect(agentsOf.delivered.length - before).toBe(1);
  });

  it('answers junk with a precise 4xx naming the field', async () => {
    const cases: Array<[Record<string, unknown>, number, string]> = [
      [{ selector: 'env=', maxConcurrency: 1 }, 422, 'body.selector'],
      [{ selector: 'env=prod', maxConcurrency: 'ten' }, 422, 'body.maxConcurrency'],
      [{ selector: 'env=prod', maxConcurrency: 0 }, 422, 'body.maxConcurrency'],
      [{ selector: 'env=prod', maxErrors: '150%' }, 422, 'body.maxErrors'],
      [{ selector: 'env=prod', params: { unit: 'db' } }, 422, 'body.params.unit'],
      [{ selector: 'env=prod', service: '../etc' }, 422, 'body.service'],
    ];
    for (const [body, status, path] of cases) {
      const answer = await start(world.owner.client, body);
      expect(answer.status, JSON.stringify(body)).toBe(status);
      expect(
        answer.body.error.fields?.map((f) => f.path),
        JSON.stringify(body),
      ).toContain(path);
    }
    expect((await start(world.owner.client, { selector: 'env=nowhere' })).body.error.code).toBe('no_targets');
    expect((await world.owner.client.json('GET', '/api/orgs/acme/bulk-runs/blk_nope')).status).toBe(422);
  });
});
