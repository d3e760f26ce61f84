import { createHash } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditStore } from '../audit/audit.store.js';
import { verifyChain } from '../audit/audit.verify.js';
import { isSealedPii } from '../audit/audit-pii.js';
import { openCore } from '../core.js';
import { openPostgres, openSqlite } from '../db/database.js';
import type { DB } from '../db/schema.js';
import { publicKeyFromRow } from '../secrets/server-keys.service.js';
import {
  BACKENDS,
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  OWNER,
  startOrgWorld,
} from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { createAdminService } from './admin.service.js';
import { createPasswordHasher } from './password-hasher.js';
import { createPasswords } from './passwords.js';
import { createPersonalDataService } from './personal-data.service.js';

/**
 * GDPR (DATA-1, DATA-2) under attack:
 *
 * - Someone who reads the database (a stolen copy, a backup taken after an erasure) looks for a person
 *   who was erased: their email, name, IP addresses and browser must appear in no table, and what the
 *   audit log sealed about them names a PII key that no longer exists anywhere in it.
 * - Even before erasure, a reader of the audit table finds people's emails, IPs and browsers only
 *   sealed, while the owner's console search by email still finds their events.
 * - A member tries to export another member's data; an owner of another organization tries to export
 *   or erase a person through their own organization: refused (403, or 404 across organizations).
 * - An owner of one organization tries to erase a person who also belongs to another organization:
 *   refused and recorded; only the instance administrator can.
 * - A database writer edits a sealed field of an audit event (to pin an action on someone else):
 *   `bulwark audit verify` reports the edited event, without needing any key.
 */

const PROXY = '127.0.0.1';
const SAM = { email: 'sam.gdpr@acme.test', renamed: 'sam.renamed.gdpr@acme.test' };
const CRAFTED_UA = 'enc1.pik_01JCRAFTED0000000000000000.AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA';
const KEY_UA = 'KeyScript/3.3 (GdprTest)';
const KEY_IP = '192.0.2.77';
const NOBODY = { email: 'nobody.gdpr@acme.test', ua: 'NobodyBrowser/1.0 (GdprTest)', ip: '192.0.2.99' };
const ERIN = {
  email: 'erin.gdpr@acme.test',
  name: 'erin.gdpr',
  ip: '198.51.100.23',
  ua: 'ErinBrowser/4.2 (GdprTest)',
};
const FRED = {
  email: 'fred.gdpr@acme.test',
  name: 'fred.gdpr',
  ip: '203.0.113.41',
  ua: 'FredBrowser/7.1 (GdprTest)',
};

/** Runs what a `bulwark admin` command runs against the server's data, in this process. */
async function asAdministrator<T>(
  world: OrgWorld,
  work: (core: Awaited<ReturnType<typeof openCore>>) => Promise<T>,
) {
  const core = await openCore(world.server.config, pino({ level: 'silent' }));
  try {
    return await work(core);
  } finally {
    await core.audit.close();
    await core.database.close();
  }
}

async function openDirect(world: OrgWorld): Promise<{ db: Kysely<DB>; close(): Promise<void> }> {
  const config = world.server.config.database;
  const database =
    config.kind === 'postgres'
      ? openPostgres({ url: config.url, poolMax: 1 })
      : openSqlite({ file: config.file, busyTimeoutMs: 5000 });
  return { db: database.db, close: () => database.close() };
}

/** Every row of every table, as text: what a reader of the database (or of a backup of it) can see. */
async function everyRow(db: Kysely<DB>, dialect: 'sqlite' | 'postgres'): Promise<Map<string, string[]>> {
  const tables =
    dialect === 'sqlite'
      ? await sql<{ name: string }>`select name from sqlite_master where type = 'table'`.execute(db)
      : await sql<{
          name: string;
        }>`select table_name as name from information_schema.tables where table_schema = current_schema()`.execute(
          db,
        );
  const rows = new Map<string, string[]>();
  for (const { name } of tables.rows) {
    const result = await sql<Record<string, unknown>>`select * from ${sql.table(name)}`.execute(db);
    rows.set(
      name,
      result.rows.map((row) => JSON.stringify(row, (_k, v) => (typeof v === 'bigint' ? String(v) : v))),
    );
  }
  return rows;
}

