import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { BACKENDS, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { createNotificationsService } from './notifications.service.js';
import { createNotificationsStore } from './notifications.store.js';

/**
 * NOTIFY-1, the console's inbox: a person is told of a sign-in from a device not seen before, of
 * changes to their password and second factors, of a change of their role, and of an API key about
 * to expire — through the real server, from the changes people make through the API.
 */

const FIREFOX = 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
const FIREFOX_LATER = 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0';
const IPHONE =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';

const crypto = new NodeCryptoPlugin();

interface Item {
  id: string;
  kind: string;
  title: string;
  body: string;
  readAt: string | null;
}
interface Page {
  notifications: Item[];
  nextCursor: string | null;
  unread: number;
}

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const inbox = async (client: SessionClient, query = '') => {
  const page = await client.json<Page>('GET', `/api/notifications${query}`);
  expect(page.status).toBe(200);
  return page.body;
};
const kinds = async (client: SessionClient) => (await inbox(client)).notifications.map((n) => n.kind);

async function signInWith(userAgent: string) {
  // A step of the clock between notices: the inbox orders by time.
  world!.clock.advance(1000);
  const client = new SessionClient(world!.server.url, { 'user-agent': userAgent });
  expect((await client.login(OWNER.email, OWNER.password)).status).toBe(200);
  return client;
}

describe.each(BACKENDS)('notifications on %s', (backend) => {
  it('tells of a sign-in from a new device once, not of a browser update or the first device', async () => {
    world = await startOrgWorld({}, backend);
    // The world's own sign-in was the owner's first device: nothing to tell.
    expect(await kinds(world.owner.client)).toEqual([]);

    const firefox = await signInWith(FIREFOX);
    const [notice] = (await inbox(firefox)).notifications;
    expect(notice).toMatchObject({
      kind: 'new_device_sign_in',
      title: 'New sign-in from Firefox 128 on Ubuntu',
    });
    expect(notice!.body).toContain('127.0.0.1');

    // The same browser, updated: the same device.
    await signInWith(FIREFOX_LATER);
    await signInWith(FIREFOX);
    expect(await kinds(firefox)).toEqual(['new_device_sign_in']);

    await signInWith(IPHONE);
    const titles = (await inbox(firefox)).notifications.map((n) => n.title);
    expect(titles).toEqual([
      'New sign-in from Mobile Safari 17 on iOS 17.5',
      'New sign-in from Firefox 128 on Ubuntu',
    ]);
  });

  it('tells of a password change, an authenticator added and removed, new recovery codes', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    const NEXT = 'Paper-Cranes-Fold-At-Dawn-71';
    expect(
      (await owner.json('POST', '/api/auth/password', { currentPassword: OWNER.password, newPassword: NEXT }))
        .status,
    ).toBe(200);
    expect(await kinds(owner)).toEqual(['password_changed']);
    world.clock.advance(1000);

    const started = await owner.json<{ factorId: string; secret: string }>('POST', '/api/auth/mfa/totp', {
      name: 'work phone',
    });
    const code = await generate({
      secret: started.body.secret,
      crypto,
      epoch: Math.floor(world.clock.now() / 1000),
    });
    const confirmed = await owner.json('POST', `/api/auth/mfa/totp/${started.body.factorId}/confirm`, {
      code,
    });
    expect(confirmed.status).toBe(200);
    // The first factor comes with its recovery codes: one notice, about the factor.
    const afterAdd = (await inbox(owner)).notifications;
    expect(afterAdd.map((n) => n.kind)).toEqual(['authenticator_added', 'password_changed']);
    expect(afterAdd[0]!.title).toBe('An authenticator app was added “work phone”');

    // Privileged: re-authenticate with the password and a code from the next step.
    world.clock.advance(30_000);
    const reauthCode = await generate({
      secret: started.body.secret,
      crypto,
      epoch: Math.floor(world.clock.now() / 1000),
    });
    expect((await owner.json('POST', '/api/auth/reauth', { password: NEXT, code: reauthCode })).status).toBe(
      200,
    );
    expect((await owner.json('POST', '/api/auth/mfa/recovery-codes')).status).toBe(200);
    world.clock.advance(1000);
    expect((await owner.json('DELETE', `/api/auth/mfa/factors/${started.body.factorId}`)).status).toBe(200);
    expect(await kinds(owner)).toEqual([
      'authenticator_removed',
      'recovery_codes_regenerated',
      'authenticator_added',
      'password_changed',
    ]);
  });

  it('tells a member their role changed, naming the organization and both roles', async () => {
    world = await startOrgWorld({}, backend);
    const member = await world.join('dev@acme.test', 'viewer');
    expect(
      (await world.owner.client.json('PATCH', `/api/orgs/acme/members/${member.id}`, { role: 'operator' }))
        .status,
    ).toBe(200);
    const [notice] = (await inbox(member.client)).notifications;
    expect(notice).toMatchObject({
      kind: 'role_changed',
      title: 'Your role in Acme changed',
      body: 'It was viewer; it is now operator.',
    });
    // The owner, who made the change, is not told of the member's role.
    expect(await kinds(world.owner.client)).not.toContain('role_changed');
  });

  it('tells the owner of an API key ending within seven days, once however often the sweep runs', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    for (const [name, days] of [
      ['deploy', 3],
      ['nightly', 30],
    ] as const) {
      const created = await owner.json('POST', '/api/orgs/acme/api-keys', {
        name,
        permissions: ['agents:read'],
        expiresInDays: days,
      });
      expect(created.status).toBe(201);
    }
    // The sweep the server schedules, run here against the server's own database.
    const database = openDatabase(world.server.config);
    try {
      const notifications = createNotificationsService({
        store: createNotificationsStore(database.db),
        clock: world.clock.now,
      });
      expect(await notifications.noticeExpiringApiKeys()).toBe(1);
      expect(await notifications.noticeExpiringApiKeys()).toBe(0);
    } finally {
      await database.close();
    }
    const page = await inbox(owner);
    expect(page.notifications.map((n) => n.title)).toEqual(['Your API key “deploy” in Acme expires soon']);
  });

  it('lists unread first, pages, counts, and marks one or all read', async () => {
    world = await startOrgWorld({}, backend);
    // Five notices: a sign-in from a new device each (a program's user agent is its device).
    let reader = world.owner.client;
    for (let n = 0; n < 5; n += 1) reader = await signInWith(`probe/${n}`);
    const first = await inbox(reader, '?limit=2');
    expect(first.unread).toBe(5);
    expect(first.notifications.map((n) => n.title)).toEqual([
      'New sign-in from a device not seen before',
      'New sign-in from a device not seen before',
    ]);
    const all = (await inbox(reader)).notifications;
    expect(all).toHaveLength(5);
    const second = await inbox(reader, `?limit=2&cursor=${first.nextCursor}`);
    const third = await inbox(reader, `?limit=2&cursor=${second.nextCursor}`);
    expect(third.nextCursor).toBeNull();
    expect(
      [...first.notifications, ...second.notifications, ...third.notifications].map((n) => n.id),
    ).toEqual(all.map((n) => n.id));

    // Reading the newest one moves it behind every unread one.
    const target = all[0]!;
    expect((await reader.json('POST', `/api/notifications/${target.id}/read`)).status).toBe(200);
    expect(
      (await reader.json<{ unread: number }>('GET', '/api/notifications/unread-count')).body.unread,
    ).toBe(4);
    const reordered = (await inbox(reader)).notifications;
    expect(reordered.map((n) => n.id)).toEqual([...all.slice(1).map((n) => n.id), target.id]);
    expect(reordered.map((n) => n.readAt === null)).toEqual([true, true, true, true, false]);
    // Paging across the boundary between unread and read finds the read one last.
    const tail = await inbox(reader, `?limit=2&cursor=${(await inbox(reader, '?limit=4')).nextCursor}`);
    expect(tail.notifications.map((n) => n.id)).toEqual([target.id]);

    expect((await reader.json<{ marked: number }>('POST', '/api/notifications/read-all')).body.marked).toBe(
      4,
    );
    expect((await inbox(reader)).unread).toBe(0);
  });
});
