import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * The limit on the live sessions of one user (OWASP ASVS 7.1.2,
 * BULWARK_MAX_SESSIONS_PER_USER), attacked from the outside:
 * - someone who once had the password keeps sessions open on device after device, so that one of
 *   them outlives the owner's attention: a sign-in beyond the limit ends the oldest, and the audit
 *   log names each one ended and why;
 * - someone with the password alone (the account has a second factor) signs in again and again to
 *   push out the sessions of the person who proved both: sessions waiting for their second factor
 *   count only among themselves.
 */

const crypto = new NodeCryptoPlugin();
const STEP_MS = 30_000;

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

type SessionList = { sessions: Array<{ id: string; current: boolean }> };

async function signIn(): Promise<SessionClient> {
  // Each sign-in a second after the last: "oldest" is then unambiguous.
  world!.clock.advance(1000);
  const client = new SessionClient(world!.server.url);
  expect((await client.login(OWNER.email, OWNER.password)).status).toBe(200);
  return client;
}

async function idOf(client: SessionClient): Promise<string> {
  const listed = await client.json<SessionList>('GET', '/api/auth/sessions');
  expect(listed.status).toBe(200);
  return listed.body.sessions.find((session) => session.current)!.id;
}

const statusOf = async (client: SessionClient) => (await client.send('GET', '/api/auth/session')).status;

/** The session revocations in the instance chain (sign-in events belong to no organization). */
async function revocations() {
  const exported = await world!.cli(
    'audit',
    'export',
    '--org',
    'instance',
    '--action',
    'auth.session_revoked',
  );
  expect(exported.code, exported.stderr).toBe(0);
  return exported.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map(
      (line) =>
        JSON.parse(line) as {
          actor: { id: string };
          target: { type: string; id: string };
          details: { reason: string; newSession: string };
        },
    );
}

describe.each(BACKENDS)('the sessions of one user on %s', (backend) => {
  it('are at most the limit: a sign-in beyond it ends the oldest, audited', async () => {
    world = await startOrgWorld({ BULWARK_MAX_SESSIONS_PER_USER: '3' }, backend);
    const first = world.owner.client;
    const second = await signIn();
    const third = await signIn();
    const [firstId, secondId] = [await idOf(first), await idOf(second)];
    expect((await third.json<SessionList>('GET', '/api/auth/sessions')).body.sessions).toHaveLength(3);

    // Attack: one more device. The first session ends; the three newest work.
    const fourth = await signIn();
    expect(await statusOf(first)).toBe(401);
    for (const client of [second, third, fourth]) expect(await statusOf(client)).toBe(200);
    const listed = (await fourth.json<SessionList>('GET', '/api/auth/sessions')).body.sessions;
    expect(listed.map((session) => session.id)).not.toContain(firstId);
    expect(listed).toHaveLength(3);

    const fifth = await signIn();
    expect(await statusOf(second)).toBe(401);
    for (const client of [third, fourth, fifth]) expect(await statusOf(client)).toBe(200);

    const ended = await revocations();
    expect(ended).toEqual([
      expect.objectContaining({
        actor: expect.objectContaining({ id: world.owner.id }),
        target: expect.objectContaining({ type: 'session', id: firstId }),
        details: { reason: 'session_limit', newSession: await idOf(fourth) },
      }),
      expect.objectContaining({
        target: expect.objectContaining({ type: 'session', id: secondId }),
        details: { reason: 'session_limit', newSession: await idOf(fifth) },
      }),
    ]);
  });

  it('count a sign-in waiting for its second factor only among those waiting', async () => {
    world = await startOrgWorld({ BULWARK_MAX_SESSIONS_PER_USER: '2' }, backend);
    const owner = world.owner.client;
    const codeNow = () => generate({ secret, crypto, epoch: Math.floor(world!.clock.now() / 1000) });
    const started = await owner.json<{ factorId: string; secret: string }>('POST', '/api/auth/mfa/totp', {
      name: 'phone',
    });
    const { factorId, secret } = started.body;
    expect(
      (await owner.send('POST', `/api/auth/mfa/totp/${factorId}/confirm`, { code: await codeNow() })).status,
    ).toBe(200);

    // Attack: the password alone, three times. The owner's full session stays; the oldest waiting one goes.
    const waiting = [await signIn(), await signIn(), await signIn()];
    expect(await statusOf(owner)).toBe(200);
    expect((await owner.send('GET', '/api/orgs/acme/members')).status).toBe(200);
    expect(await Promise.all(waiting.map(statusOf))).toEqual([401, 200, 200]);

    // Proving the second factor makes a full session, and full sessions count among themselves.
    world.clock.advance(STEP_MS);
    expect((await waiting[2]!.send('POST', '/api/auth/mfa/verify', { code: await codeNow() })).status).toBe(
      200,
    );
    expect(await statusOf(owner)).toBe(200);
    world.clock.advance(STEP_MS);
    expect((await waiting[1]!.send('POST', '/api/auth/mfa/verify', { code: await codeNow() })).status).toBe(
      200,
    );
    expect(await statusOf(owner)).toBe(401);
    expect((await waiting[1]!.send('GET', '/api/orgs/acme/members')).status).toBe(200);
    expect((await waiting[2]!.send('GET', '/api/orgs/acme/members')).status).toBe(200);
  });
});