/** `bulwark audit verify`'s check, from the database alone: no PII key, no master key. */
async function verifyEvery(db: Kysely<DB>, dialect: 'sqlite' | 'postgres') {
  const store = createAuditStore(db, dialect);
  const keys = await db
    .selectFrom('server_keys')
    .selectAll()
    .where('purpose', '=', 'audit-checkpoint')
    .execute();
  const publicKeys = new Map(keys.map((row) => [row.id, publicKeyFromRow(row)]));
  const rule = {
    maxUnsignedTail: Number.MAX_SAFE_INTEGER,
    signedRecentlyMs: 0,
    now: Date.now(),
    from: 'start' as const,
  };
  return Promise.all(
    (await store.chainIds()).map((chainId) => verifyChain(store, publicKeys, chainId, rule)),
  );
}

function findings(rows: Map<string, string[]>, needles: string[]): string[] {
  const found: string[] = [];
  for (const [table, texts] of rows) {
    for (const text of texts) {
      for (const needle of needles)
        if (text.toLowerCase().includes(needle.toLowerCase())) found.push(`${table}: ${needle}`);
    }
  }
  return found;
}

type AuditEvents = {
  events: Array<{
    action: string;
    ip: string | null;
    userAgent: string | null;
    actor: { id: string | null; display: string | null };
    target: { id: string | null; display: string | null } | null;
  }>;
};

