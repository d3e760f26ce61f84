import { afterEach, describe, expect, it } from 'vitest';
import { type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { describeDevice, deviceKey } from './devices.js';

/** AUTH-7: people recognise their sessions by browser, OS and kind of device, parsed on the server. */

const FIREFOX = 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
const IPHONE =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';

describe('describeDevice', () => {
  it('names the browser (major version), the OS and the kind of device', () => {
    expect(describeDevice(FIREFOX)).toEqual({ browser: 'Firefox 128', os: 'Ubuntu', type: 'desktop' });
    expect(describeDevice(IPHONE)).toEqual({ browser: 'Mobile Safari 17', os: 'iOS 17.5', type: 'mobile' });
    expect(describeDevice('curl/8.5.0')).toEqual({ browser: null, os: null, type: 'unknown' });
    expect(describeDevice(null)).toEqual({ browser: null, os: null, type: 'unknown' });
  });

  it('keys a device without versions, so a browser update is the same device', () => {
    expect(deviceKey(FIREFOX)).toBe(deviceKey(FIREFOX.replaceAll('128', '131')));
    expect(deviceKey(FIREFOX)).not.toBe(deviceKey(IPHONE));
  });
});

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

it('GET /api/auth/sessions gives each session its device in words, and no location', async () => {
  world = await startOrgWorld();
  const phone = new SessionClient(world.server.url, { 'user-agent': IPHONE });
  expect((await phone.login(OWNER.email, OWNER.password)).status).toBe(200);
  const listed = await phone.json<{ sessions: Array<Record<string, unknown>> }>('GET', '/api/auth/sessions');
  expect(listed.status).toBe(200);
  const current = listed.body.sessions.find((session) => session.current)!;
  expect(current.device).toEqual({ browser: 'Mobile Safari 17', os: 'iOS 17.5', type: 'mobile' });
  expect(Object.keys(current).sort()).toEqual(
    ['createdAt', 'current', 'device', 'expiresAt', 'id', 'ip', 'lastSeenAt', 'userAgent'].sort(),
  );
});
