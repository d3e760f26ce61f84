import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { redisUrl } from '../test-support/databases.js';
import { BACKENDS, type Backend, OWNER } from '../test-support/org-world.js';
import { deadPort } from '../test-support/ports.js';
import { startTestServer, type TestServer } from '../test-support/server.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * Attack: online password guessing (AUTH-6). An attacker tries passwords against one account until
 * one works; the account locks after the configured failures, even the right password is then
 * refused until the window ends, and the lockout is audited. With several instances the count lives
 * in Redis — and when Redis is down, sign-in must refuse (503) rather than let unlimited guesses
 * through (invariant 9).
 */

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

describe.each(BACKENDS)('sign-in limits on %s', (backend: Backend) => {
  async function start(env: Record<string, string>): Promise<TestServer> {
    const server = await startTestServer(
      {
        BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
        BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
        BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000',
        // Few failures, so no progressive delay is reached before the lock (it starts after the third).
        BULWARK_LOGIN_ACCOUNT_FAILURES: '3',
        ...env,
      },
      { backend },
    );
    servers.push(server);
    return server;
  }

  const attempt = (server: TestServer, email: string, password: string) =>
    new SessionClient(server.url).json<{ error?: { code: string } }>('POST', '/api/auth/login', {
      email,
      password,
    });

  async function lockoutEvents(server: TestServer) {
    const database = openDatabase(server.config);
    try {
      return await database.db
        .selectFrom('audit_events')
        .select(['details', 'outcome', 'ip'])
        .where('action', '=', 'auth.locked_out')
        .orderBy('seq')
        .execute();
    } finally {
      await database.close();
    }
  }

  describe('lockout', () => {
    it('locks an account after its failures, refuses even the right password, and audits the lockout once', async () => {
      const server = await start({});
      for (let i = 0; i < 3; i++)
        expect((await attempt(server, OWNER.email, `wrong-guess-${i}`)).status).toBe(401);
      const locked = await new SessionClient(server.url).send('POST', '/api/auth/login', OWNER);
      expect(locked.status).toBe(429);
      expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(((await locked.json()) as { error: { code: string } }).error.code).toBe('too_many_attempts');
      // An address that does not exist locks the same way: the lock says nothing about existence.
      for (let i = 0; i < 4; i++) await attempt(server, 'nobody@acme.test', `wrong-${i}`);
      expect((await attempt(server, 'nobody@acme.test', 'x')).body.error?.code).toBe('too_many_attempts');
      const events = await lockoutEvents(server);
      expect(events).toHaveLength(2);
      // The account's lockout: its address is stored sealed under the account's PII key (DATA-2).
      expect(events[0]).toMatchObject({ outcome: 'denied', ip: expect.stringMatching(/^enc1\.pik_/) });
      expect(JSON.parse(events[0]!.details)).toMatchObject({ scope: 'account' });
    });

    it('counts failed re-authentications too, so a stolen session cannot guess the password', async () => {
      const server = await start({});
      const thief = new SessionClient(server.url);
      expect((await thief.login(OWNER.email, OWNER.password)).status).toBe(200);
      for (let i = 0; i < 3; i++)
        expect((await thief.json('POST', '/api/auth/reauth', { password: `guess-${i}` })).status).toBe(422);
      const locked = await thief.json<{ error?: { code: string } }>('POST', '/api/auth/reauth', {
        password: OWNER.password,
      });
      expect(locked).toMatchObject({ status: 429, body: { error: { code: 'too_many_attempts' } } });
      expect(await lockoutEvents(server)).toHaveLength(1);
    });

    it('locks an address that sprays many accounts', async () => {
      const server = await start({ BULWARK_LOGIN_IP_FAILURES: '5' });
      for (let i = 0; i < 5; i++)
        expect((await attempt(server, `user${i}@acme.test`, 'guess')).status).toBe(401);
      expect((await attempt(server, OWNER.email, OWNER.password)).status).toBe(429);
    });

    it.runIf(redisUrl())('shares the count between instances through Redis', async () => {
      const env = { BULWARK_REDIS_URL: redisUrl()!, BULWARK_LOGIN_IP_FAILURES: '100000' };
      const [first, second] = [await start(env), await start(env)];
      // A fresh account name per run: the Redis of the machine outlives the test.
      const target = `target-${randomUUID()}@acme.test`;
      await attempt(first, target, 'guess-1');
      await attempt(second, target, 'guess-2');
      await attempt(first, target, 'guess-3');
      expect((await attempt(second, target, 'guess-4')).body.error?.code).toBe('too_many_attempts');
    });

    it('fails closed with 503 when Redis is configured but does not answer', async () => {
      const server = await start({ BULWARK_REDIS_URL: `redis://127.0.0.1:${await deadPort()}` });
      const response = await attempt(server, OWNER.email, OWNER.password);
      expect(response).toMatchObject({ status: 503, body: { error: { code: 'auth_unavailable' } } });
    });
  });
});
