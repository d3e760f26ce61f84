import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS, MEMBER_PASSWORD, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/** `bulwark admin …` as an operator runs it on the server host (a real process), while the server runs. */

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const oneTimePassword = (stdout: string) => /password:\s+(\S+)/.exec(stdout)?.[1];

describe.each(BACKENDS)('bulwark admin on %s', (backend) => {
  it('create-user prints a one-time password that must be changed, and adds the membership', async () => {
    world = await startOrgWorld({}, backend);
    const created = await world.admin(
      'create-user',
      '--email',
      'Ops@Acme.test',
      '--org',
      'acme',
      '--role',
      'operator',
    );
    expect(created.code, created.stderr).toBe(0);
    const password = oneTimePassword(created.stdout)!;
    expect(password).toMatch(/^[a-zA-Z2-9]{5}(-[a-zA-Z2-9]{5}){3}$/);

    const ops = new SessionClient(world.server.url);
    const signedIn = await ops.json<{ user: { passwordChangeRequired: boolean }; memberships: unknown[] }>(
      'POST',
      '/api/auth/login',
      { email: 'ops@acme.test', password },
    );
    expect(signedIn.body).toMatchObject({
      user: { passwordChangeRequired: true },
      memberships: [{ slug: 'acme', role: 'operator' }],
    });
    expect((await ops.json('GET', '/api/orgs/acme/members')).body).toMatchObject({
      error: { code: 'password_change_required' },
    });
    const again = await world.admin('create-user', '--email', 'ops@acme.test');
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('exists');
  });

  it('reset-password ends every session and forces a change; disable-user locks out at once', async () => {
    world = await startOrgWorld({}, backend);
    const dev = await world.join('dev@acme.test', 'viewer');
    const reset = await world.admin('reset-password', '--email', 'dev@acme.test');
    expect(reset.code, reset.stderr).toBe(0);
    expect(reset.stderr).toContain('ended 1 session(s)');
    expect((await dev.client.json('GET', '/api/auth/session')).status).toBe(401);
    expect((await new SessionClient(world.server.url).login('dev@acme.test', MEMBER_PASSWORD)).status).toBe(
      401,
    );
    const fresh = new SessionClient(world.server.url);
    const signedIn = await fresh.json<{ user: { passwordChangeRequired: boolean } }>(
      'POST',
      '/api/auth/login',
      {
        email: 'dev@acme.test',
        password: oneTimePassword(reset.stdout),
      },
    );
    expect(signedIn.body.user.passwordChangeRequired).toBe(true);

    const disabled = await world.admin('disable-user', '--email', 'dev@acme.test');
    expect(disabled.code, disabled.stderr).toBe(0);
    expect((await fresh.json('GET', '/api/auth/session')).status).toBe(401);
    const members = await world.owner.client.json<{ members: Array<{ email: string; status: string }> }>(
      'GET',
      '/api/orgs/acme/members',
    );
    expect(members.body.members.find((m) => m.email === 'dev@acme.test')?.status).toBe('disabled');

    const everyone = await world.admin('end-sessions', '--all');
    expect(everyone.stdout).toContain('ended 1 session(s)');
    expect((await world.owner.client.json('GET', '/api/auth/session')).status).toBe(401);
  });
});
