import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import BetterSqlite3 from 'better-sqlite3';
import { generate } from 'otplib';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { tableRows } from '../test-support/databases.js';
import { BACKENDS, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * Multi-factor authentication (MFA-1 to MFA-5, DATA-1), attacked from the outside:
 * - a member without a factor tries to work in an organization that requires one;
 * - someone with the password alone tries to get past the second step, by guessing, by replaying a
 *   code, by racing two sign-ins with one code, or with a used recovery code;
 * - a stale session tries privileged work, or to remove the last factor, with the password alone;
 * - someone with a copy of the database looks for TOTP seeds.
 */

const crypto = new NodeCryptoPlugin();
/** 24 characters of Crockford's base32 in groups of four: 120 random bits. */
const RECOVERY_CODE_SHAPE = /^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){5}$/;
const STEP_MS = 30_000;

let world: OrgWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

type ErrorBody = { error: { code: string } };
type SessionBody = {
  secondFactorRequired: boolean;
  memberships: Array<{ slug: string; mfaRequired: boolean }>;
};

/** The code an authenticator app shows at the world's current time (or `offsetSteps` away from it). */
const codeAt = (secret: string, offsetSteps = 0) =>
  generate({ secret, crypto, epoch: Math.floor((world!.clock.now() + offsetSteps * STEP_MS) / 1000) });

/** Enrols an authenticator for the signed-in owner; returns its secret and the recovery codes. */
async function enrolOwner() {
  const owner = world!.owner.client;
  const started = await owner.json<{ factorId: string; secret: string; uri: string }>(
    'POST',
    '/api/auth/mfa/totp',
    {
      name: 'phone',
    },
  );
  expect(started.status).toBe(201);
  const { factorId, secret } = started.body;
  const wrong = await owner.json<ErrorBody>('POST', `/api/auth/mfa/totp/${factorId}/confirm`, {
    code: (Number(await codeAt(secret)) ^ 1).toString().padStart(6, '0'),
  });
  expect(wrong.status).toBe(422);
  const confirmed = await owner.json<{ recoveryCodes: string[] }>(
    'POST',
    `/api/auth/mfa/totp/${factorId}/confirm`,
    {
      code: await codeAt(secret),
    },
  );
  expect(confirmed.status).toBe(200);
  return { factorId, secret, uri: started.body.uri, recoveryCodes: confirmed.body.recoveryCodes };
}

/** Signs the owner in with the password: a session waiting for its second factor. */
async function halfSignedIn() {
  const client = new SessionClient(world!.server.url);
  const response = await client.login(OWNER.email, OWNER.password);
  expect(response.status).toBe(200);
  const body = (await response.json()) as SessionBody;
  expect(body).toMatchObject({ secondFactorRequired: true, memberships: [] });
  return client;
}

