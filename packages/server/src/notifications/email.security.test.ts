import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Database } from '../db/database.js';
import { openBeside } from '../test-support/databases.js';
import {
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  OWNER,
  startOrgWorld,
} from '../test-support/org-world.js';
import { deadPort } from '../test-support/ports.js';
import { restartTestServer } from '../test-support/server.js';
import { SessionClient } from '../test-support/session-client.js';
import { type ReceivedEmail, type SmtpReceiver, startSmtpReceiver } from '../test-support/smtp-server.js';
import { tempDir } from '../test-support/temp.js';
import { makeTestCa, type TestCa } from '../test-support/test-ca.js';
import type { EmailRow } from './email-outbox.store.js';

/**
 * Email notifications (NOTIFY-1, email half) through a real SMTP server process (`smtp-server`, with
 * STARTTLS and a certificate from a test CA), and the attacks on that path:
 *
 * - A man in the middle between Bulwark and its SMTP relay presents a certificate from another CA to
 *   read invitation links and alerts, or to swallow them. The send fails verification, nothing is
 *   said in clear, and the message is retried — not lost — until the real server is reached.
 * - An attacker who wants a break-glass sign-in to go unnoticed takes the SMTP server down (or it is
 *   simply down) at that moment. The alert waits in the outbox, written with the sign-in itself, and
 *   reaches the other owners when the server is back.
 * - A display name that arrives with CR/LF in it (from an identity provider, say) tries to add a
 *   `Bcc:` header, copying a person's security emails to the attacker. It stays inside the To header.
 * - A database reader looks for the invitation token in the outbox: it is sealed while it waits and
 *   erased once sent, and the link carries it in the URL fragment, never the query (NET-5).
 */

const crypto = new NodeCryptoPlugin();
const SMTP_USER = 'bulwark-relay';
const SMTP_PASSWORD = 'relay-password-4c1b7e9a02';
const METRICS_TOKEN = 'email-metrics-token-0123456789abcdefgh';
const FIREFOX = 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
const CHROME_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';
const SAFARI_MAC =
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15';
const EDGE_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0';

/** The header block as a mail client parses it. */
const rawHeadersOf = (email: ReceivedEmail) => email.raw.slice(0, email.raw.search(/\r?\n\r?\n/));
/** The header block, with folded lines joined and RFC 2047 encoded words (Q or B) decoded, to read subjects. */
const headersOf = (email: ReceivedEmail) =>
  rawHeadersOf(email)
    .replace(/\?=\r?\n[ \t]+=\?/g, '?==?')
    .replace(/=\?UTF-8\?([QB])\?([^?]*)\?=/gi, (_, kind: string, text: string) =>
      kind.toUpperCase() === 'B'
        ? Buffer.from(text, 'base64').toString('utf8')
        : Buffer.from(
            text.replace(/_/g, ' ').replace(/=([0-9A-F]{2})/gi, (_m, hex: string) => `%${hex}`),
            'utf8',
          )
            .toString()
            .replace(/(%[0-9A-F]{2})+/gi, (run) => decodeURIComponent(run)),
    );
const subjectIs = (pattern: RegExp) => (email: ReceivedEmail) => pattern.test(headersOf(email));
const to = (address: string, pattern: RegExp) => (email: ReceivedEmail) =>
  email.envelope.to.includes(address) && subjectIs(pattern)(email);
/** The text body, with quoted-printable soft line breaks undone. */
const bodyOf = (email: ReceivedEmail) =>
  email.raw
    .slice(email.raw.search(/\r?\n\r?\n/))
    .replace(/=\r?\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));

