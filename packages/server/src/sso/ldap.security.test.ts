import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../db/database.js';
import { openBeside } from '../test-support/databases.js';
import { BACKENDS, type Backend, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { LDAP_GROUPS, LDAP_USERS, type Slapd, slapdForSuite, startSlapd } from '../test-support/slapd.js';
import { tempDir } from '../test-support/temp.js';
import { makeTestCa, type TestCa } from '../test-support/test-ca.js';

/**
 * LDAP / Active Directory sign-in (SSO-3) against a real slapd the test starts with its own
 * configuration, TLS and people. The attacks: a sign-in name that is an LDAP filter (injection), an
 * empty password (which a directory may take as an anonymous bind that "succeeds"), guessing
 * passwords without end, a directory whose certificate nobody vouches for, and reading the service
 * account's password back from the API or the database.
 */

type ErrorBody = { error: { code: string; message: string; requestId?: string } };

const slapdHere = slapdForSuite('the LDAP sign-in tests');

describe.skipIf(!slapdHere.available).each(BACKENDS)('LDAP sign-in on %s', (backend: Backend) => {
  let world: OrgWorld;
  let slapd: Slapd;
  let connectionId: string;
  let reader: Database;
  /**
   * The server's BULWARK_BACKING_TLS_CA_FILE (NET-4), the CA trusted for a connection that names none
   * of its own. It holds another CA than the directory's (whoever sits on the path would present one
   * like it), except where a test puts the directory's CA in it: the file is read at each connection.
   */
  let sharedCa: { dir: { path: string; remove(): Promise<void> }; file: string; other: TestCa };

  const ldapConfig = (overrides: Record<string, unknown> = {}) => ({
    url: slapd.url,
    caPem: slapd.caPem,
    bindDn: slapd.serviceAccount.dn,
    bindPassword: slapd.serviceAccount.password,
    userBaseDn: `ou=people,${slapd.baseDn}`,
    groupBaseDn: `ou=groups,${slapd.baseDn}`,
    defaultRole: 'viewer',
    groupRoles: [{ group: 'admins', role: 'admin' }],
    ...overrides,
  });
  const connect = (name: string, config: Record<string, unknown>) =>
    world.owner.client.json<{ id: string; config: Record<string, unknown> } & ErrorBody>(
      'POST',
      '/api/orgs/acme/sso/connections',
      { name, kind: 'ldap', config },
    );
  const signIn = async (username: string, password: string, connection = connectionId) => {
    const client = new SessionClient(world.server.url);
    const answer = await client.json<ErrorBody & { status?: string }>(
      'POST',
      `/api/auth/sso/${connection}/ldap`,
      { username, password },
    );
    return { ...answer, client };
  };
  const roleOf = async (email: string) => {
    const members = await world.owner.client.json<{ members: Array<{ email: string; role: string }> }>(
      'GET',
      '/api/orgs/acme/members',
    );
    return members.body.members.find((member) => member.email === email)?.role;
  };
  const withoutRequestId = (body: ErrorBody) => ({ ...body, error: { ...body.error, requestId: undefined } });

  beforeAll(async () => {
    const dir = await tempDir('ldap-shared-ca');
    sharedCa = { dir, file: path.join(dir.path, 'backing-ca.pem'), other: makeTestCa(dir.path, 'elsewhere') };
    writeFileSync(sharedCa.file, sharedCa.other.caPem);
    world = await startOrgWorld(
      { BULWARK_LOGIN_ACCOUNT_FAILURES: '5', BULWARK_BACKING_TLS_CA_FILE: sharedCa.file },
      backend,
    );
    slapd = await startSlapd();
    const created = await connect('Corporate directory', ldapConfig());
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    connectionId = created.body.id;
    reader = openBeside(world.server.config.database);
  }, 60_000);

  afterAll(async () => {
    await reader?.db.destroy();
    await slapd?.stop();
    await world?.close();
    await sharedCa?.dir.remove();
  });

  it('signs a person in by binding as them over verified TLS, and provisions them with their groups’ role', async () => {
    const alice = await signIn('alice', LDAP_USERS.alice.password);
    expect([alice.status, alice.body.status]).toEqual([200, 'signed_in']);
    const session = await alice.client.json<{ user: { email: string } }>('GET', '/api/auth/session');
    expect(session.body.user.email).toBe(LDAP_USERS.alice.mail);
    expect(await roleOf(LDAP_USERS.alice.mail)).toBe('viewer');

    const bob = await signIn('bob', LDAP_USERS.bob.password);
    expect(bob.status).toBe(200);
    expect(await roleOf(LDAP_USERS.bob.mail)).toBe('admin');
    // Out of the group at the directory: the role follows at the next sign-in.
    await slapd.modify(
      `dn: ${LDAP_GROUPS.admins.dn}\nchangetype: modify\nadd: member\nmember: ${LDAP_USERS.alice.dn}\n-\ndelete: member\nmember: ${LDAP_USERS.bob.dn}\n`,
    );
    expect((await signIn('bob', LDAP_USERS.bob.password)).status).toBe(200);
    expect(await roleOf(LDAP_USERS.bob.mail)).toBe('viewer');
    await slapd.modify(
      `dn: ${LDAP_GROUPS.admins.dn}\nchangetype: modify\nadd: member\nmember: ${LDAP_USERS.bob.dn}\n-\ndelete: member\nmember: ${LDAP_USERS.alice.dn}\n`,
    );
  });

  it('shows in the access review the directory and who signs in through it, never its password', async () => {
    const response = await world.owner.client.send('GET', '/api/orgs/acme/access-review');
    const text = await response.text();
    expect(text).not.toContain(slapd.serviceAccount.password);
    const review = JSON.parse(text) as {
      sso: { configured: boolean; connections: Array<{ kind: string; name: string }> };
      members: Array<{ email: string; signsInThrough: string[] }>;
    };
    expect(review.sso.configured).toBe(true);
    expect(review.sso.connections).toContainEqual(
      expect.objectContaining({ kind: 'ldap', name: 'Corporate directory' }),
    );
    // The directory's address and base, kept to this organization (another cannot name it into its people).
    expect(review.members.find((m) => m.email === LDAP_USERS.alice.mail)?.signsInThrough).toEqual([
      expect.stringMatching(new RegExp(`^ldap:org_\\w+:ldaps://${new URL(slapd.url).host}/ou=people,`)),
    ]);
  });

  it('steps a directory session up by asking the directory for the password again', async () => {
    const alice = await signIn('alice', LDAP_USERS.alice.password);
    expect(alice.status).toBe(200);
    await alice.client.json('GET', '/api/auth/session'); // the CSRF token, as the console holds it
    const before = alice.client.cookie;
    const again = (password: string) =>
      alice.client.json<ErrorBody & { status?: string }>('POST', '/api/auth/sso/reauthenticate/directory', {
        password,
      });
    for (const wrong of ['', 'not-her-password']) {
      const refused = await again(wrong);
      expect([refused.status, refused.body.error.code], wrong).toEqual([401, 'invalid_credentials']);
    }
    const done = await again(LDAP_USERS.alice.password);
    expect([done.status, done.body.status]).toEqual([200, 'reauthenticated']);
    // A new session replaces the old one, which ends.
    expect(alice.client.cookie).not.toBe(before);
    const old = await fetch(`${world.server.url}/api/auth/session`, {
      headers: { cookie: `__Host-bulwark_session=${before}` },
    });
    expect(old.status).toBe(401);
    const events = await reader.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'auth.reauthenticated')
      .execute();
    expect(events.some((event) => String(event.details).includes(connectionId))).toBe(true);
    // A session signed in with a password has no directory to ask.
    const owner = await world.owner.client.json<ErrorBody>('POST', '/api/auth/sso/reauthenticate/directory', {
      password: 'x',
    });
    expect([owner.status, owner.body.error.code]).toEqual([400, 'sso_connection_kind']);
  });

  it('treats a sign-in name as a name, never as a filter (LDAP injection)', async () => {
    const wrong = await signIn('alice', 'not-her-password');
    expect([wrong.status, wrong.body.error.code]).toEqual([401, 'invalid_credentials']);
    for (const name of [
      '*',
      'al*',
      'alice)(uid=*',
      '*)(objectClass=*',
      'alice)(|(uid=*',
      'bob\\29',
      '\u0000',
    ]) {
      // With alice's password: a wildcard or a smuggled clause that matched her would sign in as her.
      const answer = await signIn(name, LDAP_USERS.alice.password);
      expect([answer.status, answer.body.error.code], name).toEqual([401, 'invalid_credentials']);
      // The same answer as a wrong password: the name's fate is not told apart.
      expect(withoutRequestId(answer.body)).toEqual(withoutRequestId(wrong.body));
    }
    const unknown = await signIn('nobody-here', 'whatever');
    expect(withoutRequestId(unknown.body)).toEqual(withoutRequestId(wrong.body));
  });

  it('never signs anyone in with an empty password', async () => {
    for (const name of ['alice', LDAP_USERS.alice.dn, slapd.serviceAccount.dn]) {
      const answer = await signIn(name, '');
      expect([answer.status, answer.body.error.code], name).toEqual([401, 'invalid_credentials']);
      expect(answer.client.cookie).toBeUndefined();
    }
  });

  it('locks an account after repeated wrong passwords, like password sign-in', async () => {
    let locked: { status: number; body: ErrorBody } | undefined;
    for (let attempt = 0; attempt < 8 && !locked; attempt++) {
      const answer = await signIn('bob', `guess-${attempt}`);
      if (answer.status === 429) locked = answer;
      else expect(answer.status).toBe(401);
    }
    expect(locked?.body.error.code).toBe('too_many_attempts');
    // Even the right password waits out the lock.
    expect((await signIn('bob', LDAP_USERS.bob.password)).status).toBe(429);
    const lockouts = await reader.db
      .selectFrom('audit_events')
      .select('details')
      .where('action', '=', 'auth.locked_out')
      .execute();
    expect(lockouts.some((event) => String(event.details).includes('ldap'))).toBe(true);
  });

  it('refuses a directory whose certificate it cannot verify, and speaks StartTLS on ldap://', async () => {
    // No CA given: the connection trusts the backing-services CA, and the directory's is not that one.
    const unverified = await connect('Unverified directory', ldapConfig({ caPem: null }));
    expect(unverified.status).toBe(201);
    const refused = await signIn('alice', LDAP_USERS.alice.password, unverified.body.id);
    expect([refused.status, refused.body.error.code]).toEqual([400, 'ldap_certificate']);
    const tested = await world.owner.client.json<{ ok: boolean; problem: string }>(
      'POST',
      `/api/orgs/acme/sso/connections/${unverified.body.id}/test`,
    );
    expect(tested.body.ok).toBe(false);
    expect(tested.body.problem).toMatch(/certificate/);

    const startTls = await connect('StartTLS directory', ldapConfig({ url: slapd.startTlsUrl }));
    expect(startTls.status).toBe(201);
    // Another address is another issuer: someone new signs in there (alice's account is linked to the ldaps one).
    await slapd.addUser({
      uid: 'carol',
      cn: 'Carol Example',
      mail: 'carol@example.test',
      password: 'carol-password',
    });
    expect((await signIn('carol', 'carol-password', startTls.body.id)).status).toBe(200);
    const linked = await signIn('alice', LDAP_USERS.alice.password, startTls.body.id);
    expect(linked.body.error.code).toBe('sso_account_exists');
  });

  it('trusts the backing-services CA (BULWARK_BACKING_TLS_CA_FILE) for a directory that names no CA of its own', async () => {
    // The operator's private CA signs the directory's certificate and is configured once for every
    // backing service; a connection without a CA of its own must verify against it (NET-4), and
    // against nothing else: while the file holds another CA, the same directory is refused.
    const shared = await connect('Directory under the shared CA', ldapConfig({ caPem: null }));
    expect(shared.status).toBe(201);
    const test = () =>
      world.owner.client.json<{ ok: boolean; problem?: string }>(
        'POST',
        `/api/orgs/acme/sso/connections/${shared.body.id}/test`,
      );
    const refused = await test();
    expect(refused.body).toMatchObject({ ok: false, problem: expect.stringMatching(/certificate/) });
    writeFileSync(sharedCa.file, slapd.caPem);
    try {
      expect((await test()).body).toEqual(expect.objectContaining({ ok: true }));
      const alice = await signIn('alice', LDAP_USERS.alice.password, shared.body.id);
      expect([alice.status, alice.body.status]).toEqual([200, 'signed_in']);
    } finally {
      writeFileSync(sharedCa.file, sharedCa.other.caPem);
    }
  });

  it('keeps the service account’s password sealed and says in words when it is wrong', async () => {
    const listed = await world.owner.client.json<{ connections: Array<{ config: Record<string, unknown> }> }>(
      'GET',
      '/api/orgs/acme/sso/connections',
    );
    const text = JSON.stringify(listed.body);
    expect(text).not.toContain(slapd.serviceAccount.password);
    expect(text).toContain(slapd.serviceAccount.dn);
    const rows = await reader.db.selectFrom('sso_connections').select('config_sealed').execute();
    for (const row of rows) expect(row.config_sealed).not.toContain(slapd.serviceAccount.password);

    const wrongService = await connect('Wrong service password', ldapConfig({ bindPassword: 'not-it' }));
    const tested = await world.owner.client.json<{ ok: boolean; problem: string }>(
      'POST',
      `/api/orgs/acme/sso/connections/${wrongService.body.id}/test`,
    );
    expect(tested.body).toMatchObject({ ok: false, problem: expect.stringMatching(/service account/) });
    const good = await world.owner.client.json<{ ok: boolean }>(
      'POST',
      `/api/orgs/acme/sso/connections/${connectionId}/test`,
    );
    expect(good.body.ok).toBe(true);
  });

  it('refuses a redirect sign-in on a directory connection, and junk in its fields', async () => {
    const start = await new SessionClient(world.server.url).json<ErrorBody>(
      'POST',
      `/api/auth/sso/${connectionId}/start`,
    );
    expect([start.status, start.body.error.code]).toEqual([400, 'sso_connection_kind']);
    const badUrl = await connect('Plain HTTP', ldapConfig({ url: 'http://127.0.0.1:389' }));
    expect(badUrl.status).toBe(422);
    const badAttribute = await connect('Bad attribute', ldapConfig({ loginAttribute: 'uid)(x' }));
    expect(badAttribute.status).toBe(422);
  });
});
