import type { ServerMessage } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Member, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import type { SessionClient } from '../test-support/session-client.js';
import { collectEvents as collect } from '../test-support/sse.js';

/**
 * The organization's live stream can focus on one command (the console's command page), and then
 * carries that command's stored and live output too. Attacks on the focus, each of which must yield
 * no byte of the command's output:
 * - a member trusted only with the staging agents focuses a command that runs on a production agent;
 * - a member of two organizations opens the stream of the one where they may read commands,
 *   focusing a command of the other;
 * - a member who may see the organization but not read commands focuses one;
 * - a member takes a focused ticket while allowed and opens it after their scope was taken away, or
 *   keeps a focused stream open past that moment;
 * - a ticket taken for the plain stream is presented with a focus added.
 * A focus gets exactly what the command's own stream would: the same check, when the ticket is
 * issued, when the stream opens, and again before live output is sent.
 */

type Connection = Awaited<ReturnType<typeof handshake>>;
type Refusal = { error: { code: string; message: string } };

const focusQuery = (command: string | undefined) =>
  command === undefined ? '' : `command=${encodeURIComponent(command)}`;

/** Asks for a ticket for the stream, focused on `command` if given. */
const askTicket = (client: SessionClient, slug: string, command?: string) =>
  client.send(
    'POST',
    `/api/orgs/${slug}/events/tickets${command === undefined ? '' : `?${focusQuery(command)}`}`,
  );

async function issue(client: SessionClient, slug: string, command?: string): Promise<string> {
  const answer = await askTicket(client, slug, command);
  expect(answer.status).toBe(201);
  return ((await answer.json()) as { ticket: string }).ticket;
}

const open = (client: SessionClient, slug: string, ticket: string, command?: string) =>
  client.send(
    'GET',
    `/api/orgs/${slug}/events?ticket=${encodeURIComponent(ticket)}${command === undefined ? '' : `&${focusQuery(command)}`}`,
  );

/** A refused answer: its status and code, and the whole body, which must carry nothing of the command. */
async function refusal(response: Response) {
  const body = await response.text();
  return { status: response.status, code: (JSON.parse(body) as Refusal).error.code, body };
}

const ping = {
  name: 'ping',
  description: 'low action',
  params: { type: 'object', additionalProperties: false },
  risk: 'low',
  timeoutSeconds: 60,
  secrets: [],
};