describe.each(BACKENDS)('personal data on %s', (backend) => {
  let world: OrgWorld;
  let direct: { db: Kysely<DB>; close(): Promise<void> };
  const dialect = backend === 'postgresql' ? 'postgres' : 'sqlite';
  let erin: Member;
  let fred: Member;
  let olga: Member;

  /** Signs in from the person's own address and browser (through the trusted proxy). */
  async function signInAs(person: typeof ERIN): Promise<Member> {
    const client = new SessionClient(world.server.url, {
      'user-agent': person.ua,
      'x-forwarded-for': person.ip,
    });
    const response = await client.login(person.email, MEMBER_PASSWORD);
    expect(response.status).toBe(200);
    const body = (await response.json()) as { user: { id: string } };
    return { id: body.user.id, email: person.email, client };
  }

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_TRUSTED_PROXIES: PROXY }, backend);
    // What `bulwark admin create-org` runs, in this process (a CLI process costs seconds of CI).
    await asAdministrator(world, (core) =>
      createAdminService({
        db: core.database.db,
        passwords: createPasswords({ hasher: createPasswordHasher({}), dataKeys: core.dataKeys }),
        audit: core.audit,
        actor: { type: 'system', id: 'cli', display: 'cli:test' },
      }).createOrg({ name: 'Globex', ownerEmail: OWNER.email, mfaRequired: false }),
    );
    olga = await world.join('olga@acme.test', 'owner');
    await world.join(ERIN.email, 'operator');
    await world.join(FRED.email, 'viewer');
    // Erin also belongs to Globex (the first owner owns both organizations).
    const invited = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/globex/invitations', {
      email: ERIN.email,
      role: 'viewer',
    });
    expect(invited.status).toBe(201);
    erin = await signInAs(ERIN);
    expect(
      (await erin.client.json('POST', '/api/invitations/accept-signed-in', { token: invited.body.token }))
        .status,
    ).toBe(200);
    fred = await signInAs(FRED);
    // A failed sign-in against Fred's account, from his browser: his sign-in history too.
    await new SessionClient(world.server.url, { 'user-agent': FRED.ua, 'x-forwarded-for': FRED.ip }).login(
      FRED.email,
      'not-the-password-at-all',
    );
    // The owner acts on Fred: he is the event's target.
    expect(
      (await world.owner.client.json('PATCH', `/api/orgs/acme/members/${fred.id}`, { role: 'operator' }))
        .status,
    ).toBe(200);
    direct = await openDirect(world);
  }, 120_000);

  afterAll(async () => {
    await direct?.close();
    await world?.close();
  });

  it('stores people in audit events only sealed, and still finds them by email', async () => {
    const rows = await direct.db.selectFrom('audit_events').selectAll().execute();
    const text = JSON.stringify(rows);
    for (const needle of [ERIN.email, ERIN.ip, ERIN.ua, FRED.email, FRED.ip, FRED.ua])
      expect(text).not.toContain(needle);
    const fredSignIn = rows.find((row) => row.action === 'auth.login_succeeded' && row.actor_id === fred.id)!;
    expect(
      isSealedPii(fredSignIn.actor_display) &&
        isSealedPii(fredSignIn.ip) &&
        isSealedPii(fredSignIn.user_agent),
    ).toBe(true);
    // An invited address's key holder is an HMAC under an instance key: a reader of the database cannot
    // test a guessed address against it, as they could an unsalted hash.
    const plainHash = (email: string) => `email:${createHash('sha256').update(email).digest('hex')}`;
    const holders = (
      await direct.db
        .selectFrom('audit_pii_keys')
        .select('user_id')
        .where('user_id', 'like', 'email:%')
        .execute()
    ).map((row) => row.user_id);
    expect(holders.length).toBeGreaterThan(0);
    for (const email of [ERIN.email, FRED.email, 'olga@acme.test'])
      expect(holders).not.toContain(plainHash(email));
    // Agents and the system stay plain: there is no person to erase.
    expect(rows.find((row) => row.actor_type === 'system')?.actor_display).not.toMatch(/^enc1\./);

    const found = await world.owner.client.json<AuditEvents>(
      'GET',
      `/api/orgs/acme/audit/events?members=include&actor=${encodeURIComponent(FRED.email)}&limit=100`,
    );
    expect(found.status).toBe(200);
    // (Accepting his invitation signed him in too, from another address: match his own sign-in.)
    expect(found.body.events).toContainEqual(
      expect.objectContaining({
        action: 'auth.login_succeeded',
        ip: FRED.ip,
        userAgent: FRED.ua,
        actor: expect.objectContaining({ display: FRED.email }),
      }),
    );
  });

  it('puts no email in audit details, nor in the reason of sessions someone else ended', async () => {
    // A reader of the audit table (or of a backup taken after an erasure) reads details in clear: an
    // address copied there (a team membership, a SCIM address change) could never be erased.
    const team = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/teams', {
      name: 'gdpr-team',
    });
    expect(team.status).toBe(201);
    expect(
      (await world.owner.client.json('PUT', `/api/orgs/acme/teams/${team.body.id}/members/${fred.id}`))
        .status,
    ).toBeLessThan(300);
    const scimOn = await world.owner.client.json<{ token: string; settings: { baseUrl: string } }>(
      'PUT',
      '/api/orgs/acme/scim',
      { defaultRole: 'viewer' },
    );
    expect(scimOn.status).toBe(200);
    const scim = async (method: string, path: string, body: unknown) => {
      const response = await fetch(`${scimOn.body.settings.baseUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${scimOn.body.token}`,
          'content-type': 'application/scim+json',
          'user-agent': CRAFTED_UA,
        },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as { id: string } };
    };
    const person = (email: string) => ({
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: email,
      emails: [{ primary: true, value: email }],
      displayName: 'Sam Gdpr',
      active: true,
    });
    const made = await scim('POST', '/Users', person(SAM.email));
    expect(made.status).toBe(201);
    expect((await scim('PUT', `/Users/${made.body.id}`, person(SAM.renamed))).status).toBe(200);
    // An owner ends a member's sessions: the ended rows outlive an erasure of that owner.
    expect((await olga.client.json('POST', `/api/orgs/acme/members/${erin.id}/end-sessions`)).status).toBe(
      200,
    );

    const details =
      // Every event of the run (the server's clock stands still): these paths' and all before them.
      (await direct.db.selectFrom('audit_events').select('details').execute()).map((row) => row.details);
    expect(details.length).toBeGreaterThan(3);
    for (const email of [FRED.email, ERIN.email, SAM.email, SAM.renamed, OWNER.email, olga.email])
      expect(details.join('\n')).not.toContain(email);
    const reasons = await direct.db
      .selectFrom('sessions')
      .select('revoked_reason')
      .where('user_id', '=', erin.id)
      .where('revoked_reason', 'is not', null)
      .execute();
    expect(reasons.length).toBeGreaterThan(0);
    expect(reasons.map((row) => row.revoked_reason).join(' ')).not.toContain('@');
  });

  it('shows a plain value that only looks sealed as it was sent, not as erased', async () => {
    // SCIM's requests are not a person's: their User-Agent is stored plain. One crafted to look like a
    // sealed value (`enc1.pik_…`) must not make the console show "(erased)" where it was plain text.
    const listed = await world.owner.client.json<AuditEvents>('GET', '/api/orgs/acme/audit/events?limit=500');
    expect(listed.status).toBe(200);
    const crafted = listed.body.events.filter((event) => event.userAgent?.startsWith('enc1.pik_'));
    expect(crafted.length).toBeGreaterThan(0);
    for (const event of crafted) expect(event.userAgent).toBe(CRAFTED_UA);
  });

  it('seals what an API key and a sign-in against an unknown address say about a person', async () => {
    // A reader of the audit table looks for where the owner works from (via their API key's requests)
    // and for addresses typed at the sign-in form that have no account: both are people's data.
    expect(
      (await world.owner.client.send('POST', '/api/auth/reauth', { password: OWNER.password })).status,
    ).toBeLessThan(300);
    const key = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
      name: 'gdpr key',
      permissions: ['teams:manage', 'teams:read'],
    });
    expect(key.status).toBe(201);
    const made = await fetch(`${world.server.url}/api/orgs/acme/teams`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${key.body.token}`,
        'content-type': 'application/json',
        'user-agent': KEY_UA,
        'x-forwarded-for': KEY_IP,
      },
      body: JSON.stringify({ name: 'made-by-key' }),
    });
    expect(made.status).toBe(201);
    await new SessionClient(world.server.url, {
      'user-agent': NOBODY.ua,
      'x-forwarded-for': NOBODY.ip,
    }).login(NOBODY.email, 'not-the-password-at-all');

    const rows = await direct.db.selectFrom('audit_events').selectAll().execute();
    const text = JSON.stringify(rows);
    for (const needle of [KEY_UA, KEY_IP, NOBODY.email, NOBODY.ua, NOBODY.ip])
      expect(text).not.toContain(needle);
    const byKey = rows.find((row) => row.action === 'team.created' && row.actor_type === 'api_key')!;
    expect([byKey.actor_display, byKey.ip, byKey.user_agent].every(isSealedPii)).toBe(true);
    const unknown = rows.find(
      (row) => row.action === 'auth.login_failed' && row.target_id === null && isSealedPii(row.actor_display),
    );
    expect(unknown && isSealedPii(unknown.ip) && isSealedPii(unknown.user_agent)).toBe(true);
  });

  it('exports a person their own data, with step-up, and never seeds or hashes', async () => {
    const own = await fred.client.json<Record<string, unknown>>('GET', '/api/auth/personal-data');
    expect(own.status).toBe(200);
    expect(own.body).toMatchObject({
      scope: 'instance',
      profile: { id: fred.id, email: FRED.email },
      memberships: [{ org: 'acme', role: 'operator' }],
      sessions: expect.arrayContaining([expect.objectContaining({ ip: FRED.ip, userAgent: FRED.ua })]),
    });
    const events = own.body.auditEvents as AuditEvents['events'];
    expect(events.map((event) => event.action)).toEqual(
      expect.arrayContaining(['auth.login_succeeded', 'auth.login_failed', 'member.role_changed']),
    );
    expect(events.find((event) => event.action === 'auth.login_failed')).toMatchObject({
      ip: FRED.ip,
      userAgent: FRED.ua,
    });
    // The owner changed his role: the event is his, the owner's address, browser and name are not.
    expect(events.find((event) => event.action === 'member.role_changed')).toMatchObject({
      ip: null,
      userAgent: null,
      actor: { id: world.owner.id, display: null },
    });
    expect(JSON.stringify(own.body)).not.toMatch(/password_hash|token_hash|secret_sealed|enc1\./);
    // The export is itself recorded, naming the person by id only.
    const recorded = await direct.db
      .selectFrom('audit_events')
      .selectAll()
      .where('action', '=', 'personal_data.exported')
      .where('target_id', '=', fred.id)
      .executeTakeFirstOrThrow();
    expect(recorded.target_display).toBeNull();
  });

  it("refuses a member exporting another member's data, and an owner reaching beyond their organization", async () => {
    expect((await fred.client.json('GET', `/api/orgs/acme/members/${erin.id}/personal-data`)).status).toBe(
      403,
    );
    // Olga owns Acme only; Globex's routes do not know her.
    expect((await olga.client.json('GET', `/api/orgs/globex/members/${erin.id}/personal-data`)).status).toBe(
      404,
    );
    // What Acme holds about Erin: no sessions, factors or notifications, nothing of Globex.
    const ofErin = await olga.client.json<Record<string, unknown>>(
      'GET',
      `/api/orgs/acme/members/${erin.id}/personal-data`,
    );
    expect(ofErin.status).toBe(200);
    expect(ofErin.body).toMatchObject({ scope: 'organization', memberships: [{ org: 'acme' }] });
    expect(Object.keys(ofErin.body)).not.toEqual(expect.arrayContaining(['sessions']));
    expect(JSON.stringify(ofErin.body)).not.toContain('globex');
  });

  it('refuses an owner erasing a person another organization also holds, and records the attempt', async () => {
    const refused = await olga.client.json<{ error: { code: string } }>(
      'DELETE',
      `/api/orgs/acme/members/${erin.id}/personal-data`,
    );
    expect(refused).toMatchObject({ status: 403, body: { error: { code: 'member_of_other_orgs' } } });
    expect(
      await direct.db.selectFrom('users').select('id').where('id', '=', erin.id).executeTakeFirst(),
    ).toBeDefined();
    const denial = await direct.db
      .selectFrom('audit_events')
      .select(['outcome', 'target_display'])
      .where('action', '=', 'user.erased')
      .where('target_id', '=', erin.id)
      .executeTakeFirstOrThrow();
    expect(denial).toEqual({ outcome: 'denied', target_display: null });
  });

  it('refuses a custom role holding members:erase erasing an owner, and records the refusal', async () => {
    // An owner gives a helper a custom role with `members:erase` (to clean up contractor accounts):
    // the helper must not be able to erase an owner with it, as member removal would refuse too.
    const role = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/roles', {
      name: 'eraser',
      permissions: ['members:erase'],
    });
    expect(role.status).toBe(201);
    const eraser = await world.join('eraser.gdpr@acme.test', role.body.id);
    const refused = await eraser.client.json<{ error: { code: string } }>(
      'DELETE',
      `/api/orgs/acme/members/${olga.id}/personal-data`,
    );
    expect(refused).toMatchObject({ status: 403, body: { error: { code: 'exceeds_your_permissions' } } });
    expect(
      await direct.db.selectFrom('users').select('id').where('id', '=', olga.id).executeTakeFirst(),
    ).toBeDefined();
    expect(
      await direct.db
        .selectFrom('audit_events')
        .select('id')
        .where('action', '=', 'access.denied')
        .where('actor_id', '=', eraser.id)
        .executeTakeFirst(),
    ).toBeDefined();
  });

  it('never leaves an organization without an owner when both of its owners are erased at once', async () => {
    // Initech has two owners; an administrator (or two owners, each erasing the other) erases both at
    // the same moment. Each erasure alone sees another owner; only the organization's lock and a check
    // under it stop the pair from leaving Initech with nobody who can administer it.
    const pat = await world.join('pat.gdpr@acme.test', 'viewer');
    const quinn = await world.join('quinn.gdpr@acme.test', 'viewer');
    const initech = await asAdministrator(world, (core) =>
      createAdminService({
        db: core.database.db,
        passwords: createPasswords({ hasher: createPasswordHasher({}), dataKeys: core.dataKeys }),
        audit: core.audit,
        actor: { type: 'system', id: 'cli', display: 'cli:test' },
      }).createOrg({ name: 'Initech', ownerEmail: pat.email, mfaRequired: false }),
    );
    await direct.db
      .insertInto('memberships')
      .values({ org_id: initech.id, user_id: quinn.id, role: 'owner', created_at: Date.now() })
      .execute();
    const outcomes = await asAdministrator(world, (core) => {
      const service = createPersonalDataService({
        db: core.database.db,
        audit: core.audit,
        pii: core.pii,
        clock: Date.now,
      });
      const actor = { type: 'system', id: 'cli', display: 'cli:test' } as const;
      return Promise.allSettled([
        service.eraseByEmail(pat.email, actor),
        service.eraseByEmail(quinn.email, actor),
      ]);
    });
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
    expect(outcomes.find((outcome) => outcome.status === 'rejected')).toMatchObject({
      reason: { code: 'last_owner' },
    });
    const owners = await direct.db
      .selectFrom('memberships')
      .select('user_id')
      .where('org_id', '=', initech.id)
      .where('role', '=', 'owner')
      .execute();
    expect(owners).toHaveLength(1);
  }, 30_000);

  it('erases people so that no table (nor a backup of it) can name them, and the chain still verifies', async () => {
    const sealedOfFred = (
      await direct.db.selectFrom('audit_events').selectAll().where('actor_id', '=', fred.id).execute()
    ).flatMap((row) => [row.actor_display, row.ip, row.user_agent].filter(isSealedPii));
    expect(sealedOfFred.length).toBeGreaterThan(0);

    // A key acting for Fred (as an admin would have made it): erasure deletes it, and must say so.
    const fredKey = `key_gdpr${Date.now()}`;
    await direct.db
      .insertInto('api_keys')
      .values({
        id: fredKey,
        org_id: (
          await direct.db.selectFrom('orgs').select('id').where('slug', '=', 'acme').executeTakeFirstOrThrow()
        ).id,
        user_id: fred.id,
        parent_key_id: null,
        name: 'fred laptop',
        token_hash: 'f'.repeat(64),
        token_hint: 'bwk_fred',
        permissions: '["agents:read"]',
        selector: null,
        created_at: Date.now(),
        expires_at: Date.now() + 86_400_000,
        last_used_at: null,
        last_used_ip: null,
        revoked_at: null,
        revoked_reason: null,
        seal: '',
      })
      .execute();
    // An owner erases Fred, whom only Acme holds; the instance administrator erases Erin.
    const erased = await olga.client.json('DELETE', `/api/orgs/acme/members/${fred.id}/personal-data`);
    expect(erased).toMatchObject({ status: 200, body: { status: 'erased', memberships: 1 } });
    if (backend === 'sqlite') {
      // The real command once; on PostgreSQL the same service in this process (the SQL is what differs).
      const byAdmin = await world.admin('erase-user', '--email', ERIN.email);
      expect(byAdmin.code, byAdmin.stderr).toBe(0);
      expect(byAdmin.stdout).toMatch(/erased usr_\w+: 2 membership\(s\)/);
    } else {
      await asAdministrator(world, (core) =>
        createPersonalDataService({
          db: core.database.db,
          audit: core.audit,
          pii: core.pii,
          clock: Date.now,
        }).eraseByEmail(ERIN.email, { type: 'system', id: 'cli', display: 'cli:test' }),
      );
    }

    // Their sessions are over.
    expect((await fred.client.send('GET', '/api/auth/session')).status).toBe(401);
    // The database, as a backup taken now would copy it: no trace of either, and no key for them.
    const rows = await everyRow(direct.db, dialect);
    const needles = [ERIN.email, ERIN.name, ERIN.ip, ERIN.ua, FRED.email, FRED.name, FRED.ip, FRED.ua];
    expect(findings(rows, needles)).toEqual([]);
    expect(
      await direct.db
        .selectFrom('audit_pii_keys')
        .selectAll()
        .where('user_id', 'in', [erin.id, fred.id])
        .execute(),
    ).toEqual([]);
    // What was sealed about Fred is still there, under a key id that exists nowhere in the database.
    const keyIds = new Set(sealedOfFred.map((value) => value.split('.')[1]));
    const keys = await direct.db.selectFrom('audit_pii_keys').select('id').execute();
    expect(keys.filter((key) => keyIds.has(key.id))).toEqual([]);

    // Reading shows a stable placeholder where Fred was; the erasure names only the user id.
    const listed = await world.owner.client.json<AuditEvents>(
      'GET',
      `/api/orgs/acme/audit/events?actor=${fred.id}&limit=100`,
    );
    expect(listed.body.events.find((event) => event.action === 'invitation.accepted')).toMatchObject({
      ip: '(erased)',
      userAgent: '(erased)',
      actor: { display: '(erased)' },
    });
    const changed = await world.owner.client.json<AuditEvents>(
      'GET',
      `/api/orgs/acme/audit/events?target=${fred.id}&limit=100`,
    );
    expect(changed.body.events.find((event) => event.action === 'member.role_changed')).toMatchObject({
      actor: { display: OWNER.email },
      target: { display: '(erased)' },
    });
    const erasure = await direct.db
      .selectFrom('audit_events')
      .selectAll()
      .where('action', '=', 'user.erased')
      .where('outcome', '=', 'success')
      .where('target_id', '=', fred.id)
      .executeTakeFirstOrThrow();
    expect([erasure.target_display, erasure.details]).toEqual([null, expect.not.stringContaining('@')]);

    // The key's end is in Acme's chain, by id only.
    expect(
      await direct.db
        .selectFrom('audit_events')
        .select(['actor_id', 'target_display'])
        .where('action', '=', 'apikey.revoked')
        .where('target_id', '=', fredKey)
        .execute(),
    ).toEqual([{ actor_id: olga.id, target_display: null }]);

    // Verified from the database alone, with no key but the checkpoints' public ones.
    expect((await verifyEvery(direct.db, dialect)).filter((chain) => !chain.ok)).toEqual([]);
  }, 60_000);

  // The same check on either database: run once.
  // Declared on SQLite only: in CI a skipped test counts as a failure.
  if (backend === 'sqlite')
    it('catches a database writer who edits a sealed field: the chain breaks', async () => {
      // Pin Olga's own sign-in on someone else: copy another event's sealed display over hers.
      const [mine, other] = await Promise.all([
        direct.db
          .selectFrom('audit_events')
          .select(['id', 'chain_id'])
          .where('actor_id', '=', olga.id)
          .where('action', '=', 'invitation.accepted')
          .executeTakeFirstOrThrow(),
        direct.db
          .selectFrom('audit_events')
          .select('actor_display')
          .where('actor_id', '=', erin.id)
          .where('action', '=', 'auth.login_succeeded')
          .executeTakeFirstOrThrow(),
      ]);
      await direct.db
        .updateTable('audit_events')
        .set({ actor_display: other.actor_display })
        .where('id', '=', mine.id)
        .execute();
      const broken = (await verifyEvery(direct.db, dialect)).filter((chain) => !chain.ok);
      expect(broken).toEqual([
        expect.objectContaining({
          chainId: mine.chain_id,
          broken: expect.objectContaining({ eventId: mine.id }),
        }),
      ]);
      expect(broken[0]!.broken!.reason).toMatch(/edited/);
    }, 60_000);
});
