import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  type Backend,
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  OWNER,
  startOrgWorld,
} from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * An organization's auditor sees its members' account security events (sign-ins, failed sign-ins,
 * lockouts, CSRF refusals, factor changes), which are recorded in the instance's chain, not the
 * organization's.
 *
 * Attacks this must not open: an auditor of organization A reading the sign-ins of people who are
 * not A's members (another organization's staff, a member A removed, a member before they joined
 * A); reading anything the instance chain holds beyond those account events; or learning, through a
 * member who also belongs to organization B, anything about B (its name, its events, its ids).
 */

interface Event {
  action: string;
  chain: 'org' | 'instance';
  actor: { id: string | null; display: string | null; email: string | null };
  target: { id: string | null };
  details: Record<string, unknown>;
  ts: string;
}

describe.each(BACKENDS)("members' account events for org auditors on %s", (backend: Backend) => {
  let world: OrgWorld;
  let auditor: Member;
  let betaAuditor: Member;
  let stranger: Member;
  let leaver: Member;
  let carol: Member;
  let carolJoinedAt: number;
  let dana: Member;

  /** Invites `email` to beta and accepts with a new account. */
  async function joinBeta(email: string, role: string): Promise<Member> {
    const created = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/beta/invitations', {
      email,
      role,
    });
    expect(created.status).toBe(201);
    const client = new SessionClient(world.server.url);
    const accepted = await client.json<{ user: { id: string } }>('POST', '/api/invitations/accept', {
      token: created.body.token,
      displayName: email.split('@')[0],
      password: MEMBER_PASSWORD,
    });
    expect(accepted.status).toBe(200);
    return { id: accepted.body.user.id, email, client };
  }

  const events = async (client: Member['client'], query = '') => {
    const answer = await client.json<{ events: Event[] }>(
      'GET',
      `/api/orgs/acme/audit/events?limit=500${query}`,
    );
    expect(answer.status).toBe(200);
    return answer.body.events;
  };
  const instanceEvents = async (query = '') =>
    (await events(auditor.client, query)).filter((e) => e.chain === 'instance');
  const about = (e: Event) => [e.actor.id, e.target.id];

  /** Someone guesses `email`'s password until the account is locked (three failures, as configured). */
  async function lockOut(email: string) {
    let status = 401;
    for (let tries = 0; status === 401 && tries < 4; tries++)
      status = (await new SessionClient(world.server.url).login(email, 'not-the-password-at-all')).status;
    expect(status).toBe(429);
  }

  /** The person adds an authenticator app, then removes it: two factor changes. */
  async function changeFactors(client: Member['client']) {
    const started = await client.json<{ factorId: string; secret: string }>('POST', '/api/auth/mfa/totp', {
      name: 'phone',
    });
    expect(started.status).toBe(201);
    const code = await generate({
      secret: started.body.secret,
      crypto: new NodeCryptoPlugin(),
      epoch: Math.floor(world.clock.now() / 1000),
    });
    const factor = `/api/auth/mfa/totp/${started.body.factorId}/confirm`;
    expect((await client.json('POST', factor, { code })).status).toBe(200);
    expect((await client.json('DELETE', `/api/auth/mfa/factors/${started.body.factorId}`)).status).toBe(200);
  }

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_LOGIN_ACCOUNT_FAILURES: '3' }, backend);
    // The owner belongs to acme and to beta.
    await world.createOrg('Beta');
    auditor = await world.join('auditor@acme.test', 'auditor');
    leaver = await world.join('leaver@acme.test', 'viewer');
    betaAuditor = await joinBeta('second-auditor@example.test', 'auditor');
    stranger = await joinBeta('stranger@example.test', 'viewer');
    carol = await joinBeta('carol@example.test', 'viewer');
    // Beta's own activity, named so that a leak is recognizable.
    expect(
      (await world.owner.client.json('POST', '/api/orgs/beta/teams', { name: 'beta-hidden-team' })).status,
    ).toBe(201);

    world.clock.advance(60_000);
    // Account events of the owner (a member of both), of the stranger (beta only) and of carol
    // (beta only, for now): a sign-in, a failed sign-in, a CSRF refusal in beta's context.
    for (const email of [OWNER.email, stranger.email, carol.email]) {
      const wrong = await new SessionClient(world.server.url).login(email, 'not-the-password-at-all');
      expect(wrong.status).toBe(401);
    }
    await world.signIn(OWNER.email, OWNER.password);
    await world.signIn(stranger.email);
    await world.signIn(carol.email);
    const forged = new SessionClient(world.server.url);
    expect((await forged.login(OWNER.email, OWNER.password)).status).toBe(200);
    forged.csrf = undefined;
    expect((await forged.json('POST', '/api/orgs/beta/teams', { name: 'csrf-probe' })).status).toBe(403);
    // An instance event about the owner that is not an account security event: it stays out.
    const leaving = await world.signIn(OWNER.email, OWNER.password);
    expect((await leaving.client.json('POST', '/api/auth/logout')).status).toBe(200);

    // Carol joins acme later: only what follows may show.
    world.clock.advance(60_000);
    const invited = await world.invite(carol.email, 'viewer');
    expect(
      (await carol.client.json('POST', '/api/invitations/accept-signed-in', { token: invited })).status,
    ).toBe(200);
    carolJoinedAt = world.clock.now();
    world.clock.advance(60_000);
    await world.signIn(carol.email);

    // The leaver signs in, then is removed from acme.
    await world.signIn(leaver.email);
    expect((await world.owner.client.json('DELETE', `/api/orgs/acme/members/${leaver.id}`)).status).toBe(200);

    // A member of acme is locked out by a password guesser and changes their factors; so does the
    // stranger, who belongs to beta only.
    dana = await world.join('dana@acme.test', 'viewer');
    for (const person of [dana, stranger]) {
      await lockOut(person.email);
      await changeFactors(person.client);
    }
  }, 120_000);
  afterAll(() => world?.close());

  it("shows acme's auditor the sign-ins, failed sign-ins and CSRF refusals of acme's members", async () => {
    const mine = (await instanceEvents()).filter((e) => about(e).includes(world.owner.id));
    const actions = new Set(mine.map((e) => e.action));
    expect(actions).toContain('auth.login_succeeded');
    expect(actions).toContain('auth.login_failed');
    expect(actions).toContain('auth.csrf_rejected');
    // Found by the member's email, as a person would search.
    const byEmail = await instanceEvents(`&actor=${encodeURIComponent(OWNER.email)}&action=auth.*`);
    expect(byEmail.map((e) => e.action)).toContain('auth.login_succeeded');
  });

  it("shows acme's auditor a member's lockout and factor changes, and never the stranger's", async () => {
    const danas = (await instanceEvents()).filter((e) => about(e).includes(dana.id));
    // The lockout's actor is the anonymous guesser: it is about dana as the account it targets.
    expect(danas.filter((e) => e.action === 'auth.locked_out').map((e) => [e.target.id, e.details])).toEqual([
      [dana.id, { scope: 'account', retryAfterSeconds: expect.any(Number) }],
    ]);
    expect(
      danas
        .filter((e) => e.action.startsWith('mfa.factor_'))
        .map((e) => [e.actor.id, e.action])
        .sort(),
    ).toEqual([
      [dana.id, 'mfa.factor_added'],
      [dana.id, 'mfa.factor_removed'],
    ]);
    // Attack: the stranger's lockout and factor changes happened (beta's auditor sees them), but
    // they are beta's business, not acme's.
    const beta = await betaAuditor.client.json<{ events: Event[] }>(
      'GET',
      '/api/orgs/beta/audit/events?limit=500',
    );
    const strangers = beta.body.events.filter(
      (e) => e.chain === 'instance' && about(e).includes(stranger.id),
    );
    expect(strangers.map((e) => e.action)).toEqual(
      expect.arrayContaining(['auth.locked_out', 'mfa.factor_added', 'mfa.factor_removed']),
    );
    const acme = await events(auditor.client, `&action=${encodeURIComponent('mfa.*')}`);
    expect(acme.flatMap(about)).not.toContain(stranger.id);
    expect((await instanceEvents()).flatMap(about)).not.toContain(stranger.id);
  });

  it("never shows the account events of people who are not acme's members", async () => {
    const seen = await instanceEvents();
    const people = new Set(seen.flatMap(about));
    // Attack: beta's staff are not acme's to watch.
    expect(people.has(stranger.id)).toBe(false);
    expect(people.has(betaAuditor.id)).toBe(false);
    // Attack: a removed member is no longer acme's to watch.
    expect(people.has(leaver.id)).toBe(false);
    // Attack: a member's life before joining acme is not acme's either.
    const carols = seen.filter((e) => about(e).includes(carol.id));
    expect(carols.length).toBeGreaterThan(0);
    expect(carols.every((e) => Date.parse(e.ts) >= carolJoinedAt)).toBe(true);
    // Only the whitelisted account events: the instance's other records stay out.
    const allowed = new Set([
      'auth.login_succeeded',
      'auth.login_failed',
      'auth.locked_out',
      'auth.csrf_rejected',
      'auth.mfa_failed',
      'auth.password_changed',
      'mfa.factor_added',
      'mfa.factor_removed',
      'mfa.recovery_codes_generated',
      'mfa.recovery_code_used',
    ]);
    expect(seen.every((e) => allowed.has(e.action))).toBe(true);
    // The same filters cannot reach further: asking for a non-member by email finds nothing.
    expect(await events(auditor.client, `&actor=${encodeURIComponent(stranger.email)}`)).toEqual([]);
  });

  it('says nothing about beta through a member of both', async () => {
    const text = JSON.stringify(await events(auditor.client));
    expect(text).not.toMatch(/beta/i);
    expect(text).not.toContain('hidden-team');
    // And the reverse: beta's auditor learns nothing of acme through the same person.
    const beta = await betaAuditor.client.json<{ events: Event[] }>(
      'GET',
      '/api/orgs/beta/audit/events?limit=500',
    );
    expect(beta.status).toBe(200);
    // (The owner's own email names acme: it is the person's, not the organization's.)
    // As a word: a random id (inv_…ZACMEQ…) may hold the letters, never the organization's name.
    expect(JSON.stringify(beta.body).replaceAll(OWNER.email, '')).not.toMatch(/\bacme\b/i);
    // Beta's auditor does see beta's own members' sign-ins (the stranger's).
    expect(beta.body.events.some((e) => e.chain === 'instance' && e.actor.id === stranger.id)).toBe(true);
  });

  it('leaves the instance events out when asked, and out of exports (which must re-verify as one chain)', async () => {
    expect((await events(auditor.client, '&members=exclude')).every((e) => e.chain === 'org')).toBe(true);
    const exported = await auditor.client.send('GET', '/api/orgs/acme/audit/export?format=ndjson');
    expect(exported.status).toBe(200);
    for (const line of (await exported.text()).trim().split('\n'))
      expect((JSON.parse(line) as { chain: string }).chain).not.toBe('instance');
  });
});
