import type { ServerMessage } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type AgentKeys, handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * A command claimed for delivery whose envelope never reached its agent (the instance that claimed
 * it died before writing it, or with it in a socket buffer: HA-1, QA-4) is sent again when the agent
 * comes back and its `command_states` does not list it, instead of waiting for its delivery deadline
 * to expire unrun. One the agent lists, or one claimed over the agent's new connection, is not sent
 * again. The agent side is played by hand over the real gateway; "lost" is an envelope the agent
 * reads and then forgets, as if the bytes had died on the way.
 */

describe.each(BACKENDS)('commands their agent never received, on %s', (backend: Backend) => {
  let world: OrgWorld;
  let agentId = '';
  let keys: AgentKeys;
  type Connection = Awaited<ReturnType<typeof handshake>>;

  const send = (connection: Connection, message: Record<string, unknown>) =>
    connection.socket.send(JSON.stringify({ v: 1, ...message }));
  const action = {
    name: 'ping',
    description: 'answers',
    params: { type: 'object', properties: {}, additionalProperties: false },
    risk: 'low',
    timeoutSeconds: 60,
    secrets: [],
  };

  /** Connects as the agent and reports its service; its command states are the test's to send. */
  async function connect(): Promise<Connection> {
    const connection = await handshake(world.server.url, agentId, keys);
    expect(connection.answer.type).toBe('welcome');
    expect((await reportApp(connection, [action])).type).toBe('report_result');
    return connection;
  }

  /** Closes the connection as the agent, and waits until the server has let it go. */
  async function disconnect(connection: Connection): Promise<void> {
    connection.socket.close();
    await connection.closed;
    await vi.waitFor(
      async () => {
        const shown = await world.owner.client.json<{ status: string }>(
          'GET',
          `/api/orgs/acme/agents/${agentId}`,
        );
        expect(shown.body.status).toBe('offline');
      },
      { timeout: 15_000, interval: 50 },
    );
  }

  /** The next command envelope sent to the agent, skipping anything else. */
  async function nextCommand(connection: Connection): Promise<string> {
    for (;;) {
      const message = await connection.next();
      if (message.type === 'command') return message.envelope.commandId;
    }
  }

  /**
   * What the server sent before its answer to a report (the same report again): the agent's messages
   * are handled in order, so this is what it sent while handling the earlier ones.
   */
  async function sentBeforeReport(connection: Connection): Promise<ServerMessage['type'][]> {
    send(connection, {
      type: 'report',
      services: [{ name: 'app', kind: 'node', health: { status: 'up' }, actions: [action] }],
    });
    const sent: ServerMessage['type'][] = [];
    for (;;) {
      const message = await connection.next();
      if (message.type === 'report_result') return sent;
      sent.push(message.type);
    }
  }

  const create = async () => {
    const created = await world.owner.client.json<{ id: string; status: string }>(
      'POST',
      '/api/orgs/acme/commands',
      { agent: agentId, service: 'app', action: 'ping', params: {} },
    );
    expect(created.status).toBe(201);
    return created.body;
  };
  const status = async (id: string) =>
    (await world.owner.client.json<{ status: string }>('GET', `/api/orgs/acme/commands/${id}`)).body.status;
  const trail = async (id: string) =>
    (
      await world.owner.client.json<{ events: Array<{ action: string; details: Record<string, unknown> }> }>(
        'GET',
        `/api/orgs/acme/audit/events?target=${id}`,
      )
    ).body.events;

  beforeAll(async () => {
    // On real time: the agent's connections and the commands' claims are told apart by when they happened.
    world = await startOrgWorld({}, backend, Date.now());
    const token = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const registered = await registerAgent(world.server.url, token.body.token, 'web-1');
    agentId = registered.agentId;
    keys = registered.keys;
  }, 60_000);
  afterAll(async () => {
    await world?.close();
  });

  it('sends a command again when its agent comes back without it', async () => {
    const first = await connect();
    send(first, { type: 'command_states', commands: [] });
    const command = await create();
    expect(command.status).toBe('dispatched');
    // The envelope reaches the socket, and is lost there: the agent never journals it.
    expect(await nextCommand(first)).toBe(command.id);
    await disconnect(first);
    expect(await status(command.id)).toBe('dispatched');

    world.clock.advance(1000);
    const second = await connect();
    send(second, { type: 'command_states', commands: [] });
    expect(await nextCommand(second)).toBe(command.id);
    const requeued = (await trail(command.id)).filter((event) => event.action === 'command.requeued');
    expect(requeued.map((event) => event.details)).toEqual([{ reason: 'not_received' }]);

    // Received this time, it runs and ends as usual.
    send(second, { type: 'command_started', commandId: command.id });
    send(second, {
      type: 'command_finished',
      commandId: command.id,
      outcome: 'succeeded',
      exitCode: 0,
      message: '',
    });
    const sent = await sentBeforeReport(second);
    expect(sent).toEqual(['command_ack']);
    expect(await status(command.id)).toBe('succeeded');
    await disconnect(second);
  });

  it('does not send again a command its agent lists as its own', async () => {
    const first = await connect();
    send(first, { type: 'command_states', commands: [] });
    const command = await create();
    expect(await nextCommand(first)).toBe(command.id);
    // Journaled and started, but the word never reached the server.
    await disconnect(first);

    world.clock.advance(1000);
    const second = await connect();
    send(second, {
      type: 'command_states',
      commands: [{ commandId: command.id, state: 'running', exitCode: null }],
    });
    expect(await sentBeforeReport(second)).toEqual([]);
    expect(await status(command.id)).toBe('running');
    expect((await trail(command.id)).map((event) => event.action)).not.toContain('command.requeued');

    send(second, {
      type: 'command_finished',
      commandId: command.id,
      outcome: 'succeeded',
      exitCode: 0,
      message: '',
    });
    expect(await sentBeforeReport(second)).toEqual(['command_ack']);
    await disconnect(second);
  });

  it('does not send again a command claimed over the connection that lists the states', async () => {
    const connection = await connect();
    world.clock.advance(1000);
    const command = await create();
    expect(await nextCommand(connection)).toBe(command.id);
    // The states were read from the journal before the envelope arrived: it is not among them.
    send(connection, { type: 'command_states', commands: [] });
    expect(await sentBeforeReport(connection)).toEqual([]);
    expect(await status(command.id)).toBe('dispatched');
    expect((await trail(command.id)).map((event) => event.action)).not.toContain('command.requeued');
    await disconnect(connection);
  });
});
