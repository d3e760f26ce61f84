import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS, MEMBER_PASSWORD, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/** Members, invitations, teams, roles and bindings through the HTTP API, as an organization uses them. */

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

type AuditPage = {
  events: Array<{ action: string; outcome: string; ip: string | null; actor: { id: string | null } }>;
};

async function auditActions(w: OrgWorld, query = ''): Promise<AuditPage['events']> {
  const page = await w.owner.client.json<AuditPage>('GET', `/api/orgs/acme/audit/events?limit=500${query}`);
  expect(page.status).toBe(200);
  return page.body.events;
}

describe.each(BACKENDS)('on %s', (backend) => {
  describe('invitations (ACC-5)', () => {
    it('invite, accept with a new account, and the token works once', async () => {
      world = await startOrgWorld({}, backend);
      const token = await world.invite('dev@acme.test', 'operator');
      expect(token).toMatch(/^bwi_/);

      const listed = await world.owner.client.json<{ invitations: Array<Record<string, unknown>> }>(
        'GET',
        '/api/orgs/acme/invitations',
      );
      expect(listed.body.invitations).toEqual([
        expect.objectContaining({ email: 'dev@acme.test', role: 'operator', status: 'pending' }),
      ]);
      expect(JSON.stringify(listed.body)).not.toContain(token);

      const invitee = new SessionClient(world.server.url);
      const accept = () =>
        invitee.json('POST', '/api/invitations/accept', {
          token,
          displayName: 'Dev',
          password: MEMBER_PASSWORD,
        });
      const first = await accept();
      expect(first.status).toBe(200);
      expect(first.body).toMatchObject({ memberships: [{ slug: 'acme', role: 'operator' }] });
      const again = await new SessionClient(world.server.url).json('POST', '/api/invitations/accept', {
        token,
        displayName: 'Dev',
        password: MEMBER_PASSWORD,
      });
      expect(again).toMatchObject({ status: 404, body: { error: { code: 'invitation_invalid' } } });

      const members = await world.owner.client.json<{ members: Array<{ email: string; role: string }> }>(
        'GET',
        '/api/orgs/acme/members',
      );
      expect(members.body.members.map((m) => [m.email, m.role])).toEqual([
        ['dev@acme.test', 'operator'],
        ['owner@acme.test', 'owner'],
      ]);
      const actions = (await auditActions(world)).map((e) => e.action);
      expect(actions).toEqual(
        expect.arrayContaining(['invitation.created', 'invitation.accepted', 'member.joined']),
      );
    });

    it('expires after 7 days, and a revoked invitation cannot be accepted', async () => {
      world = await startOrgWorld({}, backend);
      const expiring = await world.invite('late@acme.test', 'viewer');
      const revoked = await world.invite('gone@acme.test', 'viewer');
      const listed = await world.owner.client.json<{ invitations: Array<{ id: string; email: string }> }>(
        'GET',
        '/api/orgs/acme/invitations',
      );
      const revokedId = listed.body.invitations.find((i) => i.email === 'gone@acme.test')!.id;
      expect(
        (await world.owner.client.json('DELETE', `/api/orgs/acme/invitations/${revokedId}`)).status,
      ).toBe(200);
      const body = { displayName: 'X', password: MEMBER_PASSWORD };
      const anonymous = new SessionClient(world.server.url);
      expect(
        (await anonymous.json('POST', '/api/invitations/accept', { ...body, token: revoked })).status,
      ).toBe(404);

      world.clock.advance(7 * 86_400_000 + 1);
      await world.signIn('owner@acme.test', 'Tr4vel-Quietly-Over-Mountains'); // the owner's old session has gone idle
      expect(
        (await anonymous.json('POST', '/api/invitations/accept', { ...body, token: expiring })).status,
      ).toBe(404);
    });

    it('an existing account accepts while signed in with the invited email, and only that email', async () => {
      world = await startOrgWorld({}, backend);
      const dev = await world.join('dev@acme.test', 'viewer');
      const created = await world.admin(
        'create-org',
        '--name',
        'Beta',
        '--owner',
        'owner@acme.test',
        '--mfa-optional',
      );
      expect(created.code, created.stderr).toBe(0);
      const beta = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/beta/invitations', {
        email: 'someone-else@acme.test',
        role: 'viewer',
      });
      expect(beta.status).toBe(201);
      const refused = await dev.client.json('POST', '/api/invitations/accept-signed-in', {
        token: beta.body.token,
      });
      expect(refused).toMatchObject({
        status: 403,
        body: { error: { code: 'invitation_for_someone_else' } },
      });

      const forDev = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/beta/invitations', {
        email: 'dev@acme.test',
        role: 'operator',
      });
      const newAccount = await new SessionClient(world.server.url).json('POST', '/api/invitations/accept', {
        token: forDev.body.token,
        displayName: 'Dev',
        password: MEMBER_PASSWORD,
      });
      expect(newAccount).toMatchObject({ status: 409, body: { error: { code: 'sign_in_to_accept' } } });
      const accepted = await dev.client.json('POST', '/api/invitations/accept-signed-in', {
        token: forDev.body.token,
      });
      expect(accepted).toMatchObject({ status: 200, body: { slug: 'beta', role: 'operator' } });
    });
  });

  describe('members', () => {
    it('role changes take effect on the very next request (AUTH-5) and are audited', async () => {
      world = await startOrgWorld({}, backend);
      const dev = await world.join('dev@acme.test', 'auditor');
      expect((await dev.client.json('GET', '/api/orgs/acme/audit/events')).status).toBe(200);
      const changed = await world.owner.client.json('PATCH', `/api/orgs/acme/members/${dev.id}`, {
        role: 'viewer',
      });
      expect(changed).toMatchObject({ status: 200, body: { role: 'viewer' } });
      expect((await dev.client.json('GET', '/api/orgs/acme/audit/events')).status).toBe(403);

      const removed = await world.owner.client.json('DELETE', `/api/orgs/acme/members/${dev.id}`);
      expect(removed.status).toBe(200);
      expect((await dev.client.json('GET', '/api/orgs/acme/members')).status).toBe(404);
      const events = await auditActions(world);
      const roleChange = events.find((e) => e.action === 'member.role_changed')!;
      expect(roleChange).toMatchObject({
        outcome: 'success',
        actor: { id: world.owner.id },
        ip: '127.0.0.1',
      });
      expect(events.map((e) => e.action)).toContain('member.removed');
      const denials = events.filter((e) => e.action === 'access.denied');
      expect(denials.length).toBeGreaterThanOrEqual(1);
    });

    it('an owner ends all of a member’s sessions at once (AUTH-7)', async () => {
      world = await startOrgWorld({}, backend);
      const dev = await world.join('dev@acme.test', 'viewer');
      const laptop = await world.signIn('dev@acme.test');
      const ended = await world.owner.client.json('POST', `/api/orgs/acme/members/${dev.id}/end-sessions`);
      expect(ended).toMatchObject({ status: 200, body: { sessionsEnded: 2 } });
      expect((await dev.client.json('GET', '/api/auth/session')).status).toBe(401);
      expect((await laptop.client.json('GET', '/api/auth/session')).status).toBe(401);
      // An admin does not hold members:end_sessions by default.
      const admin = await world.join('admin@acme.test', 'admin');
      const other = await world.join('other@acme.test', 'viewer');
      expect(
        (await admin.client.json('POST', `/api/orgs/acme/members/${other.id}/end-sessions`)).status,
      ).toBe(403);
    });
  });

  describe('teams and role bindings (ACC-3, ACC-6)', () => {
    it('a role bound to a team reaches its members, and leaves with them', async () => {
      world = await startOrgWorld({}, backend);
      const dev = await world.join('dev@acme.test', 'viewer');
      const team = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/teams', {
        name: 'SRE',
      });
      expect(team.status).toBe(201);
      const binding = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/role-bindings', {
        role: 'auditor',
        subject: { type: 'team', id: team.body.id },
      });
      expect(binding.status).toBe(201);
      expect((await dev.client.json('GET', '/api/orgs/acme/audit/events')).status).toBe(403);

      expect(
        (await world.owner.client.json('PUT', `/api/orgs/acme/teams/${team.body.id}/members/${dev.id}`))
          .status,
      ).toBe(200);
      expect((await dev.client.json('GET', '/api/orgs/acme/audit/events')).status).toBe(200);
      const explained = await world.owner.client.json<{ allowed: boolean; matched: Array<{ via: string }> }>(
        'GET',
        `/api/orgs/acme/access/explain?permission=audit:read&user=${dev.id}`,
      );
      expect(explained.body.allowed).toBe(true);
      expect(explained.body.matched[0]!.via).toContain('team SRE');

      await world.owner.client.json('DELETE', `/api/orgs/acme/teams/${team.body.id}/members/${dev.id}`);
      expect((await dev.client.json('GET', '/api/orgs/acme/audit/events')).status).toBe(403);
    });

    it('a custom role bound on a label selector allows only on matching agents, and explain says so', async () => {
      world = await startOrgWorld({}, backend);
      const dev = await world.join('dev@acme.test', 'viewer');
      const role = await world.owner.client.json<{ id: string; effectivePermissions: string[] }>(
        'POST',
        '/api/orgs/acme/roles',
        { name: 'staging-runner', permissions: ['commands:create', 'commands:cancel'], includes: ['viewer'] },
      );
      expect(role.status).toBe(201);
      expect(role.body.effectivePermissions).toEqual(
        expect.arrayContaining(['commands:create', 'agents:read']),
      );
      await world.owner.client.json('POST', '/api/orgs/acme/role-bindings', {
        role: role.body.id,
        subject: { type: 'user', id: dev.id },
        selector: 'env=staging',
      });
      const explain = (labels: string) =>
        world!.owner.client.json<{ allowed: boolean; reason: string }>(
          'GET',
          `/api/orgs/acme/access/explain?permission=commands:create&user=${dev.id}&labels=${encodeURIComponent(labels)}`,
        );
      expect((await explain('env=staging,tier=web')).body.allowed).toBe(true);
      const production = await explain('env=production');
      expect(production.body.allowed).toBe(false);
      expect(production.body.reason).toContain('selector');

      const mine = await dev.client.json<{
        permissions: string[];
        scoped: Array<{ selector: string; permissions: string[] }>;
      }>('GET', '/api/orgs/acme/access/me');
      expect(mine.body.permissions).not.toContain('commands:create');
      expect(mine.body.scoped).toEqual([
        {
          selector: 'env=staging',
          role: 'staging-runner',
          permissions: expect.arrayContaining(['commands:create']),
        },
      ]);

      const looping = await world.owner.client.json('PATCH', `/api/orgs/acme/roles/${role.body.id}`, {
        includes: [role.body.id],
      });
      expect(looping.status).toBe(422);
      const inUse = await world.owner.client.json('POST', '/api/orgs/acme/roles', {
        name: 'admin',
        permissions: [],
      });
      expect(inUse.status).toBe(422);
    });
  });

  describe('step-up (MFA-5) and own sessions (AUTH-7)', () => {
    it('a privileged route needs a recent sign-in; reauth re-proves it and renews the session id', async () => {
      world = await startOrgWorld({}, backend);
      const dev = await world.join('dev@acme.test', 'viewer');
      world.clock.advance(16 * 60_000);
      // Keep the owner's session alive (idle timeout is 30 minutes) but no longer recently authenticated.
      expect((await world.owner.client.json('GET', '/api/auth/session')).status).toBe(200);
      const stale = await world.owner.client.json('PATCH', `/api/orgs/acme/members/${dev.id}`, {
        role: 'auditor',
      });
      expect(stale).toMatchObject({ status: 403, body: { error: { code: 'step_up_required' } } });

      const before = world.owner.client.cookie;
      const wrong = await world.owner.client.json('POST', '/api/auth/reauth', { password: 'not-it-at-all' });
      expect(wrong.status).toBe(422);
      const reauth = await world.owner.client.json('POST', '/api/auth/reauth', {
        password: 'Tr4vel-Quietly-Over-Mountains',
      });
      expect(reauth.status).toBe(200);
      expect(world.owner.client.cookie).not.toBe(before);
      const fresh = await world.owner.client.json('PATCH', `/api/orgs/acme/members/${dev.id}`, {
        role: 'auditor',
      });
      expect(fresh.status).toBe(200);
      // Sign-in events belong to the user, not to one organization: they are in the instance chain.
      const exported = await world.cli(
        'audit',
        'export',
        '--org',
        'instance',
        '--action',
        'auth.reauthenticated',
      );
      expect(exported.code, exported.stderr).toBe(0);
      const outcomes = exported.stdout
        .trim()
        .split('\n')
        // The address as read (`shown`): the hashed `ip` is sealed under the person's PII key (DATA-2).
        .map((line) => JSON.parse(line) as { outcome: string; shown: { ip: string }; actor: { id: string } })
        .map(({ outcome, shown, actor }) => ({ outcome, ip: shown.ip, actor: actor.id }));
      expect(outcomes).toEqual([
        { outcome: 'failure', ip: '127.0.0.1', actor: world.owner.id },
        { outcome: 'success', ip: '127.0.0.1', actor: world.owner.id },
      ]);
    });

    it('lists and revokes own sessions, never another user’s', async () => {
      world = await startOrgWorld({}, backend);
      const phone = await world.signIn('owner@acme.test', 'Tr4vel-Quietly-Over-Mountains');
      const dev = await world.join('dev@acme.test', 'viewer');
      const listed = await world.owner.client.json<{
        sessions: Array<{ id: string; current: boolean; ip: string }>;
      }>('GET', '/api/auth/sessions');
      expect(listed.body.sessions).toHaveLength(2);
      expect(listed.body.sessions.filter((s) => s.current)).toHaveLength(1);
      const other = listed.body.sessions.find((s) => !s.current)!;
      expect(other.ip).toBe('127.0.0.1');

      const devSessions = await dev.client.json<{ sessions: Array<{ id: string }> }>(
        'GET',
        '/api/auth/sessions',
      );
      const notMine = await world.owner.client.json(
        'DELETE',
        `/api/auth/sessions/${devSessions.body.sessions[0]!.id}`,
      );
      expect(notMine.status).toBe(404);
      expect((await dev.client.json('GET', '/api/auth/session')).status).toBe(200);

      expect((await world.owner.client.json('DELETE', `/api/auth/sessions/${other.id}`)).status).toBe(200);
      expect((await phone.client.json('GET', '/api/auth/session')).status).toBe(401);
      expect((await world.owner.client.json('GET', '/api/auth/session')).status).toBe(200);
    });
  });

  describe('audit log and access review over HTTP', () => {
    it('pages the organization’s events, exports them, verifies the chain, and exports the access review', async () => {
      world = await startOrgWorld({}, backend);
      const dev = await world.join('dev@acme.test', 'viewer');
      // The viewer adds an authenticator: the review shows who has a second factor and who has not.
      const totp = await dev.client.json<{ factorId: string; secret: string }>(
        'POST',
        '/api/auth/mfa/totp',
        {},
      );
      const code = await generate({
        secret: totp.body.secret,
        crypto: new NodeCryptoPlugin(),
        epoch: Math.floor(world.clock.now() / 1000),
      });
      expect(
        (await dev.client.json('POST', `/api/auth/mfa/totp/${totp.body.factorId}/confirm`, { code })).status,
      ).toBe(200);
      const first = await world.owner.client.json<{ events: unknown[]; nextCursor: string }>(
        'GET',
        '/api/orgs/acme/audit/events?limit=2',
      );
      expect(first.body.events).toHaveLength(2);
      const second = await world.owner.client.json<{ events: Array<{ seq: number }> }>(
        'GET',
        `/api/orgs/acme/audit/events?limit=2&cursor=${first.body.nextCursor}`,
      );
      expect(second.body.events.length).toBeGreaterThan(0);

      const exported = await world.owner.client.send('GET', '/api/orgs/acme/audit/export?format=csv');
      expect(exported.status).toBe(200);
      expect(exported.headers.get('content-type')).toContain('text/csv');
      expect((await exported.text()).split('\r\n')[0]).toContain('action');

      const verification = await world.owner.client.json('GET', '/api/orgs/acme/audit/verification');
      expect(verification).toMatchObject({ status: 200, body: { ok: true } });

      const key = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
        name: 'deploy pipeline',
        permissions: ['agents:read'],
      });
      expect(key.status).toBe(201);
      const response = await world.owner.client.send('GET', '/api/orgs/acme/access-review');
      expect(response.status).toBe(200);
      const text = await response.text();
      // The review lists keys, never their tokens.
      expect(text).not.toContain(key.body.token);
      const review = JSON.parse(text) as {
        securityPolicy: { mfaRequired: boolean };
        members: Array<{ email: string; permissions: string[]; mfaEnrolled: boolean; apiKeys: string[] }>;
        roles: unknown[];
        apiKeys: Array<{ name: string; permissions: string[]; status: string; createdBy: { email: string } }>;
      };
      expect(review.members.find((m) => m.email === 'dev@acme.test')).toMatchObject({
        permissions: expect.arrayContaining(['agents:read']),
        mfaEnrolled: true,
      });
      expect(review.members.find((m) => m.email === OWNER.email)).toMatchObject({
        mfaEnrolled: false,
        apiKeys: ['deploy pipeline'],
      });
      expect(review.securityPolicy).toEqual({ mfaRequired: false });
      expect(review.apiKeys).toEqual([
        expect.objectContaining({
          name: 'deploy pipeline',
          permissions: ['agents:read'],
          status: 'active',
          createdBy: expect.objectContaining({ email: OWNER.email }),
        }),
      ]);
      expect(review.roles.length).toBeGreaterThanOrEqual(5);
      const csv = await world.owner.client.send('GET', '/api/orgs/acme/access-review?format=csv');
      const lines = (await csv.text()).split('\r\n').filter(Boolean);
      expect(lines).toHaveLength(3);
      expect(lines[0]).toContain('mfa_enrolled,sso_issuers,provisioned_by,active_api_keys');
      expect(lines.find((line) => line.startsWith(OWNER.email))).toMatch(/,no,,,deploy pipeline$/);
      expect(await auditActions(world, '&action=access.review_exported')).toHaveLength(2);
    });
  });
});
