import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * CRYPTO-2 under concurrency: single-use things consumed by several requests at once. An attacker
 * holding one invitation link tries to turn it into several accounts; an approver replays their
 * approval in parallel to count twice; two approvers race for the last slot, hoping the command is
 * released and sent twice. Exactly one wins each race, on both databases.
 */

const RACERS = 8;

describe.each(BACKENDS)('single use under concurrency on %s', (backend: Backend) => {
  let world: OrgWorld;
  let approvers: Member[];
  let agentId = '';
  let connection: Awaited<ReturnType<typeof handshake>>;

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    approvers = [
      await world.join('first@acme.test', 'operator'),
      await world.join('second@acme.test', 'operator'),
      await world.join('third@acme.test', 'operator'),
    ];
    const token = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const registered = await registerAgent(world.server.url, token.body.token, 'app-1');
    agentId = registered.agentId;
    connection = await handshake(world.server.url, registered.agentId, registered.keys);
    const action = (name: string, risk: string) => ({
      name,
      description: name,
      params: { type: 'object', additionalProperties: false },
      risk,
      timeoutSeconds: 60,
    });
    expect((await reportApp(connection, [action('migrate', 'high'), action('drop', 'critical')])).type).toBe(
      'report_result',
    );
  }, 120_000);

  afterAll(async () => {
    connection?.socket.close();
    await world?.close();
  });

  it('one invitation makes one account, however many accept it at once', async () => {
    const token = await world.invite('invitee@acme.test', 'viewer');
    const answers = await Promise.all(
      Array.from({ length: RACERS }, (_, i) =>
        new SessionClient(world.server.url).json('POST', '/api/invitations/accept', {
          token,
          displayName: `invitee ${i}`,
          password: MEMBER_PASSWORD,
        }),
      ),
    );
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    for (const status of statuses.filter((s) => s !== 200)) expect([404, 409, 410]).toContain(status);
    const members = await world.owner.client.json<{ members: Array<{ email: string }> }>(
      'GET',
      '/api/orgs/acme/members',
    );
    expect(members.body.members.filter((m) => m.email === 'invitee@acme.test')).toHaveLength(1);
    const accepted = await world.owner.client.json<{ events: Array<{ actor: { display: string } }> }>(
      'GET',
      '/api/orgs/acme/audit/events?action=invitation.accepted',
    );
    expect(accepted.body.events.filter((e) => e.actor.display === 'invitee@acme.test')).toHaveLength(1);
  });

  const createCommand = async (action: string) => {
    const created = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/commands', {
      agent: agentId,
      service: 'app',
      action,
      reason: 'race',
      confirm: true,
    });
    expect(created.status).toBe(201);
    return created.body.id;
  };
  const commandOf = (id: string) =>
    world.owner.client.json<{ status: string; approvals: Array<{ userId: string }> }>(
      'GET',
      `/api/orgs/acme/commands/${id}`,
    );
  const dispatchedEvents = async (id: string) =>
    (
      await world.owner.client.json<{ events: unknown[] }>(
        'GET',
        `/api/orgs/acme/audit/events?action=command.dispatched&target=${id}`,
      )
    ).body.events;

  it('one approver counts once, however many times they approve at once', async () => {
    // Critical: two approvals needed. One approver's parallel approvals must not fill both slots.
    const id = await createCommand('drop');
    const answers = await Promise.all(
      Array.from({ length: RACERS }, () =>
        approvers[0]!.client.json('POST', `/api/orgs/acme/commands/${id}/approve`, { comment: 'me again' }),
      ),
    );
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    for (const status of statuses.filter((s) => s !== 200)) expect(status).toBe(409);
    const command = await commandOf(id);
    expect(command.body.status).toBe('awaiting_approval');
    expect(command.body.approvals).toHaveLength(1);
  });

  it('two approvers racing for the last slot release the command once', async () => {
    const id = await createCommand('migrate');
    const answers = await Promise.all(
      approvers.map((approver) =>
        approver.client.json('POST', `/api/orgs/acme/commands/${id}/approve`, { comment: 'go' }),
      ),
    );
    // The first approval releases it; the others find it no longer waiting for approval.
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    for (const answer of answers.filter((a) => a.status !== 200)) {
      expect(answer.status).toBe(409);
      expect(answer.body).toMatchObject({ error: { code: 'command_state' } });
    }
    const command = await commandOf(id);
    expect(command.body.approvals).toHaveLength(1);
    expect(['dispatched', 'queued']).toContain(command.body.status);
    expect(await dispatchedEvents(id)).toHaveLength(command.body.status === 'dispatched' ? 1 : 0);
  });
});