describe.each(BACKENDS)('focusing the organization stream on one command, on %s', (backend) => {
  let world: OrgWorld;
  let scoped: Member;
  let blind: Member;
  let bindingId = '';
  const agents: Record<'staging' | 'prod' | 'beta', { id: string; connection: Connection }> = {} as never;
  const commands = { staging: '', prod: '', beta: '' };
  const streams: Array<ReturnType<typeof collect>> = [];
  const follow = (response: Response) => {
    const stream = collect(response);
    streams.push(stream);
    return stream;
  };

  async function agent(slug: string, name: string, labels: Record<string, string>) {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      `/api/orgs/${slug}/agent-registration-tokens`,
      { labels },
    );
    const registered = await registerAgent(world.server.url, body.token, name);
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    expect(connection.answer.type).toBe('welcome');
    expect((await reportApp(connection, [ping])).type).toBe('report_result');
    return { id: registered.agentId, connection };
  }

  /** Sends a message as the agent would. */
  const tell = (connection: Connection, message: Record<string, unknown>) =>
    connection.socket.send(JSON.stringify({ v: 1, ...message }));

  /** A command on `on`, delivered and started, with `output` already stored. */
  async function running(slug: string, on: keyof typeof agents, output: string) {
    const created = await world.owner.client.json<{ id: string }>('POST', `/api/orgs/${slug}/commands`, {
      agent: agents[on].id,
      service: 'app',
      action: 'ping',
      confirm: true,
    });
    expect(created.status).toBe(201);
    const id = created.body.id;
    for (;;) {
      const message: ServerMessage = await agents[on].connection.next();
      if (message.type === 'command' && message.envelope.commandId === id) break;
    }
    tell(agents[on].connection, { type: 'command_started', commandId: id });
    tell(agents[on].connection, {
      type: 'command_output',
      commandId: id,
      seq: 0,
      stream: 'stdout',
      data: output,
    });
    // Stored once the owner's own read shows it.
    for (;;) {
      const stored = await world.owner.client.json<{ chunks: unknown[] }>(
        'GET',
        `/api/orgs/${slug}/commands/${id}/output`,
      );
      if (stored.body.chunks.length > 0) break;
    }
    return id;
  }

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    await world.createOrg('Beta');
    const minimal = await owner.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'minimal',
      permissions: ['org:read'],
    });
    scoped = await world.join('scoped@example.test', minimal.body.id);
    blind = await world.join('blind@example.test', minimal.body.id);
    const staging = await owner.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'staging-watch',
      permissions: ['agents:read', 'commands:read'],
    });
    const bound = await owner.json<{ id: string }>('POST', '/api/orgs/acme/role-bindings', {
      role: staging.body.id,
      subject: { type: 'user', id: scoped.id },
      selector: 'env=staging',
    });
    expect(bound.status).toBe(201);
    bindingId = bound.body.id;
    agents.staging = await agent('acme', 'staging-1', { env: 'staging' });
    agents.prod = await agent('acme', 'prod-1', { env: 'prod' });
    agents.beta = await agent('beta', 'beta-1', {});
    commands.staging = await running('acme', 'staging', 'staging stored line\n');
    commands.prod = await running('acme', 'prod', 'PROD-ONLY output\n');
    commands.beta = await running('beta', 'beta', 'BETA-ONLY output\n');
  }, 90_000);
  afterAll(async () => {
    // The server's shutdown ends every reader's stream, as in org-events.security.test.ts.
    await world?.close();
    for (const stream of streams) await stream.close();
  });

  it('sends a reader allowed the command its stored output, then its live output and end, on the one stream', async () => {
    const ticket = await issue(scoped.client, 'acme', commands.staging);
    const stream = follow(await open(scoped.client, 'acme', ticket, commands.staging));
    await stream.until((e) => e.name === 'status');
    expect(stream.events.map((e) => e.name)).toEqual(['ready', 'output', 'status']);
    expect(stream.events[1]!.data).toMatchObject({
      commandId: commands.staging,
      seq: 0,
      data: 'staging stored line\n',
    });
    expect(stream.events[2]!.data).toEqual({ commandId: commands.staging, status: 'running' });

    const connection = agents.staging.connection;
    tell(connection, {
      type: 'command_output',
      commandId: commands.staging,
      seq: 1,
      stream: 'stdout',
      data: 'staging live line\n',
    });
    tell(connection, {
      type: 'command_finished',
      commandId: commands.staging,
      outcome: 'succeeded',
      exitCode: 0,
      message: '',
    });
    await stream.until((e) => e.name === 'status' && e.data.status === 'succeeded');
    expect(stream.events).toContainEqual({
      name: 'output',
      data: expect.objectContaining({ commandId: commands.staging, seq: 1, data: 'staging live line\n' }),
    });
    // The organization's own events come on the same stream.
    await stream.until((e) => e.name === 'command' && e.data.id === commands.staging);
  });

  it('refuses a focus on a command outside the reader’s label scope, and a plain ticket widened to it', async () => {
    // The staging watcher asks to follow what runs on production.
    const refused = await refusal(await askTicket(scoped.client, 'acme', commands.prod));
    expect(refused).toMatchObject({ status: 403, code: 'forbidden' });
    expect(refused.body).not.toContain('PROD-ONLY');
    // A ticket for the plain stream, presented with a focus added, opens nothing: not on production
    // (refused as the command itself is), nor even on a staging command the watcher may read (the
    // ticket was not issued for that focus).
    const plain = await issue(scoped.client, 'acme');
    const widened = await refusal(await open(scoped.client, 'acme', plain, commands.prod));
    expect(widened).toMatchObject({ status: 403, code: 'forbidden' });
    expect(widened.body).not.toContain('PROD-ONLY');
    const unbound = await refusal(await open(scoped.client, 'acme', plain, commands.staging));
    expect(unbound).toMatchObject({ status: 401, code: 'live_ticket_invalid' });
    expect(unbound.body).not.toContain('stored line');
  });

  it('refuses a focus on another organization’s command as if it did not exist', async () => {
    // The owner of both, reading beta's stream, focuses a command of acme; and the reverse.
    for (const [slug, command] of [
      ['beta', commands.staging],
      ['acme', commands.beta],
    ] as const) {
      const refused = await refusal(await askTicket(world.owner.client, slug, command));
      expect(refused).toMatchObject({ status: 404, code: 'not_found' });
      expect(refused.body).not.toMatch(/stored line|BETA-ONLY/);
    }
    // A member of acme only, focusing beta's command.
    const refused = await refusal(await askTicket(scoped.client, 'acme', commands.beta));
    expect(refused).toMatchObject({ status: 404, code: 'not_found' });
  });

  it('refuses a focus to a member who may see the organization but not read commands', async () => {
    const refused = await refusal(await askTicket(blind.client, 'acme', commands.staging));
    expect(refused).toMatchObject({ status: 403, code: 'forbidden' });
    expect(refused.body).not.toContain('stored line');
  });

  it('refuses a focus that is not a command id', async () => {
    for (const bad of ['cmd_../../agents', agents.staging.id, 'x'.repeat(300)]) {
      const refused = await refusal(await askTicket(scoped.client, 'acme', bad));
      expect(refused).toMatchObject({ status: 422, code: 'validation_failed' });
    }
  });

  it('checks the focus again as the stream opens and before live output: a scope taken away ends it', async () => {
    const command = await running('acme', 'staging', 'second stored line\n');
    const kept = await issue(scoped.client, 'acme', command);
    const stream = follow(
      await open(scoped.client, 'acme', await issue(scoped.client, 'acme', command), command),
    );
    await stream.until((e) => e.name === 'status' && e.data.commandId === command);

    // The member's binding on the staging agents goes.
    expect(
      (await world.owner.client.json('DELETE', `/api/orgs/acme/role-bindings/${bindingId}`)).status,
    ).toBe(200);
    // The ticket taken while they were allowed opens nothing now.
    const late = await refusal(await open(scoped.client, 'acme', kept, command));
    expect(late).toMatchObject({ status: 403, code: 'forbidden' });
    expect(late.body).not.toContain('stored line');
    // The stream opened before sends no further output of the command: it says the focus ended.
    tell(agents.staging.connection, {
      type: 'command_output',
      commandId: command,
      seq: 1,
      stream: 'stdout',
      data: 'AFTER-REVOCATION output\n',
    });
    const next = await stream.until(
      (e) => e.name === 'focus_ended' || (e.name === 'output' && e.data.seq === 1),
    );
    expect(next).toEqual({
      name: 'focus_ended',
      data: { commandId: command, message: 'Your access to this command has ended.' },
    });
    expect(JSON.stringify(stream.events)).not.toContain('AFTER-REVOCATION');
  });
});
