import type { ServerMessage } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Member, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';

/**
 * What people read about commands: names rather than ids, an approvals inbox that forgets what you
 * already decided, a rejection that says why, a critical command that says why it should run, and
 * output that says when it arrived.
 */

type Connection = Awaited<ReturnType<typeof handshake>>;
interface View {
  id: string;
  status: string;
  requestedBy: string;
  requestedByName: string;
  requestedByEmail: string;
  agentName: string;
  approvals: Array<{ userId: string; name: string; email: string; decision: string }>;
}
type Refusal = { error: { code: string; fields?: Array<{ path: string; message: string }> } };

const action = (name: string, risk: string) => ({
  name,
  description: `${risk} action`,
  params: { type: 'object', additionalProperties: false },
  risk,
  timeoutSeconds: 60,
  secrets: [],
});

describe.each(BACKENDS)('command views on %s', (backend) => {
  let world: OrgWorld;
  let first: Member;
  let second: Member;
  let agentId = '';
  let connection: Connection;

  const create = (body: Record<string, unknown>) =>
    world.owner.client.json<View & Refusal>('POST', '/api/orgs/acme/commands', {
      agent: agentId,
      service: 'app',
      confirm: true,
      ...body,
    });
  const inbox = async (member: Member) =>
    (await member.client.json<{ commands: View[] }>('GET', '/api/orgs/acme/approvals')).body.commands.map(
      (c) => c.id,
    );

  /** The agent's next message about this command (others, sent for earlier commands, are skipped). */
  async function nextAbout(commandId: string, type: ServerMessage['type']) {
    for (;;) {
      const message = await connection.next();
      if (message.type !== type) continue;
      if (message.type === 'command' && message.envelope.commandId !== commandId) continue;
      if (message.type === 'command_ack' && !message.commandIds.includes(commandId)) continue;
      return message;
    }
  }

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    first = await world.join('first@example.test', 'operator');
    second = await world.join('second@example.test', 'operator');
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const registered = await registerAgent(world.server.url, body.token, 'web-1');
    agentId = registered.agentId;
    connection = await handshake(world.server.url, agentId, registered.keys);
    expect(
      (
        await reportApp(connection, [
          action('ping', 'low'),
          action('migrate', 'high'),
          action('drop', 'critical'),
        ])
      ).type,
    ).toBe('report_result');
  }, 60_000);
  afterAll(async () => {
    connection?.socket.close();
    await world?.close();
  });

  it('names the requester, the agent and each approver, with their ids beside', async () => {
    const created = await create({ action: 'migrate' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      requestedByEmail: OWNER.email,
      agentName: 'web-1',
    });
    expect(created.body.requestedBy).toMatch(/^usr_/);
    const approved = await first.client.json<View>(
      'POST',
      `/api/orgs/acme/commands/${created.body.id}/approve`,
      {
        comment: 'ok',
      },
    );
    expect(approved.body.approvals).toEqual([
      expect.objectContaining({ userId: first.id, name: 'first', email: 'first@example.test' }),
    ]);
    const listed = await world.owner.client.json<{ commands: View[] }>('GET', '/api/orgs/acme/commands');
    const row = listed.body.commands.find((c) => c.id === created.body.id)!;
    expect(row.agentName).toBe('web-1');
    expect(row.approvals[0]?.email).toBe('first@example.test');
  });

  it('drops a command from your approvals inbox once you decided, while others still see it', async () => {
    const created = await create({ action: 'drop', reason: 'clean up after the drill' });
    expect(created.body.status).toBe('awaiting_approval');
    expect(await inbox(first)).toContain(created.body.id);
    const approved = await first.client.json<View>(
      'POST',
      `/api/orgs/acme/commands/${created.body.id}/approve`,
      {},
    );
    expect(approved.body.status).toBe('awaiting_approval');
    expect(await inbox(first)).not.toContain(created.body.id);
    expect(await inbox(second)).toContain(created.body.id);
    // The requester never sees their own request there.
    expect(await inbox(world.owner)).not.toContain(created.body.id);
  });

  it('refuses a rejection without a comment, naming the field, and takes one with it', async () => {
    const created = await create({ action: 'migrate' });
    for (const body of [{}, { comment: '' }, { comment: '   ' }]) {
      const refused = await first.client.json<Refusal>(
        'POST',
        `/api/orgs/acme/commands/${created.body.id}/reject`,
        body,
      );
      expect(refused.status).toBe(422);
      expect(refused.body.error.fields).toEqual([
        { path: 'body.comment', message: 'is needed to reject: say why' },
      ]);
    }
    const rejected = await first.client.json<View>(
      'POST',
      `/api/orgs/acme/commands/${created.body.id}/reject`,
      {
        comment: 'not during the freeze',
      },
    );
    expect(rejected.body.status).toBe('rejected');
  });

  it('refuses a critical command without a reason', async () => {
    for (const reason of [undefined, '', '  ']) {
      const refused = await create({ action: 'drop', ...(reason === undefined ? {} : { reason }) });
      expect(refused.status).toBe(422);
      expect(refused.body.error.fields).toEqual([
        { path: 'body.reason', message: 'is needed for a critical-risk action' },
      ]);
    }
    // Other risks still run without one.
    expect((await create({ action: 'ping' })).status).toBe(201);
  });

  it('keeps the time each chunk of output arrived', async () => {
    const created = await create({ action: 'ping' });
    await nextAbout(created.body.id, 'command');
    const send = (message: Record<string, unknown>) =>
      connection.socket.send(JSON.stringify({ v: 1, ...message }));
    send({ type: 'command_started', commandId: created.body.id });
    send({ type: 'command_output', commandId: created.body.id, seq: 0, stream: 'stdout', data: 'one\n' });
    // The first chunk is stored (its live event follows the write) before the clock moves on.
    const live = await world.owner.client.openEvents('acme', created.body.id);
    const reader = live.body!.getReader();
    let seen = '';
    while (!seen.includes('"seq":0')) seen += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    world.clock.advance(5000);
    send({ type: 'command_output', commandId: created.body.id, seq: 1, stream: 'stdout', data: 'two\n' });
    send({
      type: 'command_finished',
      commandId: created.body.id,
      outcome: 'succeeded',
      exitCode: 0,
      message: '',
    });
    await nextAbout(created.body.id, 'command_ack');
    const output = await world.owner.client.json<{ chunks: Array<{ seq: number; at: string }> }>(
      'GET',
      `/api/orgs/acme/commands/${created.body.id}/output`,
    );
    const [one, two] = output.body.chunks;
    expect(Date.parse(two!.at) - Date.parse(one!.at)).toBe(5000);
  });
});
