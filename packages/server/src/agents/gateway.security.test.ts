import { ed25519PublicKey, serverProofStatement, verifyStatement } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentKeys, handshake, openAgentSocket, registerAgent } from '../test-support/agents.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * The agent gateway and registration against attackers, over the real HTTP API and real WebSockets.
 * The client here plays the attacker (or, for contrast, an honest agent) by hand, message by message.
 *
 * Attacks: connecting as an agent without its private key (a bad signature, an unknown agent id);
 * replaying a proof captured from an earlier connection; a disabled or revoked agent coming back;
 * registering with an expired, revoked or already used token, or two registrations racing on one
 * single-use token; taking over an existing agent by registering its key again.
 */

describe.each(BACKENDS)('the agent gateway on %s', (backend: Backend) => {
  let world: OrgWorld;
  const slug = 'acme';

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
  });
  afterAll(() => world?.close());

  async function newToken(body: Record<string, unknown> = {}) {
    const { status, body: created } = await world.owner.client.json<{ id: string; token: string }>(
      'POST',
      `/api/orgs/${slug}/agent-registration-tokens`,
      body,
    );
    expect(status).toBe(201);
    return created;
  }

  async function auditOf(action: string) {
    const page = await world.owner.client.json<{
      events: Array<{ details: Record<string, unknown>; target: { id: string } | null }>;
    }>('GET', `/api/orgs/${slug}/audit/events?limit=500&action=${action}`);
    return page.body.events;
  }

  describe('agent registration (AGT-1, AGT-2)', () => {
    it('registers with a token, pins the server key that then signs every challenge, and lists the agent online', async () => {
      const { token } = await newToken({ labels: { env: 'prod' } });
      const agent = await registerAgent(world.server.url, token, 'web-1');
      expect(agent.labels).toEqual({ env: 'prod' });
      const connection = await handshake(world.server.url, agent.agentId, agent.keys);
      expect(connection.answer).toMatchObject({
        type: 'welcome',
        agent: { id: agent.agentId, labels: { env: 'prod' } },
      });
      // The challenge was signed by the key the agent pinned at registration (AGT-6).
      expect(
        verifyStatement(
          ed25519PublicKey(agent.serverSigningKey),
          serverProofStatement(connection.nonces),
          connection.challenge.type === 'challenge' ? connection.challenge.serverSignature : '',
        ),
      ).toBe(true);
      const listed = await world.owner.client.json<{ agents: Array<{ id: string; status: string }> }>(
        'GET',
        `/api/orgs/${slug}/agents?selector=env%3Dprod`,
      );
      expect(listed.body.agents).toContainEqual(
        expect.objectContaining({ id: agent.agentId, status: 'online' }),
      );
      connection.socket.close();
      await connection.closed;
    });

    it('makes tokens valid for an hour unless asked otherwise, thirty days at most, shown only when created', async () => {
      const created = await world.owner.client.json<{ id: string; token: string; expiresAt: string }>(
        'POST',
        `/api/orgs/${slug}/agent-registration-tokens`,
        {},
      );
      expect(Date.parse(created.body.expiresAt) - world.clock.now()).toBe(60 * 60_000);
      const tooLong = await world.owner.client.json('POST', `/api/orgs/${slug}/agent-registration-tokens`, {
        expiresInMinutes: 30 * 24 * 60 + 1,
      });
      expect(tooLong.status).toBe(422);
      const listed = await world.owner.client.json<{ tokens: Array<Record<string, unknown>> }>(
        'GET',
        `/api/orgs/${slug}/agent-registration-tokens`,
      );
      const shown = listed.body.tokens.find((t) => t.id === created.body.id);
      expect(shown).toMatchObject({ status: 'active', uses: 0, usesAllowed: 1 });
      expect(JSON.stringify(listed.body)).not.toContain(created.body.token);
    });

    it('lets exactly one of two racing registrations use a single-use token', async () => {
      const { token } = await newToken();
      const outcomes = await Promise.allSettled([
        registerAgent(world.server.url, token, 'race-a'),
        registerAgent(world.server.url, token, 'race-b'),
      ]);
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
      const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
      expect(String(refused.reason)).toContain('401');
      expect(String(refused.reason)).toContain('registration_token_invalid');
    });

    it('refuses a used, revoked or expired token alike, and audits why', async () => {
      const used = await newToken();
      await registerAgent(world.server.url, used.token, 'first');
      await expect(registerAgent(world.server.url, used.token, 'second')).rejects.toThrow(
        /401.*registration_token_invalid/,
      );

      const revoked = await newToken();
      await world.owner.client.json('DELETE', `/api/orgs/${slug}/agent-registration-tokens/${revoked.id}`);
      await expect(registerAgent(world.server.url, revoked.token, 'late')).rejects.toThrow(
        /401.*registration_token_invalid/,
      );

      const expiring = await newToken({ expiresInMinutes: 5 });
      world.clock.advance(5 * 60_000);
      await expect(registerAgent(world.server.url, expiring.token, 'slow')).rejects.toThrow(
        /401.*registration_token_invalid/,
      );

      const reasons = (await auditOf('agent.registration_refused')).map((e) => [
        e.details.registrationTokenId,
        e.details.reason,
      ]);
      expect(reasons).toEqual(
        expect.arrayContaining([
          [used.id, 'token_used'],
          [revoked.id, 'token_revoked'],
          [expiring.id, 'token_expired'],
        ]),
      );
    });

    it('never lets a registration take over an existing agent: the same key is refused, a new registration is a new id', async () => {
      const { token } = await newToken({ uses: 3 });
      const original = await registerAgent(world.server.url, token, 'db-1');
      await expect(registerAgent(world.server.url, token, 'db-1', original.keys)).rejects.toThrow(
        /409.*signing_key_in_use/,
      );
      const again = await registerAgent(world.server.url, token, 'db-1');
      expect(again.agentId).not.toBe(original.agentId);
      // The original still answers only to its own key.
      const impostor = await handshake(
        world.server.url,
        original.agentId,
        again.keys,
        again.keys.signing.privateKey,
      );
      expect(impostor.answer).toMatchObject({ type: 'refused', code: 'authentication_failed' });
    });
  });

  describe('agent connections (AGT-2, AGT-3, AGT-4)', () => {
    it('refuses a proof signed with another key, and an agent id that does not exist, the same way; both audited', async () => {
      const { token } = await newToken();
      const agent = await registerAgent(world.server.url, token, 'victim');
      const attacker = agentKeys();
      const forged = await handshake(
        world.server.url,
        agent.agentId,
        agent.keys,
        attacker.signing.privateKey,
      );
      expect(forged.answer).toMatchObject({ type: 'refused', code: 'authentication_failed' });
      expect(await forged.closed).toBe(4401);

      const unknown = await handshake(world.server.url, 'agt_01J00000000000000000000000', attacker);
      expect(unknown.answer).toEqual(forged.answer);

      const refused = await auditOf('agent.connection_refused');
      expect(refused).toContainEqual(
        expect.objectContaining({
          target: expect.objectContaining({ id: agent.agentId }),
          details: { reason: 'bad_signature' },
        }),
      );
    });

    it('refuses a proof replayed from an earlier connection', async () => {
      const { token } = await newToken();
      const agent = await registerAgent(world.server.url, token, 'replayed');
      const honest = await handshake(world.server.url, agent.agentId, agent.keys);
      expect(honest.answer.type).toBe('welcome');
      honest.socket.close();
      await honest.closed;

      // The attacker recorded the hello and the proof, and plays them back on a new connection.
      const replay = await openAgentSocket(world.server.url);
      replay.socket.send(
        JSON.stringify({
          v: 1,
          type: 'hello',
          agentId: agent.agentId,
          agentNonce: honest.nonces.agentNonce,
          agentVersion: 'test',
        }),
      );
      const challenge = await replay.next();
      expect(challenge.type).toBe('challenge');
      replay.socket.send(JSON.stringify(honest.proof));
      expect(await replay.next()).toMatchObject({ type: 'refused', code: 'authentication_failed' });
      const refused = (await auditOf('agent.connection_refused')).filter(
        (e) => e.target?.id === agent.agentId,
      );
      expect(refused.map((e) => e.details.reason)).toEqual(['bad_signature']);
    });

    it('refuses anything but the handshake before the agent has proved itself', async () => {
      const connection = await openAgentSocket(world.server.url);
      connection.socket.send(JSON.stringify({ v: 1, type: 'heartbeat' }));
      expect(await connection.next()).toMatchObject({ type: 'refused', code: 'handshake_expected' });
      const garbage = await openAgentSocket(world.server.url);
      garbage.socket.send('{"v":1,"type":"hello","agentId":"agt_x"');
      expect(await garbage.next()).toMatchObject({ type: 'refused', code: 'invalid_message' });
    });

    it('closes a disabled agent and refuses it until enabled; a revoked agent never comes back', async () => {
      const { token } = await newToken();
      const agent = await registerAgent(world.server.url, token, 'worker');
      const live = await handshake(world.server.url, agent.agentId, agent.keys);
      expect(live.answer.type).toBe('welcome');

      await world.owner.client.json('POST', `/api/orgs/${slug}/agents/${agent.agentId}/disable`);
      expect(await live.next()).toMatchObject({ type: 'refused', code: 'agent_disabled' });
      await live.closed;
      expect((await handshake(world.server.url, agent.agentId, agent.keys)).answer).toMatchObject({
        type: 'refused',
        code: 'agent_disabled',
      });

      await world.owner.client.json('POST', `/api/orgs/${slug}/agents/${agent.agentId}/enable`);
      const back = await handshake(world.server.url, agent.agentId, agent.keys);
      expect(back.answer.type).toBe('welcome');

      const revoked = await world.owner.client.json(
        'POST',
        `/api/orgs/${slug}/agents/${agent.agentId}/revoke`,
      );
      expect(revoked.status).toBe(200);
      expect(await back.next()).toMatchObject({ type: 'refused', code: 'agent_revoked' });
      expect((await handshake(world.server.url, agent.agentId, agent.keys)).answer).toMatchObject({
        type: 'refused',
        code: 'agent_revoked',
      });
      const enable = await world.owner.client.json(
        'POST',
        `/api/orgs/${slug}/agents/${agent.agentId}/enable`,
      );
      expect(enable.status).toBe(409);

      const reasons = (await auditOf('agent.connection_refused'))
        .filter((e) => e.target?.id === agent.agentId)
        .map((e) => e.details.reason);
      expect(reasons).toEqual(expect.arrayContaining(['agent_disabled', 'agent_revoked']));
      for (const action of ['agent.disabled', 'agent.enabled', 'agent.revoked']) {
        const events = (await auditOf(action)).filter((e) => e.target?.id === agent.agentId);
        expect(events, action).toHaveLength(1);
      }
    });
  });
});
