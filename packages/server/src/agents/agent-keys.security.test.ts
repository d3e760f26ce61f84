import { rawPublicKey } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openPostgres, openSqlite } from '../db/database.js';
import { agentKeys, handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * Attack: someone who can write the database but not read the master key puts public keys of their
 * own into an agent's row. With its signing key swapped they would connect as the agent and be sent
 * its commands; with its encryption key swapped, the secrets of its next command would be sealed to
 * them. The server sealed the keys the agent registered: the handshake refuses the swapped signing
 * key, and a command whose agent's encryption key was swapped ends failed before any secret is sealed.
 */

const migrate = {
  name: 'migrate',
  description: 'Runs the migrations',
  params: { type: 'object', additionalProperties: false },
  risk: 'low',
  timeoutSeconds: 60,
  secrets: ['DB_PASSWORD'],
};

describe.each(BACKENDS)("an agent's keys swapped in the database on %s", (backend: Backend) => {
  let world: OrgWorld;
  let attacker: Database;

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    const config = world.server.config.database;
    attacker =
      config.kind === 'sqlite'
        ? openSqlite({ file: config.file, busyTimeoutMs: 10_000 })
        : openPostgres({ url: config.url, poolMax: 2 });
    const secret = await world.owner.client.json('POST', '/api/orgs/acme/secrets', {
      name: 'DB_PASSWORD',
      value: 'never-to-the-attacker',
    });
    expect(secret.status).toBe(201);
  }, 60_000);

  afterAll(async () => {
    await attacker?.db.destroy();
    await world?.close();
  });

  const register = async (name: string) => {
    const token = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    return registerAgent(world.server.url, token.body.token, name);
  };

  it('refuses a handshake proved with a signing key written into the row', async () => {
    const registered = await register('web-1');
    const theirs = agentKeys();
    await attacker.db
      .updateTable('agents')
      .set({ signing_key: rawPublicKey(theirs.signing.publicKey) })
      .where('id', '=', registered.agentId)
      .execute();
    const connection = await handshake(world.server.url, registered.agentId, theirs);
    expect(connection.answer).toMatchObject({ type: 'refused', code: 'authentication_failed' });
    const refusals = await world.owner.client.json<{ events: Array<{ details: { reason: string } }> }>(
      'GET',
      '/api/orgs/acme/audit/events?action=agent.connection_refused',
    );
    expect(refusals.body.events.map((e) => e.details.reason)).toContain('key_seal_mismatch');
  });

  it('seals no secret to an encryption key written into the row', async () => {
    const registered = await register('db-1');
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    expect(connection.answer.type).toBe('welcome');
    expect((await reportApp(connection, [migrate])).type).toBe('report_result');
    const theirs = agentKeys();
    await attacker.db
      .updateTable('agents')
      .set({ encryption_key: rawPublicKey(theirs.encryption.publicKey) })
      .where('id', '=', registered.agentId)
      .execute();
    const created = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/commands', {
      agent: registered.agentId,
      service: 'app',
      action: 'migrate',
    });
    expect(created.status).toBe(201);
    const command = await world.owner.client.json<{ status: string; message: string }>(
      'GET',
      `/api/orgs/acme/commands/${created.body.id}`,
    );
    expect(command.body.status).toBe('failed');
    expect(command.body.message).toContain('agent:encryptionKey');
    // Ended by the integrity check before anything was sealed or sent, and reported as such.
    const events = await world.owner.client.json<{ events: Array<{ details: { mismatched: string[] } }> }>(
      'GET',
      `/api/orgs/acme/audit/events?action=command.integrity_failed&target=${created.body.id}`,
    );
    expect(events.body.events[0]?.details.mismatched).toEqual(['agent:encryptionKey']);
    connection.socket.close();
  });
});
