import {
  CommandEnvelope,
  commandStatement,
  ed25519PublicKey,
  type ServerMessage,
  verifyStatement,
} from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type AgentKeys, handshake, registerAgent, reportApp } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  OWNER,
  startOrgWorld,
} from '../test-support/org-world.js';

/**
 * Commands over the real API and a real agent connection (the agent side played by hand).
 *
 * Attacks: running an action the agent never declared, or with parameters its schema forbids, or
 * with a credential pasted into a parameter (stored in the command row and the audit log); skipping
 * the confirmation, the approvals or the step-up a risk demands; approving one's own command; an
 * agent reporting on, or finishing, another agent's command; rewriting a finished command; replaying
 * a request to run a command twice; output large enough to fill the database.
 */

describe.each(BACKENDS)('commands on %s', (backend: Backend) => {
  let world: OrgWorld;
  let approver: Member;
  let second: Member;
  type Connection = Awaited<ReturnType<typeof handshake>>;
  const agent = {
    id: '',
    serverKey: '',
    keys: undefined as unknown as AgentKeys,
    connection: undefined as unknown as Connection,
  };
  const other = { id: '', connection: undefined as unknown as Connection };

  const action = (name: string, risk: string) => ({
    name,
    description: `${risk} action`,
    params: {
      type: 'object',
      properties: {
        unit: { type: 'string', enum: ['web', 'worker'] },
        note: { type: 'string', maxLength: 200 },
      },
      required: ['unit'],
      additionalProperties: false,
    },
    risk,
    timeoutSeconds: 60,
    secrets: [],
  });

  async function connected(name: string) {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const registered = await registerAgent(world.server.url, body.token, name);
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    expect(connection.answer.type).toBe('welcome');
    const answer = await reportApp(
      connection,
      ['low', 'medium', 'high', 'critical'].map((risk) => action(`restart-${risk}`, risk)),
    );
    expect(answer.type).toBe('report_result');
    return { registered, connection };
  }

  /** The next message of a type, skipping others. */
  async function nextOf<T extends ServerMessage['type']>(connection: Connection, type: T) {
    for (;;) {
      const message = await connection.next();
      if (message.type === type) return message as Extract<ServerMessage, { type: T }>;
    }
  }

  const send = (connection: Connection, message: Record<string, unknown>) =>
    connection.socket.send(JSON.stringify({ v: 1, ...message }));

  type View = { id: string; status: string; message: string; exitCode: number | null; approvals: unknown[] };
  const create = (
    client: Member['client'],
    body: Record<string, unknown>,
    headers: Record<string, string> = {},
  ) =>
    client.json<View & { error: { code: string; fields?: Array<{ path: string }> } }>(
      'POST',
      '/api/orgs/acme/commands',
      { agent: agent.id, service: 'app', ...body },
      headers,
    );
  /** Reads a server-sent event stream as text: `until` a needle arrives, or `toEnd` when it closes. */
  function eventStream(response: Response) {
    const reader = response.body!.getReader();
    const stream = {
      text: '',
      async until(needle: string) {
        while (!stream.text.includes(needle)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`the stream ended before "${needle}": ${stream.text}`);
          stream.text += new TextDecoder().decode(value);
        }
      },
      async toEnd() {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          stream.text += new TextDecoder().decode(value);
        }
      },
    };
    return stream;
  }

  const get = async (id: string) =>
    (await world.owner.client.json<View>('GET', `/api/orgs/acme/commands/${id}`)).body;

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    approver = await world.join('approver@example.test', 'operator');
    second = await world.join('second@example.test', 'operator');
    const first = await connected('web-1');
    agent.id = first.registered.agentId;
    agent.serverKey = first.registered.serverSigningKey;
    agent.connection = first.connection;
    agent.keys = first.registered.keys;
    const b = await connected('web-2');
    other.id = b.registered.agentId;
    other.connection = b.connection;
  });
  afterAll(() => world?.close());

  describe('creating commands (CMD-1, CMD-2, CMD-9)', () => {
    it('refuses an undeclared action, parameters outside the schema, and a credential in a parameter', async () => {
      expect((await create(world.owner.client, { action: 'rm-rf', params: {} })).status).toBe(404);
      const invalid = await create(world.owner.client, {
        action: 'restart-low',
        params: { unit: 'db; rm -rf /', extra: 1 },
      });
      expect(invalid.status).toBe(422);
      expect(invalid.body.error.fields?.map((f) => f.path).sort()).toEqual([
        'body.params',
        'body.params.unit',
      ]);
      const leaked = await create(world.owner.client, {
        action: 'restart-low',
        params: { unit: 'web', note: 'token ghp_abcdefghijklmnopqrstuvwxyz0123456789' },
      });
      expect(leaked.status).toBe(422);
      expect(JSON.stringify(leaked.body)).not.toContain('ghp_');
      // Deeper in the parameters too (the schema here would refuse them anyway; the check comes first).
      const nested = await create(world.owner.client, {
        action: 'restart-low',
        params: { unit: 'web', note: 'ok', extra: [{ key: 'AKIAABCDEFGHIJKLMNOP' }] },
      });
      expect(nested.body.error.fields?.map((f) => f.path)).toContain('body.params.extra[0].key');
    });

    it('signs and delivers a low-risk command, follows it to success, and stores its output', async () => {
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'web' } });
      expect(created.status).toBe(201);
      const delivered = await nextOf(agent.connection, 'command');
      const envelope = CommandEnvelope.parse(delivered.envelope);
      expect(envelope).toMatchObject({
        commandId: created.body.id,
        agentId: agent.id,
        action: 'restart-low',
        params: { unit: 'web' },
      });
      expect(
        verifyStatement(ed25519PublicKey(agent.serverKey), commandStatement(envelope), delivered.signature),
      ).toBe(true);
      expect((await get(created.body.id)).status).toBe('dispatched');

      send(agent.connection, { type: 'command_started', commandId: envelope.commandId });
      send(agent.connection, {
        type: 'command_output',
        commandId: envelope.commandId,
        seq: 0,
        stream: 'stdout',
        data: 'restarting web\n',
      });
      send(agent.connection, {
        type: 'command_finished',
        commandId: envelope.commandId,
        outcome: 'succeeded',
        exitCode: 0,
        message: '',
      });
      expect(await nextOf(agent.connection, 'command_ack')).toMatchObject({
        commandIds: [envelope.commandId],
      });
      expect(await get(created.body.id)).toMatchObject({ status: 'succeeded', exitCode: 0 });
      const output = await world.owner.client.json<{ chunks: Array<{ data: string }> }>(
        'GET',
        `/api/orgs/acme/commands/${created.body.id}/output`,
      );
      expect(output.body.chunks.map((c) => c.data).join('')).toBe('restarting web\n');

      // Terminal states are final: a later report changes nothing.
      send(agent.connection, {
        type: 'command_finished',
        commandId: envelope.commandId,
        outcome: 'failed',
        exitCode: 1,
        message: 'late',
      });
      await nextOf(agent.connection, 'command_ack');
      expect(await get(created.body.id)).toMatchObject({ status: 'succeeded', exitCode: 0 });
    });

    it('answers a retried request with the same Idempotency-Key with the same command, and refuses the key for another', async () => {
      const headers = { 'idempotency-key': 'retry-abc-123' };
      const first = await create(
        world.owner.client,
        { action: 'restart-low', params: { unit: 'worker' } },
        headers,
      );
      const again = await create(
        world.owner.client,
        { action: 'restart-low', params: { unit: 'worker' } },
        headers,
      );
      expect(again.body.id).toBe(first.body.id);
      await nextOf(agent.connection, 'command'); // delivered once
      const different = await create(
        world.owner.client,
        { action: 'restart-low', params: { unit: 'web' } },
        headers,
      );
      expect([different.status, different.body.error.code]).toEqual([409, 'idempotency_key_reused']);
    });
  });

  describe('risk policy (CMD-3)', () => {
    it('needs an explicit confirmation for a medium-risk action', async () => {
      const unconfirmed = await create(world.owner.client, {
        action: 'restart-medium',
        params: { unit: 'web' },
      });
      expect(unconfirmed.status).toBe(422);
      const confirmed = await create(world.owner.client, {
        action: 'restart-medium',
        params: { unit: 'web' },
        confirm: true,
      });
      expect(confirmed.body.status).toBe('dispatched');
      await nextOf(agent.connection, 'command');
    });

    it('holds a high-risk action for one approval, never the requester’s own', async () => {
      const created = await create(world.owner.client, {
        action: 'restart-high',
        params: { unit: 'web' },
        confirm: true,
      });
      expect(created.body.status).toBe('awaiting_approval');
      const own = await world.owner.client.json<{ error: { code: string } }>(
        'POST',
        `/api/orgs/acme/commands/${created.body.id}/approve`,
        {},
      );
      expect([own.status, own.body.error.code]).toEqual([403, 'own_command']);
      const inbox = await approver.client.json<{ commands: Array<{ id: string }> }>(
        'GET',
        '/api/orgs/acme/approvals',
      );
      expect(inbox.body.commands.map((c) => c.id)).toContain(created.body.id);
      const approved = await approver.client.json<View>(
        'POST',
        `/api/orgs/acme/commands/${created.body.id}/approve`,
        { comment: 'ok' },
      );
      expect(approved.body.status).toBe('dispatched');
      const delivered = await nextOf(agent.connection, 'command');
      expect(delivered.envelope.approvedBy).toEqual([approver.id]);
      const listed = await world.owner.client.json<{
        commands: Array<{ id: string; approvals: Array<{ userId: string }> }>;
      }>('GET', '/api/orgs/acme/commands?limit=200');
      expect(
        listed.body.commands.find((c) => c.id === created.body.id)?.approvals.map((a) => a.userId),
      ).toEqual([approver.id]);
    });

    it('ends a rejected command for good', async () => {
      const created = await create(world.owner.client, {
        action: 'restart-high',
        params: { unit: 'web' },
        confirm: true,
      });
      const rejected = await approver.client.json<View>(
        'POST',
        `/api/orgs/acme/commands/${created.body.id}/reject`,
        { comment: 'not now' },
      );
      expect(rejected.body.status).toBe('rejected');
      const late = await second.client.json('POST', `/api/orgs/acme/commands/${created.body.id}/approve`, {});
      expect(late.status).toBe(409);
    });

    it('holds a critical action for two approvers, each with a recent sign-in', async () => {
      const created = await create(world.owner.client, {
        action: 'restart-critical',
        params: { unit: 'web' },
        reason: 'failover drill',
        confirm: true,
      });
      expect(created.body.status).toBe('awaiting_approval');
      await approver.client.json('POST', `/api/orgs/acme/commands/${created.body.id}/approve`, {});
      expect((await get(created.body.id)).status).toBe('awaiting_approval');
      world.clock.advance(16 * 60_000); // past the step-up window of everyone's sign-in
      for (const connection of [agent.connection, other.connection]) send(connection, { type: 'heartbeat' });
      const stale = await second.client.json<{ error: { code: string } }>(
        'POST',
        `/api/orgs/acme/commands/${created.body.id}/approve`,
        {},
      );
      expect([stale.status, stale.body.error.code]).toEqual([403, 'step_up_required']);
      const requester = await create(world.owner.client, {
        action: 'restart-critical',
        params: { unit: 'web' },
        reason: 'failover drill',
        confirm: true,
      });
      expect(requester.body.error.code).toBe('step_up_required');
      await second.client.json('POST', '/api/auth/reauth', { password: MEMBER_PASSWORD });
      const approved = await second.client.json<View>(
        'POST',
        `/api/orgs/acme/commands/${created.body.id}/approve`,
        {},
      );
      expect(approved.body.status).toBe('dispatched');
      await nextOf(agent.connection, 'command');
    });

    it('expires an approval request nobody answered within the hour', async () => {
      const created = await create(world.owner.client, {
        action: 'restart-high',
        params: { unit: 'web' },
        confirm: true,
      });
      // In steps, with a request between them, so that the sessions themselves stay within their idle limit.
      for (const minutes of [20, 20, 21]) {
        world.clock.advance(minutes * 60_000);
        // The agents stay alive in the server's eyes too (it closes agents silent for three heartbeats).
        for (const connection of [agent.connection, other.connection])
          send(connection, { type: 'heartbeat' });
        expect((await get(created.body.id)).status).not.toBe(undefined);
      }
      await vi.waitFor(async () => expect((await get(created.body.id)).status).toBe('expired'), {
        timeout: 10_000,
        interval: 100,
      });
    });
  });

  describe('what an agent may report (CMD-4)', () => {
    it('ignores another agent finishing, or writing output into, a command it was never sent', async () => {
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'web' } });
      await nextOf(agent.connection, 'command');
      send(other.connection, {
        type: 'command_output',
        commandId: created.body.id,
        seq: 0,
        stream: 'stdout',
        data: 'forged',
      });
      send(other.connection, {
        type: 'command_finished',
        commandId: created.body.id,
        outcome: 'succeeded',
        exitCode: 0,
        message: 'forged',
      });
      send(other.connection, {
        type: 'command_states',
        commands: [{ commandId: created.body.id, state: 'succeeded', exitCode: 0 }],
      });
      // The real agent's next report is handled after the forged ones (one connection each, in order per connection).
      send(agent.connection, { type: 'command_started', commandId: created.body.id });
      await vi.waitFor(async () => expect((await get(created.body.id)).status).toBe('running'), {
        timeout: 10_000,
        interval: 50,
      });
      const output = await world.owner.client.json<{ chunks: unknown[] }>(
        'GET',
        `/api/orgs/acme/commands/${created.body.id}/output`,
      );
      expect(output.body.chunks).toEqual([]);
      expect((await get(created.body.id)).message).toBe('');
    });

    it('times out a run whose agent never reports its end, and then ignores a late report', async () => {
      // An agent that started a command and then went silent about it (stuck, or lying to keep it
      // "running" forever) cannot hold the command open: the server ends it after the action's timeout
      // and a grace, and the late claim of success changes nothing.
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'web' } });
      await nextOf(agent.connection, 'command');
      send(agent.connection, { type: 'command_started', commandId: created.body.id });
      await vi.waitFor(async () => expect((await get(created.body.id)).status).toBe('running'));
      // The action's timeout is 60 s; the grace after it two minutes. In steps, with heartbeats.
      for (const seconds of [60, 60, 61]) {
        world.clock.advance(seconds * 1000);
        for (const connection of [agent.connection, other.connection])
          send(connection, { type: 'heartbeat' });
        expect((await get(created.body.id)).status).not.toBe(undefined);
      }
      await vi.waitFor(async () => expect((await get(created.body.id)).status).toBe('timed_out'), {
        timeout: 10_000,
        interval: 100,
      });
      send(agent.connection, {
        type: 'command_finished',
        commandId: created.body.id,
        outcome: 'succeeded',
        exitCode: 0,
        message: '',
      });
      await nextOf(agent.connection, 'command_ack');
      const final = await get(created.body.id);
      expect(final.status).toBe('timed_out');
      expect(final.message).toContain('reported no end');
    });

    it('stores at most 1 MiB of output per command, then a truncation marker', async () => {
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'worker' } });
      await nextOf(agent.connection, 'command');
      send(agent.connection, { type: 'command_started', commandId: created.body.id });
      const chunk = 'x'.repeat(16 * 1024);
      for (let seq = 0; seq < 70; seq++)
        send(agent.connection, {
          type: 'command_output',
          commandId: created.body.id,
          seq,
          stream: 'stdout',
          data: chunk,
        });
      send(agent.connection, {
        type: 'command_finished',
        commandId: created.body.id,
        outcome: 'succeeded',
        exitCode: 0,
        message: '',
      });
      await nextOf(agent.connection, 'command_ack');
      const output = await world.owner.client.json<{ chunks: Array<{ data: string }>; truncated: boolean }>(
        'GET',
        `/api/orgs/acme/commands/${created.body.id}/output`,
      );
      const stored = output.body.chunks.map((c) => c.data).join('');
      expect(output.body.truncated).toBe(true);
      expect(Buffer.byteLength(stored)).toBeLessThanOrEqual(1024 * 1024 + 100);
      expect(stored.endsWith('[output truncated: the server keeps the first 1 MiB]\n')).toBe(true);
    });
  });

  describe('following and cancelling (CMD-4, CMD-5)', () => {
    it('streams stored output, then live output and status, as server-sent events until the command ends', async () => {
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'web' } });
      await nextOf(agent.connection, 'command');
      send(agent.connection, { type: 'command_started', commandId: created.body.id });
      send(agent.connection, {
        type: 'command_output',
        commandId: created.body.id,
        seq: 0,
        stream: 'stdout',
        data: 'before\n',
      });
      await vi.waitFor(async () => expect((await get(created.body.id)).status).toBe('running'), {
        timeout: 10_000,
        interval: 50,
      });

      const response = await world.owner.client.openEvents('acme', created.body.id);
      expect(response.headers.get('content-type')).toContain('text/event-stream');
      const stream = eventStream(response);
      await stream.until('"status":"running"');
      send(agent.connection, {
        type: 'command_output',
        commandId: created.body.id,
        seq: 1,
        stream: 'stderr',
        data: 'live\n',
      });
      await stream.until('live');
      send(agent.connection, {
        type: 'command_finished',
        commandId: created.body.id,
        outcome: 'failed',
        exitCode: 3,
        message: 'exit 3',
      });
      await stream.until('"status":"failed"');
      const before = stream.text;
      await stream.toEnd();
      expect(stream.text).toBe(before);
      const events = stream.text
        .split('\n\n')
        .filter(Boolean)
        .map((block) => block.split('\n')[0]);
      expect(events).toEqual(['event: output', 'event: status', 'event: output', 'event: status']);
    });

    it('stops a live stream at the next event once its reader is removed from the organization (AUTH-5)', async () => {
      // Attack: a member about to be removed opens the command's live stream first, hoping it keeps
      // delivering output after their access is gone (the request was authorized when it began).
      const watcher = await world.join('watcher@example.test', 'viewer');
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'web' } });
      await nextOf(agent.connection, 'command');
      send(agent.connection, { type: 'command_started', commandId: created.body.id });
      await vi.waitFor(async () => expect((await get(created.body.id)).status).toBe('running'), {
        timeout: 10_000,
        interval: 50,
      });
      const response = await watcher.client.openEvents('acme', created.body.id);
      expect(response.status).toBe(200);
      const stream = eventStream(response);
      await stream.until('"status":"running"');
      // Removing a member is privileged; earlier tests moved the clock past the owner's sign-in.
      await world.owner.client.send('POST', '/api/auth/reauth', { password: OWNER.password });
      expect((await world.owner.client.json('DELETE', `/api/orgs/acme/members/${watcher.id}`)).status).toBe(
        200,
      );
      send(agent.connection, {
        type: 'command_output',
        commandId: created.body.id,
        seq: 0,
        stream: 'stdout',
        data: 'after-removal\n',
      });
      await stream.toEnd();
      expect(stream.text).toContain('event: ended');
      expect(stream.text).not.toContain('after-removal');
      // The owner, still a member, reads that output as usual.
      await vi.waitFor(
        async () =>
          expect(
            JSON.stringify(
              (await world.owner.client.json('GET', `/api/orgs/acme/commands/${created.body.id}/output`))
                .body,
            ),
          ).toContain('after-removal'),
        { timeout: 10_000, interval: 50 },
      );
      send(agent.connection, {
        type: 'command_finished',
        commandId: created.body.id,
        outcome: 'succeeded',
        exitCode: 0,
        message: '',
      });
      await nextOf(agent.connection, 'command_ack');
    });

    it('cancels a queued command at once, and asks the agent to stop a running one', async () => {
      const high = await create(world.owner.client, {
        action: 'restart-high',
        params: { unit: 'web' },
        confirm: true,
      });
      const cancelled = await world.owner.client.json<View>(
        'POST',
        `/api/orgs/acme/commands/${high.body.id}/cancel`,
      );
      expect(cancelled.body.status).toBe('cancelled');

      const running = await create(world.owner.client, { action: 'restart-low', params: { unit: 'worker' } });
      await nextOf(agent.connection, 'command');
      send(agent.connection, { type: 'command_started', commandId: running.body.id });
      await vi.waitFor(async () => expect((await get(running.body.id)).status).toBe('running'), {
        timeout: 10_000,
        interval: 50,
      });
      await world.owner.client.json('POST', `/api/orgs/acme/commands/${running.body.id}/cancel`);
      expect(await nextOf(agent.connection, 'cancel')).toMatchObject({ commandId: running.body.id });
      send(agent.connection, {
        type: 'command_finished',
        commandId: running.body.id,
        outcome: 'cancelled',
        exitCode: null,
        message: 'SIGTERM',
      });
      await nextOf(agent.connection, 'command_ack');
      expect((await get(running.body.id)).status).toBe('cancelled');
    });

    it('refuses to cancel a delivered command while its agent is away, instead of pretending', async () => {
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'web' } });
      expect(created.body.status).toBe('dispatched');
      await nextOf(agent.connection, 'command');
      agent.connection.socket.close();
      await agent.connection.closed;
      await vi.waitFor(async () => {
        const response = await world.owner.client.json<{ error: { code: string } }>(
          'POST',
          `/api/orgs/acme/commands/${created.body.id}/cancel`,
        );
        expect([response.status, response.body.error.code]).toEqual([409, 'agent_unavailable']);
      });
      expect((await get(created.body.id)).status).toBe('dispatched');
      // Back online for the tests that follow.
      agent.connection = await handshake(world.server.url, agent.id, agent.keys);
      expect(agent.connection.answer.type).toBe('welcome');
    });

    it('reconciles from the agent journal after a restart: interrupted is failed, never guessed as success', async () => {
      const created = await create(world.owner.client, { action: 'restart-low', params: { unit: 'web' } });
      await nextOf(agent.connection, 'command');
      send(agent.connection, { type: 'command_started', commandId: created.body.id });
      send(agent.connection, {
        type: 'command_states',
        commands: [{ commandId: created.body.id, state: 'interrupted', exitCode: null }],
      });
      expect(await nextOf(agent.connection, 'command_ack')).toMatchObject({ commandIds: [created.body.id] });
      expect(await get(created.body.id)).toMatchObject({
        status: 'failed',
        message: 'interrupted: the agent stopped while the command ran',
      });
    });
  });

  describe('revocation (AGT-4, CMD-4)', () => {
    it('ends the commands a revoked agent had in flight as failed, saying why, since it can never report', async () => {
      const sent = await world.owner.client.json<View>('POST', '/api/orgs/acme/commands', {
        agent: other.id,
        service: 'app',
        action: 'restart-low',
        params: { unit: 'web' },
      });
      await nextOf(other.connection, 'command');
      send(other.connection, { type: 'command_started', commandId: sent.body.id });
      await vi.waitFor(async () => expect((await get(sent.body.id)).status).toBe('running'), {
        timeout: 10_000,
        interval: 50,
      });
      await world.owner.client.json('POST', '/api/auth/reauth', { password: OWNER.password });
      expect((await world.owner.client.json('POST', `/api/orgs/acme/agents/${other.id}/revoke`)).status).toBe(
        200,
      );
      expect(await get(sent.body.id)).toMatchObject({
        status: 'failed',
        message: 'the agent was revoked; it can never report how this command ended',
      });
    });
  });

  describe('organization policy (CMD-3)', () => {
    const rule = (confirmation: boolean, approvals: number, stepUp: boolean) => ({
      confirmation,
      approvals,
      stepUp,
    });
    const builtIn = {
      low: rule(false, 0, false),
      medium: rule(true, 0, false),
      high: rule(true, 1, false),
      critical: rule(true, 2, true),
    };

    it('may be tightened by an owner, never loosened, and applies to new commands', async () => {
      await world.owner.client.json('POST', '/api/auth/reauth', { password: OWNER.password });
      const looser = await world.owner.client.json<{ error: { code: string } }>(
        'PUT',
        '/api/orgs/acme/command-policy',
        {
          ...builtIn,
          critical: rule(true, 1, false),
        },
      );
      expect(looser.status).toBe(422);
      // An operator cannot change it at all (security configuration is the owner's).
      const operator = await world.signIn(approver.email);
      const byOperator = await operator.client.json('PUT', '/api/orgs/acme/command-policy', builtIn);
      expect(byOperator.status).toBe(403);

      const tighter = await world.owner.client.json('PUT', '/api/orgs/acme/command-policy', {
        ...builtIn,
        low: rule(true, 0, false),
        medium: rule(true, 1, false),
      });
      expect(tighter.status).toBe(200);
      const unconfirmedLow = await create(world.owner.client, {
        action: 'restart-low',
        params: { unit: 'web' },
      });
      expect(unconfirmedLow.status).toBe(422);
      const medium = await create(world.owner.client, {
        action: 'restart-medium',
        params: { unit: 'web' },
        confirm: true,
      });
      expect(medium.body.status).toBe('awaiting_approval');
      const changed = await world.owner.client.json<{ events: unknown[] }>(
        'GET',
        '/api/orgs/acme/audit/events?action=command.policy_changed',
      );
      expect(changed.body.events).toHaveLength(1);
    });
  });
});
