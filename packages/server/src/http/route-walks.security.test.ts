import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openDatabase } from '../db/database.js';
import { SCIM_PERMISSION } from '../identity/session-guard.js';
import { SCIM } from '../scim/scim-resources.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { tableRows } from '../test-support/databases.js';
import {
  BACKENDS,
  type Backend,
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { registeredRoutesOf } from './app.js';
import type { RouteDefinition } from './route.js';

/**
 * Walks over every registered route, so a route added later is covered without anyone remembering to.
 *
 * Attack 1 (ACC-1): a member of one organization reaches into another by putting the other's slug or
 * ids in the URL, the query or the body — reading its members, revoking its invitations, deleting its
 * teams. Every such request must answer 404, exactly as for something that does not exist.
 *
 * Attack 2 (AUTH-4): a cross-site page makes the browser send GET requests (images, links, prefetch)
 * that carry the session cookie but no CSRF token. That is only safe if no GET or HEAD changes state.
 */

interface Fixtures {
  slug: string;
  ids: Record<string, string>;
  /** Sends with the organization's SCIM token: the one credential SCIM routes answer. */
  scim: SessionClient;
}

const isScim = (declaration: RouteDefinition) =>
  'permission' in declaration.access && declaration.access.permission === SCIM_PERMISSION;

/** Builds a member, a team, a role, a binding and a pending invitation in an organization. */
async function populate(owner: SessionClient, slug: string, prefix: string): Promise<Fixtures> {
  const invited = await owner.json<{ token: string }>('POST', `/api/orgs/${slug}/invitations`, {
    email: `${prefix}-member@example.test`,
    role: 'viewer',
  });
  const member = new SessionClient(owner.base);
  const joined = await member.json<{ user: { id: string } }>('POST', '/api/invitations/accept', {
    token: invited.body.token,
    displayName: 'Member',
    password: MEMBER_PASSWORD,
  });
  const team = await owner.json<{ id: string }>('POST', `/api/orgs/${slug}/teams`, {
    name: `${prefix}-team`,
  });
  const role = await owner.json<{ id: string }>('POST', `/api/orgs/${slug}/roles`, {
    name: `${prefix}-role`,
    permissions: ['audit:read'],
  });
  const binding = await owner.json<{ id: string }>('POST', `/api/orgs/${slug}/role-bindings`, {
    role: role.body.id,
    subject: { type: 'team', id: team.body.id },
  });
  await owner.json('POST', `/api/orgs/${slug}/invitations`, {
    email: `${prefix}-pending@example.test`,
    role: 'viewer',
  });
  const invitations = await owner.json<{ invitations: Array<{ id: string }> }>(
    'GET',
    `/api/orgs/${slug}/invitations`,
  );
  const sessions = await member.json<{ sessions: Array<{ id: string }> }>('GET', '/api/auth/sessions');
  const registration = await owner.json<{ id: string; token: string }>(
    'POST',
    `/api/orgs/${slug}/agent-registration-tokens`,
    { uses: 2, labels: { walk: prefix } },
  );
  const agent = await registerAgent(owner.base, registration.body.token, `${prefix}-agent`);
  // The agent reports a service with one action, then goes away; a command for it is cancelled
  // before delivery, so that it is final (its event stream ends at once).
  const connection = await handshake(owner.base, agent.agentId, agent.keys);
  await reportApp(connection, [
    {
      name: 'ping',
      description: 'ping',
      params: { type: 'object', additionalProperties: false },
      risk: 'low',
      timeoutSeconds: 10,
      secrets: [],
    },
  ]);
  connection.socket.close();
  await connection.closed;
  const command = await owner.json<{ id: string }>('POST', `/api/orgs/${slug}/commands`, {
    agent: agent.agentId,
    service: 'app',
    action: 'ping',
  });
  await owner.json('POST', `/api/orgs/${slug}/commands/${command.body.id}/cancel`);
  // A bulk run over that agent, cancelled too: final, to be reached by id.
  const bulkRun = await owner.json<{ id: string }>('POST', `/api/orgs/${slug}/bulk-runs`, {
    selector: `walk=${prefix}`,
    service: 'app',
    action: 'ping',
  });
  await owner.json('POST', `/api/orgs/${slug}/bulk-runs/${bulkRun.body.id}/cancel`);
  const secret = await owner.json<{ id: string }>('POST', `/api/orgs/${slug}/secrets`, {
    name: `${prefix.toUpperCase()}_TOKEN`,
    value: `${prefix}-walk-value`,
  });
  const apiKey = await owner.json<{ apiKey: { id: string } }>('POST', `/api/orgs/${slug}/api-keys`, {
    name: `${prefix} walk key`,
    permissions: ['agents:read'],
  });
  // An authenticator enrolment the owner started: another member reaching it by id finds nothing.
  const factor = await owner.json<{ factorId: string }>('POST', '/api/auth/mfa/totp', { name: 'walk' });
  // A provider that is never asked (nothing listens there): the connection exists to be reached by id.
  const ssoConnection = await owner.json<{ id: string }>('POST', `/api/orgs/${slug}/sso/connections`, {
    name: `${prefix} IdP`,
    kind: 'oidc',
    config: {
      issuer: 'http://127.0.0.1:9',
      clientId: prefix,
      clientSecret: `${prefix}-secret`,
      defaultRole: 'viewer',
    },
  });
  // An email domain claimed (not verified): another organization reaching it by name finds nothing.
  const domain = await owner.json<{ domain: string }>('POST', `/api/orgs/${slug}/sso/domains`, {
    domain: `${prefix}.example.test`,
  });
  // A sign-in from a device the member never used: a notification of theirs to reach by id.
  const elsewhere = new SessionClient(owner.base, { 'user-agent': `${prefix}-walk-device/1.0` });
  await elsewhere.login(`${prefix}-member@example.test`, MEMBER_PASSWORD);
  const notifications = await member.json<{ notifications: Array<{ id: string }> }>(
    'GET',
    '/api/notifications',
  );
  // An audit sink that is never reached (nothing listens there): it exists to be reached by id.
  // Disabled, so that its delivery attempts do not change tables between the walk's snapshots.
  const sink = await owner.json<{ sink: { id: string } }>('POST', `/api/orgs/${slug}/audit/sinks`, {
    name: `${prefix} SIEM`,
    config: { kind: 'webhook', url: 'https://127.0.0.1:9/audit' },
    from: 'now',
  });
  await owner.json('PATCH', `/api/orgs/${slug}/audit/sinks/${sink.body.sink.id}`, { enabled: false });
  const ids = {
    sink: sink.body.sink.id,
    notification: notifications.body.notifications[0]?.id ?? '',
    domain: domain.body.domain,
    connection: ssoConnection.body.id,
    factor: factor.body.factorId,
    key: apiKey.body.apiKey.id,
    user: joined.body.user.id,
    team: team.body.id,
    role: role.body.id,
    binding: binding.body.id,
    invitation: invitations.body.invitations[0]!.id,
    session: sessions.body.sessions[0]!.id,
    token: registration.body.id,
    agent: agent.agentId,
    command: command.body.id,
    run: bulkRun.body.id,
    secret: secret.body.id,
  };
  for (const [name, id] of Object.entries(ids)) expect(id, name).toBeTruthy();
  const scim = await owner.json<{ token: string }>('PUT', `/api/orgs/${slug}/scim`, {
    defaultRole: 'viewer',
  });
  expect(scim.status).toBe(200);
  return { slug, ids, scim: new SessionClient(owner.base, { authorization: `Bearer ${scim.body.token}` }) };
}

/** A valid body for each operation that takes one, with ids taken from `fixtures`. */
function bodyFor(operationId: string, fixtures: Fixtures): unknown {
  const bodies: Record<string, unknown> = {
    login: { email: 'nobody@example.test', password: 'whatever-it-is' },
    changePassword: { currentPassword: 'x', newPassword: 'y' },
    reauthenticate: { password: 'x' },
    createRole: { name: 'walk-role', permissions: [] },
    updateRole: { description: 'changed by the walk' },
    createRoleBinding: { role: 'viewer', subject: { type: 'user', id: fixtures.ids.user } },
    changeMemberRole: { role: 'viewer' },
    createTeam: { name: 'walk-team' },
    updateTeam: { description: 'changed by the walk' },
    createInvitation: { email: 'walk@example.test', role: 'viewer' },
    acceptInvitationWithNewAccount: { token: 'bwi_x', displayName: 'x', password: 'y' },
    acceptInvitation: { token: 'bwi_x' },
    registerAgent: {
      token: 'bwr_x',
      name: 'walk',
      signingKey: 'A'.repeat(43),
      encryptionKey: 'A'.repeat(43),
    },
    createRegistrationToken: {},
    updateAgent: { name: 'walk-renamed' },
    createAuditSink: { name: 'walk sink', config: { kind: 'webhook', url: 'https://127.0.0.1:9/walk' } },
    updateAuditSink: { name: 'walk sink renamed' },
    createCommand: { agent: fixtures.ids.agent, service: 'app', action: 'ping' },
    approveCommand: {},
    createBulkRun: { selector: 'walk', service: 'app', action: 'ping' },
    approveBulkRun: {},
    rejectBulkRun: { comment: 'refused by the walk' },
    createSecret: { name: 'WALK_SECRET', value: 'walk-value' },
    updateSecretValue: { value: 'walk-value-2' },
    rejectCommand: { comment: 'refused by the walk' },
    createApiKey: { name: 'walk key', permissions: ['org:read'] },
    confirmTotpEnrolment: { code: '000000' },
    verifySecondFactor: { code: '000000' },
    setSecurityPolicy: { mfaRequired: true },
    replaceScimUser: { userName: 'walk@example.test' },
    patchScimUser: {
      schemas: [SCIM.patch],
      Operations: [{ op: 'replace', path: 'displayName', value: 'walk' }],
    },
    replaceScimGroup: { displayName: 'walk' },
    patchScimGroup: {
      schemas: [SCIM.patch],
      Operations: [{ op: 'replace', path: 'displayName', value: 'walk' }],
    },
    createSsoConnection: {
      name: 'walk IdP',
      kind: 'oidc',
      config: {
        issuer: 'http://127.0.0.1:9',
        clientId: 'walk',
        clientSecret: 'walk-secret',
        defaultRole: 'viewer',
      },
    },
  };
  return bodies[operationId];
}

const queryFor = (operationId: string, fixtures: Fixtures) =>
  operationId === 'explainAccess'
    ? `?permission=audit:read&user=${fixtures.ids.user}`
    : operationId === 'previewBulkRun'
      ? '?selector=walk&service=app&action=ping'
      : '';

function urlFor(template: string, fixtures: Fixtures, org: string): string {
  return template.replace(/:([A-Za-z]+)/g, (_, name: string) => {
    if (name === 'org') return org;
    const id = fixtures.ids[name];
    if (!id) throw new Error(`the walk has no fixture for :${name} in ${template}; add one to populate()`);
    return id;
  });
}

describe.each(BACKENDS)('route walks on %s', (backend: Backend) => {
  let world: OrgWorld;
  let acme: Fixtures;
  let beta: Fixtures;
  let boss: Member;
  /** The server's database, read directly alongside it. */
  let database: Database;

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    acme = await populate(world.owner.client, 'acme', 'acme');

    // Another organization, with its own owner, whom the acme owner knows nothing about.
    const created = await world.admin('create-user', '--email', 'boss@beta.test');
    expect(created.code, created.stderr).toBe(0);
    const oneTime = /password:\s+(\S+)/.exec(created.stdout)![1]!;
    const bossClient = new SessionClient(world.server.url);
    await bossClient.login('boss@beta.test', oneTime);
    await bossClient.json('POST', '/api/auth/password', {
      currentPassword: oneTime,
      newPassword: MEMBER_PASSWORD,
    });
    const org = await world.admin(
      'create-org',
      '--name',
      'Beta',
      '--owner',
      'boss@beta.test',
      '--mfa-optional',
    );
    expect(org.code, org.stderr).toBe(0);
    boss = { id: '', email: 'boss@beta.test', client: bossClient };
    beta = await populate(bossClient, 'beta', 'beta');
    database = openDatabase(world.server.config);
  }, 60_000);

  afterAll(async () => {
    await database?.close();
    await world?.close();
  });

  function routes() {
    return registeredRoutesOf(world.server.server.app).filter((route) => route.method !== 'HEAD');
  }

  describe('cross-organization isolation (ACC-1)', () => {
    it('answers 404 to a member of another organization on every route that takes an id', async () => {
      const attacker = world.owner.client;
      const checked: string[] = [];
      for (const { method, url, declaration } of routes()) {
        // A public route answers anyone, member or not (the SSO sign-in options of an organization).
        if ('public' in declaration.access) continue;
        const idsOutsideUrl = ['explainAccess', 'createRoleBinding'].includes(declaration.operationId);
        const idsInUrl = url.replace(':org', '').includes(':');
        const attempts = new Set<string>();
        // The other organization's slug, with its ids.
        if (url.includes(':org')) attempts.add(urlFor(url, beta, beta.slug));
        // The attacker's own organization, with the other organization's ids.
        if (idsInUrl || idsOutsideUrl) attempts.add(urlFor(url, beta, acme.slug));
        for (const target of attempts) {
          const response = await (isScim(declaration) ? acme.scim : attacker).json(
            method,
            `${target}${queryFor(declaration.operationId, beta)}`,
            bodyFor(declaration.operationId, beta),
          );
          expect(response.status, `${method} ${target}`).toBe(404);
          checked.push(`${method} ${target}`);
        }
      }
      expect(checked.length).toBeGreaterThanOrEqual(25);

      // Each probe of the other organization's slug is on record, with who made it and from where
      // (the address sealed under the person's PII key, DATA-2: audit/audit-pii.ts).
      const probes = await database.db
        .selectFrom('audit_events')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('chain_id', '=', 'instance')
        .where('action', '=', 'access.denied')
        .where('actor_id', '=', world.owner.id)
        .where('ip', 'like', 'enc1.pik_%')
        .where('details', 'like', '%not a member of organization%beta%')
        .executeTakeFirstOrThrow();
      expect(Number(probes.n)).toBe(checked.filter((attempt) => attempt.includes('/api/orgs/beta')).length);

      // And nothing of the other organization was touched.
      const members = await boss.client.json<{ members: unknown[] }>('GET', '/api/orgs/beta/members');
      expect(members.body.members).toHaveLength(2);
      const teams = await boss.client.json<{ teams: Array<{ description: string }> }>(
        'GET',
        '/api/orgs/beta/teams',
      );
      expect(teams.body.teams).toEqual([expect.objectContaining({ description: '' })]);
      const invitations = await boss.client.json<{ invitations: Array<{ status: string }> }>(
        'GET',
        '/api/orgs/beta/invitations',
      );
      expect(invitations.body.invitations.map((i) => i.status)).toEqual(['pending']);
      expect(
        (await new SessionClient(world.server.url).login('beta-member@example.test', MEMBER_PASSWORD)).status,
      ).toBe(200);
    });
  });

  describe('no GET or HEAD changes state (AUTH-4)', () => {
    /** Every table but the audit log: reads are audited on purpose (exports), and that is not state. */
    async function snapshot(): Promise<string> {
      const tables = await tableRows(database);
      return JSON.stringify(tables.filter(({ table }) => !table.startsWith('audit_')));
    }

    /** The tables whose rows differ between two snapshots, with the rows only one of them holds. */
    function changedTables(before: string, after: string) {
      type Table = { table: string; rows: string[] };
      const byName = (snap: string) => new Map((JSON.parse(snap) as Table[]).map((t) => [t.table, t.rows]));
      const was = byName(before);
      const is = byName(after);
      return [...new Set([...was.keys(), ...is.keys()])].flatMap((table) => {
        const old = new Set(was.get(table) ?? []);
        const now = new Set(is.get(table) ?? []);
        const gone = [...old].filter((row) => !now.has(row));
        const added = [...now].filter((row) => !old.has(row));
        return gone.length + added.length > 0 ? [{ table, gone, added }] : [];
      });
    }

    it('leaves every table as it was after each GET and HEAD route', async () => {
      let before = await snapshot();
      const walked: string[] = [];
      for (const { method, url, declaration } of registeredRoutesOf(world.server.server.app)) {
        if (method !== 'GET' && method !== 'HEAD') continue;
        const target = `${urlFor(url, acme, acme.slug)}${queryFor(declaration.operationId, acme)}`;
        const response = await world.owner.client.send(method, target);
        await response.arrayBuffer();
        expect(response.status, `${method} ${target}`).toBeLessThan(500);
        const after = await snapshot();
        // Named by table, so a failure says what changed rather than printing the whole database.
        if (after !== before)
          expect(changedTables(before, after), `${method} ${target} changed state`).toEqual([]);
        before = after;
        walked.push(`${method} ${target}`);
      }
      expect(walked.filter((w) => w.startsWith('HEAD')).length).toBeGreaterThan(5);
      expect(walked.length).toBeGreaterThanOrEqual(30);
    });
  });
});
