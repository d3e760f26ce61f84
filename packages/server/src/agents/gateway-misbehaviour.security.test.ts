import { MAX_AGENT_MESSAGE_BYTES, newId, type ServerMessage } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openDatabase } from '../db/database.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * An agent acts only as itself (invariant 5, ACC-4), and a misbehaving one is seen.
 *
 * Attacks: a compromised host, holding a genuine agent key, reports on another agent's command to
 * mark it succeeded or failed, fill its output with lies, or learn whether a command id exists; it
 * sends garbage, frames of types the protocol does not have, handshake messages out of turn, or
 * oversized frames, to probe the server's parser; and it does all of this in a flood, to bury the
 * audit log (or whatever else the flood was covering) under millions of events. Every one is refused
 * or ignored where it lands, logged at warn and audited as `agent.misbehaved` — without the frame's
 * content, which may carry secrets — and a flood costs the audit log one event a minute per kind.
 */

describe.each(BACKENDS)('agent misbehaviour on %s', (backend: Backend) => {
  let world: OrgWorld;
  const slug = 'acme';
  type Connection = Awaited<ReturnType<typeof handshake>>;
  // Recognisable text an attacker's frames carry: it must reach neither the logs nor the audit log.
  const MARKER = 'hunter2-misbehaviour-marker-7Qx9';

  const ping = {
    name: 'ping',
    description: 'ping',
    params: { type: 'object', additionalProperties: false },
    risk: 'low',
    timeoutSeconds: 10,
    secrets: [],
  };

  beforeAll(async () => {
    // Heartbeats far apart: moving the clock a minute on (the flood below) leaves every agent online.
    world = await startOrgWorld({ BULWARK_AGENT_HEARTBEAT_SECONDS: '300' }, backend);
  });
  afterAll(() => world?.close());

  async function connected(name: string) {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      `/api/orgs/${slug}/agent-registration-tokens`,
      {},
    );
    const agent = await registerAgent(world.server.url, body.token, name);
    const connection = await handshake(world.server.url, agent.agentId, agent.keys);
    expect(connection.answer.type).toBe('welcome');
    expect((await reportApp(connection, [ping])).type).toBe('report_result');
    return { agent, connection };
  }

  const send = (connection: Connection, message: Record<string, unknown>) =>
    connection.socket.send(JSON.stringify({ v: 1, ...message }));

  /**
   * Waits until the server has handled everything sent before: messages are handled in order, and a
   * report is answered. Anything else the server said meanwhile is returned.
   */
  async function settled(connection: Connection): Promise<ServerMessage[]> {
    send(connection, {
      type: 'report',
      services: [{ name: 'app', kind: 'node', health: { status: 'up' }, actions: [ping] }],
    });
    const said: ServerMessage[] = [];
    for (;;) {
      const message = await connection.next();
      if (message.type === 'report_result') return said;
      said.push(message);
    }
  }

  interface Misbehaviour {
    actor: { id: string };
    outcome: string;
    details: { kind: string; count: number; messageType?: string; commandId?: string };
  }

  async function misbehaviours(agentId: string): Promise<Misbehaviour[]> {
    const page = await world.owner.client.json<{ events: Misbehaviour[] }>(
      'GET',
      `/api/orgs/${slug}/audit/events?limit=500&action=agent.misbehaved&actor=${agentId}`,
    );
    expect(page.status).toBe(200);
    return page.body.events;
  }

  function warnings(agentId: string) {
    return world.server.logs
      .entries()
      .filter((entry) => entry.msg === 'agent misbehaved' && entry.agentId === agentId)
      .map((entry) => ({ level: entry.level, kind: entry.kind }));
  }

  /** Every command report a compromised agent could make about `commandId`. */
  function reportsAbout(connection: Connection, commandId: string) {
    send(connection, { type: 'command_started', commandId });
    send(connection, { type: 'command_output', commandId, seq: 0, stream: 'stdout', data: MARKER });
    send(connection, {
      type: 'command_finished',
      commandId,
      outcome: 'succeeded',
      exitCode: 0,
      message: MARKER,
    });
    send(connection, { type: 'command_refused', commandId, reason: 'bad_signature', message: MARKER });
    send(connection, { type: 'command_states', commands: [{ commandId, state: 'succeeded', exitCode: 0 }] });
  }

  describe('an agent reporting on commands that are not its own', () => {
    it('is ignored exactly as for a command that does not exist, and is logged and audited', async () => {
      const victim = await connected('victim');
      const intruder = await connected('intruder');
      const created = await world.owner.client.json<{ id: string }>('POST', `/api/orgs/${slug}/commands`, {
        agent: victim.agent.agentId,
        service: 'app',
        action: 'ping',
      });
      expect(created.status).toBe(201);
      for (;;) if ((await victim.connection.next()).type === 'command') break;

      reportsAbout(intruder.connection, created.body.id);
      reportsAbout(intruder.connection, newId('cmd', world.clock.now()));
      // Nothing is said back either way: the intruder learns nothing, not even whether the id exists.
      expect(await settled(intruder.connection)).toEqual([]);

      const command = await world.owner.client.json<{ status: string }>(
        'GET',
        `/api/orgs/${slug}/commands/${created.body.id}`,
      );
      expect(command.body.status).toBe('dispatched');
      const output = await world.owner.client.json<{ chunks: unknown[] }>(
        'GET',
        `/api/orgs/${slug}/commands/${created.body.id}/output`,
      );
      expect(JSON.stringify(output.body)).not.toContain(MARKER);

      const events = await misbehaviours(intruder.agent.agentId);
      expect(events.map((e) => e.details.kind).sort()).toEqual(['foreign_command', 'unknown_command']);
      expect(events.find((e) => e.details.kind === 'foreign_command')).toMatchObject({
        outcome: 'denied',
        details: { count: 1, messageType: 'command_started', commandId: created.body.id },
      });
      expect(warnings(intruder.agent.agentId)).toEqual(
        expect.arrayContaining([
          { level: 40, kind: 'foreign_command' },
          { level: 40, kind: 'unknown_command' },
        ]),
      );
      expect(world.server.logs.text).not.toContain(MARKER);
      expect(JSON.stringify(events)).not.toContain(MARKER);

      // The agent the command names is heard, and was never taken for a misbehaving one.
      send(victim.connection, { type: 'command_started', commandId: created.body.id });
      await settled(victim.connection);
      const running = await world.owner.client.json<{ status: string }>(
        'GET',
        `/api/orgs/${slug}/commands/${created.body.id}`,
      );
      expect(running.body.status).toBe('running');
      expect(await misbehaviours(victim.agent.agentId)).toEqual([]);
    });
  });

  describe('an agent sending what the protocol does not allow', () => {
    it('is refused and disconnected for an invalid frame, an unknown type or a handshake out of turn; each logged and audited without its content', async () => {
      const { agent, connection: first } = await connected('garbler');
      first.socket.close();
      await first.closed;
      const frames: Array<[string, string, string]> = [
        [`{"v":1,"type":"report","services":[{"name":"${MARKER}"`, 'invalid_message', 'invalid_message'],
        [JSON.stringify({ v: 1, type: 'exfiltrate', token: MARKER }), 'invalid_message', 'unknown_type'],
        [JSON.stringify({ v: 1, type: 'heartbeat', note: MARKER }), 'invalid_message', 'invalid_message'],
        [
          JSON.stringify({
            v: 1,
            type: 'hello',
            agentId: agent.agentId,
            agentNonce: 'A'.repeat(43),
            agentVersion: MARKER,
          }),
          'unexpected_message',
          'unexpected_message',
        ],
      ];
      for (const [frame, code] of frames) {
        const connection = await handshake(world.server.url, agent.agentId, agent.keys);
        expect(connection.answer.type).toBe('welcome');
        connection.socket.send(frame);
        expect(await connection.next()).toMatchObject({ type: 'refused', code });
        expect(await connection.closed).toBe(4401);
      }

      const events = await misbehaviours(agent.agentId);
      expect(new Set(events.map((e) => e.details.kind))).toEqual(
        new Set(['invalid_message', 'unknown_type', 'unexpected_message']),
      );
      // The second invalid frame fell in the first one's window: counted, not yet written.
      expect(events.filter((e) => e.details.kind === 'invalid_message')).toHaveLength(1);
      expect(new Set(warnings(agent.agentId).map((w) => `${w.level} ${w.kind}`))).toEqual(
        new Set(['40 invalid_message', '40 unknown_type', '40 unexpected_message']),
      );
      expect(world.server.logs.text).not.toContain(MARKER);
      expect(JSON.stringify(events)).not.toContain(MARKER);
    });

    it('is disconnected for an oversized frame, which is logged and audited', async () => {
      const { agent, connection } = await connected('bloater');
      connection.socket.send(`{"v":1,"type":"report","services":"${'x'.repeat(MAX_AGENT_MESSAGE_BYTES)}"}`);
      expect(await connection.closed).toBe(1009);
      // The server records it as its side of the socket closes, a moment after the client's.
      await vi.waitFor(async () => {
        expect((await misbehaviours(agent.agentId)).map((e) => e.details.kind)).toEqual([
          'oversized_message',
        ]);
      });
      expect(warnings(agent.agentId)).toEqual([{ level: 40, kind: 'oversized_message' }]);
    });
  });

  describe('a flood of misbehaviour', () => {
    // Last for each backend: it stops that backend's server to read what the shutdown wrote.
    it('costs the audit log one event per agent and kind a minute, and the count of what it stood for', async () => {
      const victim = await connected('flood-victim');
      const flooder = await connected('flooder');
      const created = await world.owner.client.json<{ id: string }>('POST', `/api/orgs/${slug}/commands`, {
        agent: victim.agent.agentId,
        service: 'app',
        action: 'ping',
      });
      const FRAMES = 200;
      for (let i = 0; i < FRAMES; i++)
        send(flooder.connection, { type: 'command_started', commandId: created.body.id });
      await settled(flooder.connection);
      expect((await misbehaviours(flooder.agent.agentId)).map((e) => e.details.count)).toEqual([1]);
      expect(warnings(flooder.agent.agentId)).toHaveLength(1);

      // A minute on, the next one is written, with what the window counted.
      world.clock.advance(60_000);
      send(flooder.connection, { type: 'command_started', commandId: created.body.id });
      await settled(flooder.connection);
      // The rest of the flood falls in that new window: counted, not written while the server runs.
      const LATE = 3;
      for (let i = 0; i < LATE; i++)
        send(flooder.connection, { type: 'command_started', commandId: created.body.id });
      await settled(flooder.connection);
      expect(await misbehaviours(flooder.agent.agentId)).toHaveLength(2);

      // Shutting down writes whatever is still only counted: nothing is lost, and the whole flood of
      // FRAMES + 1 + LATE reports cost three events (the server's periodic flush may have written the
      // second one before the frame a minute on arrived; it never writes a window still open).
      // Read straight from the stopped server's database, as the operator's own copy would show it.
      await world.server.stop();
      const database = openDatabase(world.server.config);
      const rows = await database.db
        .selectFrom('audit_events')
        .select('details')
        .where('action', '=', 'agent.misbehaved')
        .where('actor_id', '=', flooder.agent.agentId)
        .orderBy('seq')
        .execute()
        .finally(() => database.close());
      const counts = rows.map((row) => (JSON.parse(row.details) as { count: number }).count);
      expect(counts).toHaveLength(3);
      expect(counts[0]).toBe(1);
      expect(counts.reduce((sum, count) => sum + count, 0)).toBe(FRAMES + 1 + LATE);
    });
  });
});