describe.each(BACKENDS)('MFA on %s', (backend) => {
  it('is required by default: a member without a factor reaches only enrolment, and the seed is sealed at rest', async () => {
    world = await startOrgWorld({ BULWARK_BOOTSTRAP_MFA_REQUIRED: 'true' }, backend);
    const owner = world.owner.client;
    const refused = await owner.json<ErrorBody>('GET', '/api/orgs/acme/members');
    expect([refused.status, refused.body.error.code]).toEqual([403, 'mfa_enrolment_required']);
    const session = await owner.json<SessionBody>('GET', '/api/auth/session');
    expect(session.body.memberships).toEqual([expect.objectContaining({ slug: 'acme', mfaRequired: true })]);

    const { secret, uri, recoveryCodes } = await enrolOwner();
    expect(uri).toMatch(/^otpauth:\/\/totp\/Bulwark:owner%40acme\.test\?/);
    expect(uri).toContain(`secret=${secret}`);
    expect(secret).toMatch(/^[A-Z2-7]{32}$/); // 160 bits
    expect(recoveryCodes).toHaveLength(10);
    expect(new Set(recoveryCodes).size).toBe(10);
    for (const code of recoveryCodes) expect(code).toMatch(RECOVERY_CODE_SHAPE); // 120 bits (ASVS 6.5.2)
    expect((await owner.send('GET', '/api/orgs/acme/members')).status).toBe(200);
    const [denied] = (
      await owner.json<{ events: Array<{ details: { reason: string } }> }>(
        'GET',
        '/api/orgs/acme/audit/events?action=access.denied',
      )
    ).body.events;
    expect(denied?.details.reason).toContain('requires a second factor');

    if (backend === 'sqlite') {
      // Attack: a copy of the database file. No seed, no recovery code, in any form.
      const file = path.join(world.server.dataDir, 'bulwark.db');
      const raw = Buffer.concat([readFileSync(file), readFileSync(`${file}-wal`, { flag: 'a+' })]);
      expect(raw.includes(secret)).toBe(false);
      for (const code of recoveryCodes) {
        expect(raw.includes(code)).toBe(false);
        expect(raw.includes(code.replaceAll('-', ''))).toBe(false);
      }
      // What is there instead: the SHA-256 of each, a plain hash being enough only because each code
      // holds 120 random bits.
      const db = new BetterSqlite3(file, { readonly: true });
      const stored = db.prepare('select code_hash from recovery_codes').pluck().all();
      db.close();
      expect(new Set(stored)).toEqual(
        new Set(
          recoveryCodes.map((code) => createHash('sha256').update(code.replaceAll('-', '')).digest('hex')),
        ),
      );
    } else {
      // Attack: a dump of the database. No seed, no recovery code, in any row of any table.
      const database = openDatabase(world.server.config);
      try {
        const dump = JSON.stringify(await tableRows(database));
        expect(dump.includes(secret)).toBe(false);
        for (const code of recoveryCodes) {
          expect(dump.includes(code)).toBe(false);
          expect(dump.includes(code.replaceAll('-', ''))).toBe(false);
        }
        const stored = await database.db.selectFrom('recovery_codes').select('code_hash').execute();
        expect(new Set(stored.map((row) => row.code_hash))).toEqual(
          new Set(
            recoveryCodes.map((code) => createHash('sha256').update(code.replaceAll('-', '')).digest('hex')),
          ),
        );
      } finally {
        await database.close();
      }
    }
  });

  it('holds a password-only sign-in at the second step, accepts each code once, and refuses a replay or a race', async () => {
    world = await startOrgWorld({}, backend);
    const { secret } = await enrolOwner();

    const pending = await halfSignedIn();
    for (const route of ['/api/orgs/acme/members', '/api/auth/mfa', '/api/auth/sessions']) {
      const blocked = await pending.json<ErrorBody>('GET', route);
      expect([blocked.status, blocked.body.error.code], route).toEqual([401, 'second_factor_required']);
    }
    // The code just used to confirm the authenticator is spent: replaying it is refused.
    const replayed = await pending.json<ErrorBody>('POST', '/api/auth/mfa/verify', {
      code: await codeAt(secret),
    });
    expect(replayed.status).toBe(422);

    world.clock.advance(STEP_MS);
    const cookieBefore = pending.cookie;
    const verified = await pending.json<SessionBody>('POST', '/api/auth/mfa/verify', {
      code: await codeAt(secret),
    });
    expect(verified.status).toBe(200);
    expect(verified.body.secondFactorRequired).toBe(false);
    expect(pending.cookie).not.toBe(cookieBefore); // a new session id at the privilege change
    expect((await pending.send('GET', '/api/orgs/acme/members')).status).toBe(200);

    // Two sign-ins race with one fresh code: exactly one gets in.
    world.clock.advance(STEP_MS);
    const racers = [await halfSignedIn(), await halfSignedIn()];
    const code = await codeAt(secret);
    const raced = await Promise.all(racers.map((c) => c.send('POST', '/api/auth/mfa/verify', { code })));
    expect(raced.map((r) => r.status).sort()).toEqual([200, 422]);

    // The window: the previous step's code is accepted; two steps back, or one ahead, is not.
    world.clock.advance(3 * STEP_MS);
    const late = await halfSignedIn();
    expect((await late.send('POST', '/api/auth/mfa/verify', { code: await codeAt(secret, -2) })).status).toBe(
      422,
    );
    expect((await late.send('POST', '/api/auth/mfa/verify', { code: await codeAt(secret, 1) })).status).toBe(
      422,
    );
    expect((await late.send('POST', '/api/auth/mfa/verify', { code: await codeAt(secret, -1) })).status).toBe(
      200,
    );

    // Sign-in events belong to no organization: they are in the instance chain.
    const failed = await world.cli('audit', 'export', '--org', 'instance', '--action', 'auth.mfa_failed');
    expect(failed.code, failed.stderr).toBe(0);
    expect(failed.stdout.trim().split('\n')).toHaveLength(4); // the replay, the race's loser, too old, too new
  });

  it('stops guessing: the tenth wrong code locks the account, even across fresh password sign-ins, and then even the right code waits', async () => {
    world = await startOrgWorld({}, backend);
    const { secret } = await enrolOwner();
    world.clock.advance(STEP_MS);
    const right = await codeAt(secret);
    const statuses: number[] = [];
    // Attack: someone with the password signs in again every few guesses, hoping to reset the count.
    let guesser = await halfSignedIn();
    for (let guess = 0; statuses.length < 10; guess++) {
      const code = String(guess).padStart(6, '0');
      if (code === right) continue;
      statuses.push((await guesser.send('POST', '/api/auth/mfa/verify', { code })).status);
      if (statuses.length % 3 === 0) guesser = await halfSignedIn();
    }
    expect(statuses).toEqual(Array(10).fill(422));
    const locked = await guesser.json<ErrorBody>('POST', '/api/auth/mfa/verify', { code: right });
    expect(locked.status).toBe(429);
  });

  it('accepts each recovery code once, in any case and spacing; new codes end the old ones', async () => {
    world = await startOrgWorld({}, backend);
    const { recoveryCodes } = await enrolOwner();
    const [first, second] = recoveryCodes as [string, string];

    const pending = await halfSignedIn();
    const typed = first.toLowerCase().replaceAll('-', ' ');
    expect((await pending.send('POST', '/api/auth/mfa/verify', { code: typed })).status).toBe(200);
    const left = await pending.json<{ recoveryCodesLeft: number }>('GET', '/api/auth/mfa');
    expect(left.body.recoveryCodesLeft).toBe(9);
    const again = await halfSignedIn();
    expect((await again.send('POST', '/api/auth/mfa/verify', { code: first })).status).toBe(422);
    // Two sign-ins race with one recovery code: one guarded update spends it, one gets in.
    const racers = [await halfSignedIn(), await halfSignedIn()];
    const raced = await Promise.all(
      racers.map((c) => c.send('POST', '/api/auth/mfa/verify', { code: recoveryCodes[2] })),
    );
    expect(raced.map((r) => r.status).sort()).toEqual([200, 422]);

    const renewed = await pending.json<{ recoveryCodes: string[] }>('POST', '/api/auth/mfa/recovery-codes');
    expect(renewed.body.recoveryCodes).toHaveLength(10);
    expect((await again.send('POST', '/api/auth/mfa/verify', { code: second })).status).toBe(422);
    expect(
      (await again.send('POST', '/api/auth/mfa/verify', { code: renewed.body.recoveryCodes[0] })).status,
    ).toBe(200);
  });

  it('re-proves password and second factor for privileged work, for relaxing the policy and for removing the last factor', async () => {
    world = await startOrgWorld({ BULWARK_BOOTSTRAP_MFA_REQUIRED: 'true' }, backend);
    const owner = world.owner.client;
    const { secret, factorId } = await enrolOwner();

    // Attack: a session left open for twenty minutes is used to switch the policy off.
    world.clock.advance(20 * 60_000);
    const stale = await owner.json<ErrorBody>('PUT', '/api/orgs/acme/security-policy', {
      mfaRequired: false,
    });
    expect([stale.status, stale.body.error.code]).toEqual([403, 'step_up_required']);
    const passwordOnly = await owner.json<{ error: { fields: Array<{ path: string }> } }>(
      'POST',
      '/api/auth/reauth',
      {
        password: OWNER.password,
      },
    );
    expect([passwordOnly.status, passwordOnly.body.error.fields[0]?.path]).toEqual([422, 'body.code']);
    const reproved = await owner.send('POST', '/api/auth/reauth', {
      password: OWNER.password,
      code: await codeAt(secret),
    });
    expect(reproved.status).toBe(200);

    const relaxed = await owner.json<{ mfaRequired: boolean; warning: string | null }>(
      'PUT',
      '/api/orgs/acme/security-policy',
      { mfaRequired: false },
    );
    expect(relaxed.status).toBe(200);
    expect(relaxed.body.mfaRequired).toBe(false);
    expect(relaxed.body.warning).toContain('password alone');
    const changed = await owner.json<{ events: Array<{ details: Record<string, unknown> }> }>(
      'GET',
      '/api/orgs/acme/audit/events?action=org.security_policy_changed',
    );
    expect(changed.body.events[0]?.details).toMatchObject({
      relaxed: true,
      mfaRequired: { from: true, to: false },
    });
    // Back to required, then the last factor: it needs a fresh step-up too.
    expect((await owner.send('PUT', '/api/orgs/acme/security-policy', { mfaRequired: true })).status).toBe(
      200,
    );
    world.clock.advance(20 * 60_000);
    const staleRemove = await owner.json<ErrorBody>('DELETE', `/api/auth/mfa/factors/${factorId}`);
    expect([staleRemove.status, staleRemove.body.error.code]).toEqual([403, 'step_up_required']);
    // Changing the password proves only the password: it opens no step-up window.
    const newPassword = 'Another-Quiet-Harbor-Lantern-57';
    expect(
      (await owner.send('POST', '/api/auth/password', { currentPassword: OWNER.password, newPassword }))
        .status,
    ).toBe(200);
    const afterChange = await owner.json<ErrorBody>('DELETE', `/api/auth/mfa/factors/${factorId}`);
    expect([afterChange.status, afterChange.body.error.code]).toEqual([403, 'step_up_required']);
    const reauth = await owner.send('POST', '/api/auth/reauth', {
      password: newPassword,
      code: await codeAt(secret, 0),
    });
    expect(reauth.status).toBe(200);
    const removed = await owner.json<{ factorsLeft: number }>('DELETE', `/api/auth/mfa/factors/${factorId}`);
    expect(removed.body.factorsLeft).toBe(0);
    expect(
      (await owner.json<{ recoveryCodesLeft: number }>('GET', '/api/auth/mfa')).body.recoveryCodesLeft,
    ).toBe(0);
    // Without a factor, the policy holds the owner at enrolment again.
    expect((await owner.send('GET', '/api/orgs/acme/members')).status).toBe(403);
  });

  it('refuses an API key of a member without a factor once the organization requires one', async () => {
    world = await startOrgWorld({}, backend);
    const admin = await world.join('ada@acme.test', 'admin');
    const created = await admin.client.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
      name: 'made while relaxed',
      permissions: ['members:read'],
    });
    const withKey = () =>
      fetch(`${world!.server.url}/api/orgs/acme/members`, {
        headers: { authorization: `Bearer ${created.body.token}` },
      });
    expect((await withKey()).status).toBe(200);
    // The owner, who has a factor, turns the policy on; the admin who made the key has none.
    await enrolOwner();
    expect(
      (await world.owner.client.send('PUT', '/api/orgs/acme/security-policy', { mfaRequired: true })).status,
    ).toBe(200);
    const refused = await withKey();
    expect([refused.status, ((await refused.json()) as ErrorBody).error.code]).toEqual([
      403,
      'mfa_enrolment_required',
    ]);
  });

  it('answers a code with 422, not an error, when the server clock went back behind the last step used', async () => {
    world = await startOrgWorld({}, backend);
    const { secret } = await enrolOwner();
    world.clock.advance(-2 * STEP_MS);
    const pending = await halfSignedIn();
    expect((await pending.send('POST', '/api/auth/mfa/verify', { code: await codeAt(secret) })).status).toBe(
      422,
    );
  });

  it('offers to end the sessions open elsewhere once a factor is added, and ends them on request (AUTH-5)', async () => {
    world = await startOrgWorld({}, backend);
    // Someone who had the password alone signed in elsewhere before the owner added a factor.
    const elsewhere = await world.signIn(OWNER.email, OWNER.password);
    const owner = world.owner.client;
    const started = await owner.json<{ factorId: string; secret: string }>('POST', '/api/auth/mfa/totp', {});
    const confirmed = await owner.json<{ otherSessions: number }>(
      'POST',
      `/api/auth/mfa/totp/${started.body.factorId}/confirm`,
      { code: await codeAt(started.body.secret) },
    );
    expect(confirmed.body.otherSessions).toBe(1);
    // Adding the factor alone does not end that session: the owner is offered to, and does.
    expect((await elsewhere.client.send('GET', '/api/orgs/acme/members')).status).toBe(200);
    const ended = await owner.json<{ ended: number }>('DELETE', '/api/auth/sessions');
    expect(ended.body.ended).toBe(1);
    expect((await elsewhere.client.send('GET', '/api/orgs/acme/members')).status).toBe(401);
    expect((await owner.send('GET', '/api/orgs/acme/members')).status).toBe(200);
    const listed = await owner.json<{ sessions: unknown[] }>('GET', '/api/auth/sessions');
    expect(listed.body.sessions).toHaveLength(1);
  });

  it('will not let an owner without a factor require one: they would lock themselves out with it', async () => {
    world = await startOrgWorld({}, backend);
    const owner = world.owner.client;
    const refused = await owner.json<ErrorBody>('PUT', '/api/orgs/acme/security-policy', {
      mfaRequired: true,
    });
    expect([refused.status, refused.body.error.code]).toEqual([409, 'own_factor_required']);
    const policy = await owner.json<{ mfaRequired: boolean }>('GET', '/api/orgs/acme/security-policy');
    expect(policy.body.mfaRequired).toBe(false);
    // With a factor of their own, the owner may.
    await enrolOwner();
    expect((await owner.send('PUT', '/api/orgs/acme/security-policy', { mfaRequired: true })).status).toBe(
      200,
    );
  });

  it('is not bypassed by an administrator resetting the password', async () => {
    world = await startOrgWorld({}, backend);
    await enrolOwner();
    const reset = await world.admin('reset-password', '--email', OWNER.email);
    expect(reset.code, reset.stderr).toBe(0);
    const password = /password:\s+(\S+)/.exec(reset.stdout)?.[1];
    const client = new SessionClient(world.server.url);
    const body = (await (await client.login(OWNER.email, password!)).json()) as SessionBody;
    expect(body.secondFactorRequired).toBe(true);
    expect((await client.send('GET', '/api/orgs/acme/members')).status).toBe(401);
  });
});
