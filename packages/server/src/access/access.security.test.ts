import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/**
 * Attack: privilege escalation inside an organization. A member who may manage some access tries to
 * reach more than they hold — by changing their own role, inviting an accomplice (or a second
 * account) as owner, writing a custom role with owner-only permissions and binding it to themselves,
 * joining a team that carries a stronger role, demoting the owner, or removing the last owner so the
 * organization has nobody left to stop them. Every attempt must be refused and recorded.
 */

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

async function denials(w: OrgWorld): Promise<Array<{ details: { reason?: string; operation?: string } }>> {
  const page = await w.owner.client.json<{ events: Array<{ details: { reason?: string } }> }>(
    'GET',
    '/api/orgs/acme/audit/events?action=access.denied&limit=500',
  );
  return page.body.events;
}

describe.each(BACKENDS)('no self-elevation (ACC-5) on %s', (backend) => {
  it('an admin cannot raise themselves or anyone to owner by any route', async () => {
    world = await startOrgWorld({}, backend);
    const admin = await world.join('admin@acme.test', 'admin');
    const send = admin.client.json.bind(admin.client);

    const ownRole = await send('PATCH', `/api/orgs/acme/members/${admin.id}`, { role: 'owner' });
    expect(ownRole).toMatchObject({ status: 403, body: { error: { code: 'cannot_change_own_role' } } });

    const inviteOwner = await send('POST', '/api/orgs/acme/invitations', {
      email: 'alt@acme.test',
      role: 'owner',
    });
    expect(inviteOwner).toMatchObject({ status: 403, body: { error: { code: 'exceeds_your_permissions' } } });

    const ownerOnlyRole = await send('POST', '/api/orgs/acme/roles', {
      name: 'break-glass',
      permissions: ['security_configuration:manage'],
    });
    expect(ownerOnlyRole).toMatchObject({
      status: 403,
      body: { error: { code: 'exceeds_your_permissions' } },
    });
    const includingOwner = await send('POST', '/api/orgs/acme/roles', {
      name: 'sneaky',
      permissions: [],
      includes: ['owner'],
    });
    expect(includingOwner.status).toBe(403);

    const bindOwner = await send('POST', '/api/orgs/acme/role-bindings', {
      role: 'owner',
      subject: { type: 'user', id: admin.id },
    });
    expect(bindOwner.status).toBe(403);

    // A role the admin may legitimately create cannot later be grown beyond the admin's reach.
    const modest = await send<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'modest',
      permissions: ['audit:read'],
    });
    expect(modest.status).toBe(201);
    const grown = await send('PATCH', `/api/orgs/acme/roles/${modest.body.id}`, {
      permissions: ['audit:read', 'backups:manage'],
    });
    expect(grown.status).toBe(403);

    // The owner made a team that carries the owner role; the admin cannot put themselves in it.
    const team = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/teams', {
      name: 'Owners',
    });
    await world.owner.client.json('POST', '/api/orgs/acme/role-bindings', {
      role: 'owner',
      subject: { type: 'team', id: team.body.id },
    });
    const joinTeam = await send('PUT', `/api/orgs/acme/teams/${team.body.id}/members/${admin.id}`);
    expect(joinTeam.status).toBe(403);

    const demoteOwner = await send('PATCH', `/api/orgs/acme/members/${world.owner.id}`, { role: 'viewer' });
    expect(demoteOwner.status).toBe(403);
    const removeOwner = await send('DELETE', `/api/orgs/acme/members/${world.owner.id}`);
    expect(removeOwner.status).toBe(403);

    // Nothing changed: the admin is still an admin and holds no owner-only permission.
    const mine = await send<{ role: string; permissions: string[] }>('GET', '/api/orgs/acme/access/me');
    expect(mine.body.role).toBe('admin');
    expect(mine.body.permissions).not.toContain('security_configuration:manage');
    const recorded = await denials(world);
    expect(recorded.length).toBeGreaterThanOrEqual(9);
  });

  it('a viewer cannot manage anything, and each refusal is audited', async () => {
    world = await startOrgWorld({}, backend);
    const viewer = await world.join('viewer@acme.test', 'viewer');
    for (const [method, route, body] of [
      ['POST', '/api/orgs/acme/invitations', { email: 'x@acme.test', role: 'viewer' }],
      ['POST', '/api/orgs/acme/teams', { name: 'mine' }],
      ['POST', '/api/orgs/acme/roles', { name: 'mine', permissions: [] }],
      ['GET', '/api/orgs/acme/audit/events', undefined],
      ['GET', '/api/orgs/acme/access-review', undefined],
    ] as const) {
      const response = await viewer.client.json(method, route, body);
      expect(response.status, `${method} ${route}`).toBe(403);
    }
    expect((await denials(world)).length).toBe(5);
  });
});

describe.each(BACKENDS)('the last owner (ACC-5) on %s', (backend) => {
  it('is never removed or demoted, even by two owners demoting each other at once', async () => {
    world = await startOrgWorld({}, backend);
    const leave = await world.owner.client.json('DELETE', `/api/orgs/acme/members/${world.owner.id}`);
    expect(leave).toMatchObject({ status: 409, body: { error: { code: 'last_owner' } } });

    const second = await world.join('second@acme.test', 'owner');
    const results = await Promise.all([
      world.owner.client.json('PATCH', `/api/orgs/acme/members/${second.id}`, { role: 'admin' }),
      second.client.json('PATCH', `/api/orgs/acme/members/${world.owner.id}`, { role: 'admin' }),
    ]);
    // Exactly one wins. The other is refused as the last owner (409), or — if it was authorized after
    // the first committed — because its caller is no longer an owner (403).
    const statuses = results.map((r) => r.status).sort();
    expect(statuses[0]).toBe(200);
    expect([403, 409]).toContain(statuses[1]);
    const members = await world.owner.client.json<{ members: Array<{ role: string }> }>(
      'GET',
      '/api/orgs/acme/members',
    );
    const stillMember =
      members.status === 200
        ? members
        : await second.client.json<{ members: Array<{ role: string }> }>('GET', '/api/orgs/acme/members');
    expect(stillMember.body.members.filter((m) => m.role === 'owner')).toHaveLength(1);
  });
});
