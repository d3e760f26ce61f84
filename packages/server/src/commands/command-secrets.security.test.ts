import {
  CommandEnvelope,
  commandStatement,
  ed25519PublicKey,
  openSecrets,
  type ServerMessage,
  verifyStatement,
} from '@bulwark/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * Secrets reaching commands (SEC-3), with the agent's side played by hand so every byte it receives
 * can be inspected. Attacks: a member who may run the action but not use secrets getting them
 * anyway; a secret's value landing in the command row, the API or the audit trail; a sealed box
 * readable by anyone but the agent, or swapped without breaking the server's signature; a command
 * delivered after its secret was deleted.
 */

const VALUE = 'pg-Secret-9vKq2Lm7Xz';
let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

type Connection = Awaited<ReturnType<typeof handshake>>;

async function nextOf<T extends ServerMessage['type']>(connection: Connection, type: T) {
  for (;;) {
    const message = await connection.next();
    if (message.type === type) return message as Extract<ServerMessage, { type: T }>;
  }
}

const migrate = {
  name: 'migrate',
  description: 'Runs the migrations',
  params: { type: 'object', additionalProperties: false },
  risk: 'low',
  timeoutSeconds: 60,
  secrets: ['DB_PASSWORD'],
};

describe.each(BACKENDS)('secrets in commands on %s', (backend: Backend) => {
  async function setUp() {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    const secret = await owner.json<{ id: string }>('POST', '/api/orgs/acme/secrets', {
      name: 'DB_PASSWORD',
      value: VALUE,
    });
    const token = await owner.json<{ token: string }>('POST', '/api/orgs/acme/agent-registration-tokens', {});
    const registered = await registerAgent(world.server.url, token.body.token, 'db-1');
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    await reportApp(connection, [migrate, { ...migrate, name: 'seed', secrets: ['SEED_TOKEN'] }]);
    return { secretId: secret.body.id, registered, connection };
  }

  it('seals the declared secret to the agent inside the signed envelope, and keeps it out of everything stored', async () => {
    const { registered, connection } = await setUp();
    const operator = await world!.join('operator@acme.test', 'operator');
    const created = await operator.client.send('POST', '/api/orgs/acme/commands', {
      agent: registered.agentId,
      service: 'app',
      action: 'migrate',
    });
    expect(created.status).toBe(201);
    const createdText = await created.text();
    const delivered = await nextOf(connection, 'command');
    const envelope = CommandEnvelope.parse(delivered.envelope);
    // The box is covered by the signature: swapping it for another breaks the envelope.
    expect(
      verifyStatement(
        ed25519PublicKey(registered.serverSigningKey),
        commandStatement(envelope),
        delivered.signature,
      ),
    ).toBe(true);
    expect(JSON.stringify(delivered)).not.toContain(VALUE);
    expect(openSecrets(registered.keys.encryption.privateKey, envelope.secrets!, envelope)).toEqual({
      DB_PASSWORD: VALUE,
    });

    const command = JSON.parse(createdText) as { id: string };
    const view = await (
      await world!.owner.client.send('GET', `/api/orgs/acme/commands/${command.id}`)
    ).text();
    const audit = await (
      await world!.owner.client.send('GET', '/api/orgs/acme/audit/events?limit=500')
    ).text();
    for (const text of [createdText, view, audit]) expect(text).not.toContain(VALUE);
    expect(audit).toContain('"action":"secret.used"');
  });

  it('refuses a requester without secrets:use, and an action needing a secret the organization lacks', async () => {
    const { registered } = await setUp();
    // A custom role that may run actions on agents, but not hand them secrets.
    const role = await world!.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'runner',
      permissions: ['agents:read', 'services:read', 'commands:read', 'commands:create'],
    });
    const runner = await world!.join('runner@acme.test', 'viewer');
    await world!.owner.client.json('POST', '/api/orgs/acme/role-bindings', {
      role: role.body.id,
      subject: { type: 'user', id: runner.id },
    });
    const refused = await runner.client.json<{ error: { code: string } }>('POST', '/api/orgs/acme/commands', {
      agent: registered.agentId,
      service: 'app',
      action: 'migrate',
    });
    expect([refused.status, refused.body.error.code]).toEqual([403, 'forbidden']);

    const missing = await world!.owner.client.json<{ error: { code: string; message: string } }>(
      'POST',
      '/api/orgs/acme/commands',
      { agent: registered.agentId, service: 'app', action: 'seed' },
    );
    expect([missing.status, missing.body.error.code]).toEqual([409, 'secret_missing']);
    expect(missing.body.error.message).toContain('SEED_TOKEN');
    const list = await world!.owner.client.json<{ commands: unknown[] }>('GET', '/api/orgs/acme/commands');
    expect(list.body.commands).toEqual([]);
  });

  it('fails a waiting command whose secret was deleted, instead of delivering it without', async () => {
    const { registered, connection, secretId } = await setUp();
    connection.socket.close();
    await connection.closed;
    const created = await world!.owner.client.json<{ id: string; status: string }>(
      'POST',
      '/api/orgs/acme/commands',
      { agent: registered.agentId, service: 'app', action: 'migrate' },
    );
    expect(created.body.status).toBe('queued');
    expect((await world!.owner.client.send('DELETE', `/api/orgs/acme/secrets/${secretId}`)).status).toBe(200);

    const again = await handshake(world!.server.url, registered.agentId, registered.keys);
    await reportApp(again, [migrate]);
    const after = async () =>
      (
        await world!.owner.client.json<{ status: string; message: string }>(
          'GET',
          `/api/orgs/acme/commands/${created.body.id}`,
        )
      ).body;
    await expect.poll(async () => (await after()).status).toBe('failed');
    expect((await after()).message).toContain('has been deleted');
    again.socket.close();
  });
});
