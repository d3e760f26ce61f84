import { AGENT_REGISTER_PATH, generateToken, newId, rawPublicKey, tokenHash } from '@bulwark/protocol';
import { hash } from '@node-rs/argon2';
import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openPostgres, openSqlite } from '../db/database.js';
import { newRecoveryCodes, normalizeRecoveryCode, recoveryCodeHash } from '../mfa/recovery-codes.js';
import { agentKeys } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { ARGON2_PARAMS } from './password-hasher.js';

/**
 * Attacker: someone who can write the database but not read the master key (a SQL console left open,
 * a compromised replica, a backup restored and written back). Tokens are stored as SHA-256 hashes, and
 * a hash is no secret to them: without the server's seals they could write in a session, an API key,
 * a recovery code or an invitation for a token of their own, give an existing key more permissions,
 * point a session at another person, or put in a password hash for a password they chose, and then
 * act as anyone. Each row the server issues is sealed under a key derived from the master key; each
 * use checks the seal. Every attack below is refused, counted on /metrics and audited as critical.
 */

const METRICS_TOKEN = 'credential-metrics-token-0123456789abcdef';
const crypto = new NodeCryptoPlugin();

type ErrorBody = { error: { code: string } };

describe.each(BACKENDS)('credentials written into the database on %s', (backend: Backend) => {
  let world: OrgWorld;
  let attacker: Database;
  let orgId: string;

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_METRICS_TOKEN: METRICS_TOKEN }, backend);
    const config = world.server.config.database;
    attacker =
      config.kind === 'sqlite'
        ? openSqlite({ file: config.file, busyTimeoutMs: 10_000 })
        : openPostgres({ url: config.url, poolMax: 2 });
    orgId = (await attacker.db.selectFrom('orgs').select('id').executeTakeFirstOrThrow()).id;
  }, 60_000);

  afterAll(async () => {
    await attacker?.db.destroy();
    await world?.close();
  });

  const now = () => world.clock.now();

  /** The critical events the refusals left, by kind of credential. */
  async function integrityEvents(kind: string) {
    const rows = await attacker.db
      .selectFrom('audit_events')
      .select(['details', 'target_id', 'org_id'])
      .where('action', '=', 'credential.integrity_failed')
      .execute();
    return rows
      .map((row) => ({ ...row, details: JSON.parse(row.details) as { kind: string; severity: string } }))
      .filter((row) => row.details.kind === kind);
  }

  /** A client holding a session cookie the attacker made up. */
  const withCookie = (token: string) => {
    const client = new SessionClient(world.server.url);
    client.cookie = token;
    return client;
  };

  async function sessionRowOf(member: Member) {
    return attacker.db
      .selectFrom('sessions')
      .selectAll()
      .where('user_id', '=', member.id)
      .where('revoked_at', 'is', null)
      .orderBy('created_at', 'desc')
      .executeTakeFirstOrThrow();
  }

  it('a session row written in for a token of their own opens nothing, even with a real seal copied in', async () => {
    const real = await sessionRowOf(world.owner);
    for (const seal of ['', real.seal]) {
      const token = generateToken('bws');
      await attacker.db
        .insertInto('sessions')
        .values({
          ...real,
          id: newId('ses', now()),
          token_hash: tokenHash(token),
          seal,
        })
        .execute();
      const answer = await withCookie(token).json<ErrorBody>('GET', '/api/orgs/acme/members');
      expect(answer.status).toBe(401);
    }
    // The owner's own session, sealed by the server, still works: only the forged rows are refused.
    expect((await world.owner.client.json('GET', '/api/orgs/acme/members')).status).toBe(200);
    const events = await integrityEvents('session');
    expect(events).toHaveLength(2);
    expect(events.every((event) => event.details.severity === 'critical')).toBe(true);
    expect(events.every((event) => event.target_id === world.owner.id)).toBe(true);
  });

  it('a session pointed at another person opens nothing', async () => {
    const member = await world.join('viewer-session@acme.test', 'viewer');
    const row = await sessionRowOf(member);
    // Their own session, moved onto the owner: it would act with the owner's role.
    await attacker.db
      .updateTable('sessions')
      .set({ user_id: world.owner.id })
      .where('id', '=', row.id)
      .execute();
    const answer = await member.client.json<ErrorBody>('GET', '/api/orgs/acme/api-keys');
    expect(answer.status).toBe(401);
    expect(await integrityEvents('session')).toHaveLength(3);
  });

  it("a password hash of their choosing, or another user's verifier, signs nobody in", async () => {
    const victim = await world.join('victim-password@acme.test', 'admin');
    const accomplice = await world.join('accomplice@acme.test', 'viewer');
    // A plain argon2id hash of a password they picked: what the row held before verifiers were sealed.
    const picked = 'Attacker-Picked-Password-7';
    await attacker.db
      .updateTable('users')
      .set({ password_hash: await hash(picked, ARGON2_PARAMS) })
      .where('id', '=', victim.id)
      .execute();
    expect((await new SessionClient(world.server.url).login(victim.email, picked)).status).toBe(401);
    // The accomplice's own sealed verifier, copied over: it opens for the accomplice only, although
    // both passwords are the same here (so nothing but the binding to the user refuses it).
    const theirs = await attacker.db
      .selectFrom('users')
      .select('password_hash')
      .where('id', '=', accomplice.id)
      .executeTakeFirstOrThrow();
    await attacker.db
      .updateTable('users')
      .set({ password_hash: theirs.password_hash })
      .where('id', '=', victim.id)
      .execute();
    expect((await new SessionClient(world.server.url).login(victim.email, MEMBER_PASSWORD)).status).toBe(401);
    expect((await new SessionClient(world.server.url).login(accomplice.email, MEMBER_PASSWORD)).status).toBe(
      200,
    );
    const failed = await attacker.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'auth.login_failed')
      .where('target_id', '=', victim.id)
      .execute();
    expect(failed.map((row) => JSON.parse(row.details).reason)).toEqual([
      'credential_integrity',
      'credential_integrity',
    ]);
    expect(await integrityEvents('password')).toHaveLength(2);
  });

  it('an API key row of their own opens nothing, and a key given more permissions stops working', async () => {
    const created = await world.owner.client.json<{ token: string; apiKey: { id: string } }>(
      'POST',
      '/api/orgs/acme/api-keys',
      { name: 'read agents', permissions: ['agents:read'] },
    );
    expect(created.status).toBe(201);
    const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
    const agentsWith = (token: string) =>
      fetch(`${world.server.url}/api/orgs/acme/agents`, { headers: bearer(token) });
    expect((await agentsWith(created.body.token)).status).toBe(200);

    await attacker.db
      .updateTable('api_keys')
      .set({ permissions: JSON.stringify(['agents:read', 'members:manage', 'secrets:write']) })
      .where('id', '=', created.body.apiKey.id)
      .execute();
    expect((await agentsWith(created.body.token)).status).toBe(401);

    const key = await attacker.db
      .selectFrom('api_keys')
      .selectAll()
      .where('id', '=', created.body.apiKey.id)
      .executeTakeFirstOrThrow();
    const theirs = generateToken('bwk');
    await attacker.db
      .insertInto('api_keys')
      .values({ ...key, id: newId('apk', now()), token_hash: tokenHash(theirs), name: 'backdoor' })
      .execute();
    expect((await agentsWith(theirs)).status).toBe(401);
    expect(await integrityEvents('api-key')).toHaveLength(2);
  });

  it('an invitation written in admits nobody', async () => {
    const token = generateToken('bwi');
    await attacker.db
      .insertInto('invitations')
      .values({
        id: newId('inv', now()),
        org_id: orgId,
        email: 'intruder@attacker.test',
        role: 'owner',
        token_hash: tokenHash(token),
        invited_by: world.owner.id,
        created_at: now(),
        expires_at: now() + 3_600_000,
        accepted_at: null,
        accepted_by: null,
        revoked_at: null,
        seal: '',
      })
      .execute();
    const accepted = await new SessionClient(world.server.url).json<ErrorBody>(
      'POST',
      '/api/invitations/accept',
      { token, displayName: 'Intruder', password: 'Intruder-Password-Long-42' },
    );
    // The answer an unknown token gets: the holder learns nothing more.
    expect([accepted.status, accepted.body.error.code]).toEqual([404, 'invitation_invalid']);
    const user = await attacker.db
      .selectFrom('users')
      .select('id')
      .where('email', '=', 'intruder@attacker.test')
      .executeTakeFirst();
    expect(user).toBeUndefined();
    expect(await integrityEvents('invitation')).toHaveLength(1);
  });

  it('a registration token written in registers no agent', async () => {
    const token = generateToken('bwr');
    await attacker.db
      .insertInto('registration_tokens')
      .values({
        id: newId('rgt', now()),
        org_id: orgId,
        token_hash: tokenHash(token),
        description: 'backdoor',
        labels: JSON.stringify({ env: 'production' }),
        uses_allowed: 1,
        uses: 0,
        created_by: world.owner.id,
        created_at: now(),
        expires_at: now() + 3_600_000,
        revoked_at: null,
        seal: '',
      })
      .execute();
    const keys = agentKeys();
    const response = await fetch(`${world.server.url}${AGENT_REGISTER_PATH}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        token,
        name: 'rogue',
        signingKey: rawPublicKey(keys.signing.publicKey),
        encryptionKey: rawPublicKey(keys.encryption.publicKey),
      }),
    });
    expect(response.status).toBe(401);
    expect(await attacker.db.selectFrom('agents').select('id').execute()).toEqual([]);
    const refused = await attacker.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'agent.registration_refused')
      .executeTakeFirstOrThrow();
    expect(JSON.parse(refused.details).reason).toBe('token_integrity');
    expect(await integrityEvents('registration-token')).toHaveLength(1);
  });

  it('a recovery code written in is no second factor for someone who knows only the password', async () => {
    const victim = await world.join('victim-mfa@acme.test', 'admin');
    const started = await victim.client.json<{ factorId: string; secret: string }>(
      'POST',
      '/api/auth/mfa/totp',
      { name: 'phone' },
    );
    const code = await generate({ secret: started.body.secret, crypto, epoch: Math.floor(now() / 1000) });
    const confirmed = await victim.client.json<{ recoveryCodes: string[] }>(
      'POST',
      `/api/auth/mfa/totp/${started.body.factorId}/confirm`,
      { code },
    );
    expect(confirmed.status).toBe(200);

    const theirs = newRecoveryCodes()[0]!;
    await attacker.db
      .insertInto('recovery_codes')
      .values({
        user_id: victim.id,
        code_hash: recoveryCodeHash(normalizeRecoveryCode(theirs)!),
        created_at: now(),
        used_at: null,
        seal: '',
      })
      .execute();
    const pending = new SessionClient(world.server.url);
    expect((await pending.login(victim.email, MEMBER_PASSWORD)).status).toBe(200);
    const refused = await pending.json<ErrorBody>('POST', '/api/auth/mfa/verify', { code: theirs });
    expect(refused.status).toBe(422);
    // The victim's own code, issued and sealed by the server, still completes the sign-in.
    const verified = await pending.json('POST', '/api/auth/mfa/verify', {
      code: confirmed.body.recoveryCodes[0],
    });
    expect(verified.status).toBe(200);
    expect(await integrityEvents('recovery-code')).toHaveLength(1);
  });

  it('counts every refusal on /metrics, by kind', async () => {
    const scrape = await fetch(`${world.server.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    const metrics = await scrape.text();
    for (const [kind, count] of Object.entries({
      session: 3,
      password: 2,
      'api-key': 2,
      invitation: 1,
      'registration-token': 1,
      'recovery-code': 1,
    }))
      expect(metrics).toMatch(
        new RegExp(`bulwark_credential_integrity_failures_total\\{kind="${kind}"\\} ${count}\\b`),
      );
  });
});