describe('email notifications through a real SMTP server', () => {
  let dir: { path: string; remove(): Promise<void> };
  let right: TestCa;
  let mitm: TestCa;
  let trustedCa: string;
  let smtp: SmtpReceiver;
  let world: OrgWorld;
  let reader: Database;
  let publicUrl: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await tempDir('email');
    right = makeTestCa(dir.path, 'right');
    mitm = makeTestCa(dir.path, 'mitm');
    const cert = right.issue('smtp');
    // The CA file Bulwark reads at each batch of sends: the tests swap what it holds.
    trustedCa = path.join(dir.path, 'trusted-ca.pem');
    writeFileSync(trustedCa, right.caPem);
    const passwordFile = path.join(dir.path, 'smtp-password');
    writeFileSync(passwordFile, `${SMTP_PASSWORD}\n`, { mode: 0o600 });
    smtp = await startSmtpReceiver({ ...cert, user: SMTP_USER, password: SMTP_PASSWORD });
    const port = await deadPort();
    publicUrl = `http://localhost:${port}`;
    env = {
      BULWARK_PORT: String(port),
      BULWARK_PUBLIC_URL: publicUrl,
      BULWARK_SMTP_HOST: 'localhost',
      BULWARK_SMTP_PORT: String(smtp.port),
      BULWARK_SMTP_FROM: 'Bulwark <bulwark@acme.test>',
      BULWARK_SMTP_USER: SMTP_USER,
      BULWARK_SMTP_PASSWORD_FILE: passwordFile,
      BULWARK_SMTP_CA_FILE: trustedCa,
      BULWARK_SMTP_POLL_SECONDS: '1',
      BULWARK_SMTP_MAX_ATTEMPTS: '3',
      // The API-key expiry sweep runs with the maintenance: every second, not every five minutes.
      BULWARK_MAINTENANCE_INTERVAL_SECONDS: '1',
      BULWARK_METRICS_TOKEN: METRICS_TOKEN,
      // Acme sends four invitations in this file (Nia, Quentin, Olga, Pat); Beta reaches the cap.
      BULWARK_INVITATION_EMAILS_PER_ORG_PER_DAY: '5',
    };
    world = await startOrgWorld(env);
    reader = openBeside(world.server.config.database);
  }, 60_000);

  afterAll(async () => {
    await reader?.close();
    await world?.close();
    await smtp?.stop();
    await dir?.remove();
  });

  const outbox = (kind: string): Promise<EmailRow[]> =>
    reader.db.selectFrom('email_outbox').selectAll().where('kind', '=', kind).orderBy('id').execute();
  const signInFrom = async (email: string, userAgent: string, password = MEMBER_PASSWORD) => {
    const client = new SessionClient(world.server.url, { 'user-agent': userAgent });
    expect((await client.login(email, password)).status).toBe(200);
    return client;
  };
  /** Waits (the sender runs every second) until the latest message of `kind` to `recipient` has failed `n` times. */
  const failedAttempts = (kind: string, recipient: string, n: number) =>
    vi.waitFor(
      async () => {
        const row = (await outbox(kind)).filter((r) => r.recipient === recipient).at(-1);
        expect(row?.attempts).toBeGreaterThanOrEqual(n);
        return row!;
      },
      { timeout: 15_000, interval: 50 },
    );

  let nia: Member;

  it('emails the invitee a link that works, its token in the fragment and nowhere at rest', async () => {
    const token = await world.invite('nia@acme.test', 'operator');
    const email = await smtp.next(to('nia@acme.test', /^Subject: You are invited to Acme/m));
    // Over TLS, authenticated, to the invitee alone.
    expect(email.envelope).toMatchObject({ to: ['nia@acme.test'], secure: true, user: SMTP_USER });
    const link = bodyOf(email).match(/https?:\/\/\S+\/invitations\/accept\S*/)?.[0];
    expect(link).toBeDefined();
    const url = new URL(link!);
    // NET-5: the token travels in the fragment, which no browser sends to a server or a Referer.
    expect([url.origin, url.pathname, url.search, url.hash]).toEqual([
      publicUrl,
      '/invitations/accept',
      '',
      `#${token}`,
    ]);
    expect(headersOf(email)).not.toContain(token);
    // The link's port is the server's: what the console does with it — POST the fragment — admits Nia.
    expect(new URL(world.server.url).port).toBe(url.port);
    const client = new SessionClient(world.server.url);
    const accepted = await client.json<{ user: { id: string } }>('POST', '/api/invitations/accept', {
      token: url.hash.slice(1),
      displayName: 'Nia',
      password: MEMBER_PASSWORD,
    });
    expect(accepted.status).toBe(200);
    nia = { id: accepted.body.user.id, email: 'nia@acme.test', client };

    // Sent, so its content is gone; while it waited it was sealed: the token is nowhere in the database.
    await vi.waitFor(async () => {
      const [row] = await outbox('invitation');
      expect([row?.state, row?.sealed, row?.attempts]).toEqual(['sent', '', 1]);
    });
    const file = world.server.config.database.kind === 'sqlite' ? world.server.config.database.file : '';
    for (const part of [file, `${file}-wal`]) {
      let bytes = '';
      try {
        bytes = readFileSync(part).toString('latin1');
      } catch {}
      expect(bytes.includes(token)).toBe(false);
    }
    // The SMTP password (from its file) is never logged.
    expect(world.server.logs.text).not.toContain(SMTP_PASSWORD);
  });

  it('names the key owner, not the key label, and stops an inviter mailing one address or a day past the limits', async () => {
    // An admin, or whoever holds an API key with `members:invite`, turns invitations into a mail
    // cannon: invite, revoke, invite any address at the write rate limit, each message carrying a key
    // label of their choosing ("URGENT: verify your account at …") as the inviter's name.
    expect(
      (await world.owner.client.send('POST', '/api/auth/reauth', { password: OWNER.password })).status,
    ).toBeLessThan(300);
    const label = 'URGENT verify your account at evil.example';
    const key = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
      name: label,
      // What inviting a viewer needs: the viewer's reads, and `members:invite`.
      permissions: [
        'members:invite',
        'org:read',
        'members:read',
        'roles:read',
        'teams:read',
        'agents:read',
        'services:read',
        'commands:read',
      ],
    });
    expect(key.status).toBe(201);
    const asKey = async (method: string, url: string, body?: unknown) => {
      const response = await fetch(`${world.server.url}${url}`, {
        method,
        headers: {
          authorization: `Bearer ${key.body.token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return {
        status: response.status,
        body: (await response.json()) as { invitation: { id: string }; error: { code: string } },
      };
    };
    const invited = await asKey('POST', '/api/orgs/acme/invitations', {
      email: 'quentin@acme.test',
      role: 'viewer',
    });
    expect(invited.status).toBe(201);
    const email = await smtp.next(to('quentin@acme.test', /^Subject: You are invited to Acme/m));
    expect(bodyOf(email)).toContain(`${OWNER.email} invited you`);
    expect(email.raw).not.toContain('evil.example');

    // Revoked, then invited again at once: the address was mailed minutes ago.
    expect((await asKey('DELETE', `/api/orgs/acme/invitations/${invited.body.invitation.id}`)).status).toBe(
      200,
    );
    const again = await asKey('POST', '/api/orgs/acme/invitations', {
      email: 'quentin@acme.test',
      role: 'viewer',
    });
    expect(again).toMatchObject({ status: 429, body: { error: { code: 'invitation_recently_sent' } } });

    // A day's cap per organization, revoked invitations counted (Beta: five, then no more).
    await world.createOrg('Beta');
    const codes: string[] = [];
    for (let i = 1; i <= 6; i++) {
      const answer = await world.owner.client.json<{ error?: { code: string } }>(
        'POST',
        '/api/orgs/beta/invitations',
        { email: `cannon${i}@elsewhere.test`, role: 'viewer' },
      );
      codes.push(answer.body.error?.code ?? String(answer.status));
    }
    expect(codes).toEqual(['201', '201', '201', '201', '201', 'invitation_email_limit']);
  });

  it('emails the owner of an API key about to expire, naming the key and not its token, once', async () => {
    // The key's owner hears of it a week ahead: a key that stops working unannounced breaks a
    // deployment, and its owner then mints a broader one in a hurry.
    expect(
      (await world.owner.client.send('POST', '/api/auth/reauth', { password: OWNER.password })).status,
    ).toBeLessThan(300);
    const mint = async (name: string, expiresInDays: number) => {
      const created = await world.owner.client.json<{ token: string; apiKey: { expiresAt: string } }>(
        'POST',
        '/api/orgs/acme/api-keys',
        { name, permissions: ['agents:read'], expiresInDays },
      );
      expect(created.status).toBe(201);
      return created.body;
    };
    const expiring = /^Subject: Your API key “(.+)” in Acme expires soon$/m;
    // Made first, ending in a month: outside the week, so the sweep that finds the next one passes it.
    const monthly = await mint('monthly-report', 30);
    const deploy = await mint('deploy-prod', 3);
    const email = await smtp.next(
      to(OWNER.email, /^Subject: Your API key “deploy-prod” in Acme expires soon$/m),
    );
    expect(email.envelope).toMatchObject({ to: [OWNER.email], secure: true });
    expect(bodyOf(email)).toContain(`It stops working at ${deploy.apiKey.expiresAt}.`);
    for (const token of [deploy.token, monthly.token]) expect(email.raw).not.toContain(token);

    // The sweep runs every second and sees "deploy-prod" each time: a second key ending within the
    // week is noticed by a later pass, which does not tell of the first again.
    const nightly = await mint('nightly-backup', 2);
    const second = await smtp.next(
      to(OWNER.email, /^Subject: Your API key “nightly-backup” in Acme expires soon$/m),
    );
    expect(second.raw).not.toContain(nightly.token);
    await vi.waitFor(async () => {
      const rows = await outbox('api_key_expiring');
      expect(rows.map((row) => [row.recipient, row.state])).toEqual([
        [OWNER.email, 'sent'],
        [OWNER.email, 'sent'],
      ]);
    });
    const told = smtp.received
      .filter(subjectIs(expiring))
      .map((received) => expiring.exec(headersOf(received))?.[1]);
    expect(told).toEqual(['deploy-prod', 'nightly-backup']);
  });

  it('emails a sign-in from a new device to that person only, once', async () => {
    await signInFrom('nia@acme.test', FIREFOX);
    const email = await smtp.next(to('nia@acme.test', /^Subject: New sign-in from Firefox/m));
    expect(email.envelope.to).toEqual(['nia@acme.test']);
    expect(bodyOf(email)).toContain('If this was not you');
    // The same device again tells nobody anything.
    await signInFrom('nia@acme.test', FIREFOX);
    await vi.waitFor(async () => {
      const rows = await outbox('new_device_sign_in');
      expect(rows.map((row) => [row.recipient, row.state])).toEqual([['nia@acme.test', 'sent']]);
    });
    expect(smtp.received.filter(subjectIs(/^Subject: New sign-in/m))).toHaveLength(1);
  });

  it('keeps a display name with CR/LF inside the To header: it adds no Bcc', async () => {
    // The attacker's name for Nia, as an identity provider or a directory might hand it over.
    await reader.db
      .updateTable('users')
      .set({ display_name: 'Nia\r\nBcc: mallory@evil.test\r\nX-Injected: yes' })
      .where('id', '=', nia.id)
      .execute();
    await signInFrom('nia@acme.test', CHROME_WINDOWS);
    const email = await smtp.next(to('nia@acme.test', /^Subject: New sign-in from Chrome/m));
    // What a mail client parses: the name is one encoded word inside To, not a line of its own.
    const headers = rawHeadersOf(email);
    expect(headers).not.toMatch(/^Bcc:/im);
    expect(headers).not.toMatch(/^X-Injected:/im);
    expect(headers.match(/^To:/gim)).toHaveLength(1);
    expect(email.envelope.to).toEqual(['nia@acme.test']);
  });

  it('delivers a break-glass alert to the other owners after an SMTP outage', async () => {
    const olga = await world.join('olga@acme.test', 'owner');
    await world.join('pat@acme.test', 'operator');
    await smtp.next(to('pat@acme.test', /^Subject: You are invited/m));
    // The break-glass owner has a second factor, and the organization requires SSO (set as the
    // enforcement route would, which needs a live identity provider this test does not run).
    const started = await world.owner.client.json<{ factorId: string; secret: string }>(
      'POST',
      '/api/auth/mfa/totp',
      { name: 'phone' },
    );
    const codeNow = () =>
      generate({ secret: started.body.secret, crypto, epoch: Math.floor(world.clock.now() / 1000) });
    expect(
      (
        await world.owner.client.json('POST', `/api/auth/mfa/totp/${started.body.factorId}/confirm`, {
          code: await codeNow(),
        })
      ).status,
    ).toBe(200);
    // A new factor is a change of the owner's credentials: the owner is told (ASVS 6.3.7).
    const factor = await smtp.next(to(OWNER.email, /^Subject: An authenticator app was added/m));
    expect(factor.envelope.to).toEqual([OWNER.email]);
    await reader.db
      .updateTable('orgs')
      .set({ sso_required: 1, break_glass_user_id: world.owner.id })
      .where('slug', '=', 'acme')
      .execute();

    await smtp.stop();
    world.clock.advance(30_000); // the next authenticator code
    const client = new SessionClient(world.server.url);
    expect((await client.login(OWNER.email, OWNER.password)).status).toBe(200);
    expect((await client.json('POST', '/api/auth/mfa/verify', { code: await codeNow() })).status).toBe(200);

    const waiting = await failedAttempts('break_glass_sign_in', 'olga@acme.test', 1);
    expect(waiting.state).toBe('pending');
    expect(waiting.last_error).toMatch(/ECONNREFUSED|connect/i);
    await smtp.start();
    world.clock.advance(31_000); // past the first retry's backoff
    const alert = await smtp.next(to('olga@acme.test', /^Subject: ALERT: break-glass sign-in to Acme/m));
    expect(alert.envelope.to).toEqual([olga.email]);
    // The other owners only: not the break-glass owner, not an operator.
    // (Marked sent once the server's acknowledgement is in: a moment after the server has it.)
    await vi.waitFor(async () => {
      const rows = await outbox('break_glass_sign_in');
      expect(rows.map((row) => [row.recipient, row.state])).toEqual([['olga@acme.test', 'sent']]);
    });
  });

  it('refuses a relay whose certificate is from another CA, retries, and delivers once the CA is right', async () => {
    // A man in the middle: from now on, Bulwark is told to trust only the attacker's CA, so the
    // real server's certificate looks like an impostor's — exactly what the impostor's looks like
    // with the right CA configured.
    writeFileSync(trustedCa, mitm.caPem);
    await signInFrom('pat@acme.test', SAFARI_MAC);
    const refused = await failedAttempts('new_device_sign_in', 'pat@acme.test', 1);
    expect(refused.state).toBe('pending');
    expect(refused.last_error).toMatch(/certificate|self[- ]signed|issuer/i);
    expect(smtp.received.filter(to('pat@acme.test', /^Subject: New sign-in/m))).toHaveLength(0);

    writeFileSync(trustedCa, right.caPem);
    world.clock.advance(31_000);
    await smtp.next(to('pat@acme.test', /^Subject: New sign-in from Safari/m));
    await vi.waitFor(async () => {
      const [row] = (await outbox('new_device_sign_in')).filter((r) => r.recipient === 'pat@acme.test');
      expect([row?.state, row?.attempts]).toEqual(['sent', 2]);
    });
  });

  it('refuses a relay that does not offer STARTTLS, and sends nothing in clear', async () => {
    // A man in the middle strips STARTTLS from the server's offer, hoping the client carries on in
    // clear and hands over its SMTP password and the mail. STARTTLS is required: the attempt fails
    // before anything is said, and the message waits for the real server.
    await smtp.stop();
    await smtp.start({ stripStartTls: true });
    await signInFrom('pat@acme.test', EDGE_WINDOWS);
    const refused = await failedAttempts('new_device_sign_in', 'pat@acme.test', 1);
    expect(refused.state).toBe('pending');
    expect(refused.last_error).toMatch(/STARTTLS/i);
    expect(smtp.received.filter((email) => !email.envelope.secure)).toEqual([]);
    expect(world.server.logs.text).not.toContain(SMTP_PASSWORD);

    await smtp.stop();
    await smtp.start();
    world.clock.advance(31_000);
    const email = await smtp.next(to('pat@acme.test', /^Subject: New sign-in from (Edge|Chrome)/m));
    expect(email.envelope.secure).toBe(true);
  });

  it('gives up after the last attempt, keeping the reason and counting it on /metrics', async () => {
    writeFileSync(trustedCa, mitm.caPem);
    await signInFrom('olga@acme.test', EDGE_WINDOWS);
    await failedAttempts('new_device_sign_in', 'olga@acme.test', 1);
    world.clock.advance(31_000);
    await failedAttempts('new_device_sign_in', 'olga@acme.test', 2);
    world.clock.advance(61_000);
    const row = await failedAttempts('new_device_sign_in', 'olga@acme.test', 3);
    await vi.waitFor(async () => {
      const [last] = (await outbox('new_device_sign_in')).filter((r) => r.recipient === 'olga@acme.test');
      expect(last?.state).toBe('failed');
    });
    expect(row.last_error).toMatch(/certificate|issuer/i);
    const scrape = await fetch(`${world.server.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    const metrics = await scrape.text();
    expect(metrics).toMatch(/^bulwark_email_failed_total 1$/m);
    expect(metrics).toMatch(/^bulwark_email_attempts_failed_total [1-9]/m);
    writeFileSync(trustedCa, right.caPem);
  });

  it('sends after a restart what the SMTP server had not acknowledged before it', async () => {
    await smtp.stop();
    await signInFrom('olga@acme.test', FIREFOX);
    await failedAttempts('new_device_sign_in', 'olga@acme.test', 1);
    await world.server.stop();
    await smtp.start();
    const restarted = await restartTestServer(world.server, env, { clock: world.clock.now });
    try {
      world.clock.advance(31_000);
      const email = await smtp.next(to('olga@acme.test', /^Subject: New sign-in from Firefox/m));
      expect(email.envelope.to).toEqual(['olga@acme.test']);
    } finally {
      await restarted.stop();
    }
  });
});
