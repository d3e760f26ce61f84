import { randomBytes } from 'node:crypto';
import { agentProofStatement, signStatement } from '@bulwark/protocol';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { agentKeys, handshake, openAgentSocket, registerAgent } from '../test-support/agents.js';
import { postgresUrl } from '../test-support/databases.js';
import { type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * A proof that outlives its handshake. The gateway gives an agent 10 s from the upgrade to prove
 * itself, then closes the socket. When the database is slow (a reconnect storm, a failover), the
 * lookup behind the proof can finish after that: the agent must not then be welcomed on the closed
 * socket, which would show it online with nobody connected, send its commands nowhere, and replace
 * its next, live connection. The database is slowed here for this one agent's row only, by a
 * restrictive row-level-security policy that sleeps (the server's role is under the policies).
 */
describe.skipIf(!postgresUrl())('an agent proof checked after the handshake deadline', () => {
  let world: OrgWorld;
  let admin: pg.Client;

  beforeAll(async () => {
    world = await startOrgWorld({}, 'postgresql');
    const database = world.server.config.database;
    if (database.kind !== 'postgres') throw new Error('expected PostgreSQL');
    const url = new URL(postgresUrl()!);
    url.pathname = new URL(database.url).pathname;
    admin = new pg.Client({ connectionString: url.toString() });
    await admin.connect();
  }, 60_000);

  afterAll(async () => {
    await admin?.end();
    await world?.close();
  });

  it('welcomes nobody on the closed socket, and the agent connects again as usual', async () => {
    const { body } = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const keys = agentKeys();
    const agent = await registerAgent(world.server.url, body.token, 'slow-db', keys);
    await admin.query(
      `create policy slow_proof on agents as restrictive
        using (id <> '${agent.agentId}' or pg_sleep(12)::text = '')`,
    );

    const connection = await openAgentSocket(world.server.url);
    const agentNonce = randomBytes(32).toString('base64url');
    connection.socket.send(
      JSON.stringify({ v: 1, type: 'hello', agentId: agent.agentId, agentNonce, agentVersion: 'test' }),
    );
    const challenge = await connection.next();
    if (challenge.type !== 'challenge') throw new Error(`expected a challenge, got ${challenge.type}`);
    const nonces = { agentId: agent.agentId, agentNonce, serverNonce: challenge.serverNonce };
    connection.socket.send(
      JSON.stringify({
        v: 1,
        type: 'proof',
        signature: signStatement(keys.signing.privateKey, agentProofStatement(nonces)),
      }),
    );
    // The deadline ends the connection while the proof's lookup sleeps.
    expect(await connection.closed).toBe(1008);
    // Dropping the policy waits for that lookup to finish; then the proof is judged, too late.
    await admin.query('drop policy slow_proof on agents');
    await vi.waitFor(
      () => expect(world.server.logs.text).toContain('agent proof checked after the handshake ended'),
      { timeout: 60_000, interval: 100 },
    );
    const shown = await world.owner.client.json<{ status: string; connection: unknown }>(
      'GET',
      `/api/orgs/acme/agents/${agent.agentId}`,
    );
    expect(shown.body).toMatchObject({ status: 'offline', connection: null });

    const again = await handshake(world.server.url, agent.agentId, keys);
    expect(again.answer.type).toBe('welcome');
    again.socket.close();
  }, 120_000);
});
