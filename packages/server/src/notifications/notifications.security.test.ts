import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * Attack: a member who learns (or guesses) the id of someone else's notification — a new-device
 * sign-in notice says where the owner signs in from — reads it or marks it read, so the owner never
 * notices the warning. Every notifications route answers only about the caller's own: another
 * person's id is not found (404, the same as an id that does not exist), and "mark all read" touches
 * only the caller's.
 */

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

type Page = { notifications: Array<{ id: string; readAt: string | null }>; unread: number };

describe.each(BACKENDS)('notifications belong to their person, on %s', (backend) => {
  it("answers 404 for another person's notification and leaves it unread", async () => {
    world = await startOrgWorld({}, backend);
    const member = await world.join('mallory@acme.test', 'admin');
    // A sign-in from a new device gives the owner a notification.
    const elsewhere = new SessionClient(world.server.url, { 'user-agent': 'elsewhere/1.0' });
    expect((await elsewhere.login(OWNER.email, OWNER.password)).status).toBe(200);
    const owners = await world.owner.client.json<Page>('GET', '/api/notifications');
    expect(owners.body.unread).toBe(1);
    const id = owners.body.notifications[0]!.id;

    const stolen = await member.client.json<{ error: { code: string } }>(
      'POST',
      `/api/notifications/${id}/read`,
    );
    expect(stolen.status).toBe(404);
    expect(stolen.body.error.code).toBe('not_found');
    expect((await member.client.json<Page>('GET', '/api/notifications')).body.notifications).toEqual([]);
    expect(
      (await member.client.json<{ marked: number }>('POST', '/api/notifications/read-all')).body.marked,
    ).toBe(0);

    const after = await world.owner.client.json<Page>('GET', '/api/notifications');
    expect(after.body.unread).toBe(1);
    expect(after.body.notifications[0]).toMatchObject({ id, readAt: null });
  });

  it('refuses a malformed id or cursor with 422, never a 5xx', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    expect((await owner.send('POST', '/api/notifications/ntf_nope/read')).status).toBe(422);
    expect((await owner.send('GET', '/api/notifications?cursor=x.1')).status).toBe(422);
    expect((await owner.send('GET', '/api/notifications?limit=500')).status).toBe(422);
  });
});
