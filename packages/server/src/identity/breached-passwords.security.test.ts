import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGuardedFetch } from '../net/outbound.js';
import { type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { BreachedCheckUnavailableError, createBreachedPasswords } from './breached-passwords.js';

/**
 * The breached-password check of AUTH-1. Attack: a person picks a password that passes every local
 * rule but is already in credential-stuffing lists from other sites' breaches, so it is the first
 * thing an attacker tries. With `BULWARK_BREACHED_PASSWORDS_URL` set, the server asks a k-anonymity
 * range service (Have I Been Pwned's protocol; here a real HTTP server on loopback, allowed by the
 * explicit outbound entry as an on-prem mirror would be) and refuses a found password with the same
 * 422 as the other rules. Second attack: the lookup itself must not leak the password: only five hex
 * characters of its SHA-1 are sent, with padding asked for, and neither the password nor its hash
 * reaches the logs. Third: an attacker who can make the range service fail (block it, make it
 * answer 500) must not thereby switch the check off: the change is refused with 503, not accepted
 * unchecked. The request goes through the SSRF guard, so without the allow entry nothing is sent.
 */

const BREACHED = 'Correct-Horse-Battery-Staple-19';
const FRESH = 'Velvet-Lighthouse-Compass-62';

const sha1 = (value: string) => createHash('sha1').update(value).digest('hex').toUpperCase();

type Seen = { url: string | undefined; headers: IncomingHttpHeaders };

describe('breached-password check (AUTH-1)', () => {
  let range: Server;
  let rangeUrl: string;
  let mode: 'answer' | 'fail' = 'answer';
  const seen: Seen[] = [];
  let world: OrgWorld;

  beforeAll(async () => {
    range = createServer((req, res) => {
      seen.push({ url: req.url, headers: req.headers });
      if (mode === 'fail') {
        res.writeHead(500).end();
        return;
      }
      const prefix = (req.url ?? '').split('/').pop() ?? '';
      // A padded answer: the breached suffix (when in this bucket) among filler lines of count 0.
      const lines = Array.from({ length: 50 }, (_, i) => `${sha1(`pad${i}`).slice(5)}:0`);
      if (sha1(BREACHED).startsWith(prefix)) lines.push(`${sha1(BREACHED).slice(5)}:52144`);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(lines.join('\r\n'));
    });
    range.listen(0, '127.0.0.1');
    await once(range, 'listening');
    rangeUrl = `http://127.0.0.1:${(range.address() as AddressInfo).port}/range/`;
    world = await startOrgWorld({
      BULWARK_BREACHED_PASSWORDS_URL: rangeUrl,
      BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1',
    });
  });

  afterAll(async () => {
    await world?.close();
    range.closeAllConnections();
    await new Promise((resolve) => range.close(resolve));
  });

  beforeEach(() => {
    seen.length = 0;
    mode = 'answer';
  });

  it('refuses a breached password with the usual 422, sending only a 5-character prefix', async () => {
    const refused = await world.owner.client.json<{ error: { code: string; fields: unknown } }>(
      'POST',
      '/api/auth/password',
      { currentPassword: OWNER.password, newPassword: BREACHED },
    );
    expect(refused.status).toBe(422);
    expect(refused.body.error.code).toBe('validation_failed');
    expect(refused.body.error.fields).toEqual([
      {
        path: 'body.newPassword',
        message: 'This password has appeared in a data breach; choose another one.',
      },
    ]);

    expect(seen).toHaveLength(1);
    expect(seen[0]?.url).toBe(`/range/${sha1(BREACHED).slice(0, 5)}`);
    expect(seen[0]?.headers['add-padding']).toBe('true');
    const sent = JSON.stringify(seen);
    for (const secret of [BREACHED, sha1(BREACHED), sha1(BREACHED).slice(5), sha1(BREACHED).toLowerCase()])
      expect(sent).not.toContain(secret);
    const logs = world.server.logs.text;
    for (const secret of [BREACHED, sha1(BREACHED), sha1(BREACHED).slice(5), sha1(BREACHED).slice(0, 5)])
      expect(logs).not.toContain(secret);
  });

  it('refuses a breached password when accepting an invitation with a new account', async () => {
    const token = await world.invite('newcomer@acme.test', 'viewer');
    const accepted = await new SessionClient(world.server.url).json('POST', '/api/invitations/accept', {
      token,
      displayName: 'Newcomer',
      password: BREACHED,
    });
    expect(accepted.status).toBe(422);
    expect(seen).toHaveLength(1);
  });

  it('fails closed with 503 when the range service errors, and changes nothing', async () => {
    mode = 'fail';
    const failed = await world.owner.client.json<{ error: { code: string } }>('POST', '/api/auth/password', {
      currentPassword: OWNER.password,
      newPassword: FRESH,
    });
    expect([failed.status, failed.body.error.code]).toEqual([503, 'breached_check_unavailable']);
    expect(seen).toHaveLength(1);
    // The old password still signs in: nothing was changed.
    expect((await world.signIn(OWNER.email, OWNER.password)).client).toBeDefined();
  });

  it('accepts a password the service does not know', async () => {
    const changed = await world.owner.client.json('POST', '/api/auth/password', {
      currentPassword: OWNER.password,
      newPassword: FRESH,
    });
    expect(changed.status).toBe(200);
    expect(seen).toHaveLength(1);
  });

  it('goes through the SSRF guard: without the allow entry nothing is sent, and the check fails closed', async () => {
    const unguarded = createBreachedPasswords({
      fetch: createGuardedFetch({ allowlist: [], allowPrivate: [], dnsServers: [] }),
      baseUrl: rangeUrl,
    });
    await expect(unguarded.isBreached(FRESH)).rejects.toBeInstanceOf(BreachedCheckUnavailableError);
    expect(seen).toEqual([]);

    const allowed = createBreachedPasswords({
      fetch: createGuardedFetch({ allowlist: [], allowPrivate: ['127.0.0.1'], dnsServers: [] }),
      baseUrl: rangeUrl,
    });
    expect(await allowed.isBreached(BREACHED)).toBe(true);
    // A padding line (count 0) never counts as a breach.
    expect(await allowed.isBreached('pad7')).toBe(false);
  });
});
