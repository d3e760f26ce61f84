import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openPostgres, openSqlite } from '../db/database.js';
import type { DB } from '../db/schema.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import {
  BACKENDS,
  type Backend,
  MEMBER_PASSWORD,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';

/**
 * AUD-7 against a failing audit store: the events table refuses writes (a trigger, as a full disk or a
 * revoked grant would) or is gone (renamed away, as a botched restore leaves it). An attacker who can
 * make the audit store fail must not get changes made that the log never shows: every change below
 * answers 503 `audit_unavailable` and leaves the database exactly as it was. Once the store works
 * again, the same request succeeds, with no restart.
 */

const METRICS_TOKEN = 'fails-closed-metrics-token-0123456789abcdef';

type Failure = { dialect: 'sqlite' | 'postgres'; on: string[]; off: string[] };
const FAILURES: Record<string, (dialect: 'sqlite' | 'postgres') => Failure> = {
  'the events table refuses inserts': (dialect) =>
    dialect === 'sqlite'
      ? {
          dialect,
          on: [
            "create trigger refuse_audit before insert on audit_events begin select raise(abort, 'audit store refuses writes'); end",
          ],
          off: ['drop trigger refuse_audit'],
        }
      : {
          dialect,
          on: [
            "create function refuse_audit() returns trigger language plpgsql as $$ begin raise exception 'audit store refuses writes'; end $$",
            'create trigger refuse_audit before insert on audit_events for each row execute function refuse_audit()',
          ],
          off: ['drop trigger refuse_audit on audit_events', 'drop function refuse_audit()'],
        },
  'the events table is gone': (dialect) => ({
    dialect,
    on: ['alter table audit_events rename to audit_events_away'],
    off: ['alter table audit_events_away rename to audit_events'],
  }),
};

/** The tables a change could touch; the sessions table changes on every request and is left out. */
const WATCHED: Array<keyof DB> = [
  'users',
  'memberships',
  'teams',
  'team_members',
  'roles',
  'role_bindings',
  'api_keys',
  'secrets',
  'secret_versions',
  'commands',
  'command_approvals',
];

describe.each(BACKENDS)('the audit log fails closed on %s', (backend: Backend) => {
  let world: OrgWorld;
  let approver: Member;
  let changer: Member;
  let attacker: Database;
  let agentId = '';
  // The changer's password, swapped with the other each time a change goes through.
  let password = MEMBER_PASSWORD;
  let nextPassword = 'Brisk-Orchard-Window-58';

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_METRICS_TOKEN: METRICS_TOKEN }, backend);
    approver = await world.join('approver@acme.test', 'operator');
    changer = await world.join('changer@acme.test', 'viewer');
    const database = world.server.config.database;
    attacker =
      database.kind === 'sqlite'
        ? openSqlite({ file: database.file, busyTimeoutMs: 10_000 })
        : openPostgres({ url: database.url, poolMax: 2 });
    const token = await world.owner.client.json<{ token: string }>(
      'POST',
      '/api/orgs/acme/agent-registration-tokens',
      {},
    );
    const registered = await registerAgent(world.server.url, token.body.token, 'app-1');
    agentId = registered.agentId;
    const connection = await handshake(world.server.url, registered.agentId, registered.keys);
    const action = (name: string, risk: string) => ({
      name,
      description: name,
      params: { type: 'object', additionalProperties: false },
      risk,
      timeoutSeconds: 60,
      secrets: [],
    });
    expect((await reportApp(connection, [action('check', 'low'), action('migrate', 'high')])).type).toBe(
      'report_result',
    );
  }, 120_000);

  afterAll(async () => {
    await attacker?.db.destroy();
    await world?.close();
  });

  async function snapshot(): Promise<string> {
    const tables: Record<string, unknown[]> = {};
    for (const table of WATCHED) tables[table] = await attacker.db.selectFrom(table).selectAll().execute();
    return JSON.stringify(tables, (_key, value) => (typeof value === 'bigint' ? value.toString() : value));
  }
  /** bulwark_audit_unavailable_total: one per refused change, however often it was retried inside. */
  async function refusalsCounted(): Promise<number> {
    const scrape = await fetch(`${world.server.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    return Number(/^bulwark_audit_unavailable_total (\d+)$/m.exec(await scrape.text())?.[1] ?? Number.NaN);
  }
  const run = async (statements: string[]) => {
    for (const statement of statements) await sql.raw(statement).execute(attacker.db);
  };

  type Attempt = () => Promise<{ status: number; body: unknown }>;
  const changes: Record<string, () => Promise<Attempt>> = {
    'creating a team': async () => () =>
      world.owner.client.json('POST', '/api/orgs/acme/teams', { name: `team-${Math.random()}` }),
    "changing a member's role": async () => {
      const members = await world.owner.client.json<{ members: Array<{ id: string; role: string }> }>(
        'GET',
        '/api/orgs/acme/members',
      );
      const role =
        members.body.members.find((m) => m.id === changer.id)?.role === 'viewer' ? 'operator' : 'viewer';
      return () => world.owner.client.json('PATCH', `/api/orgs/acme/members/${changer.id}`, { role });
    },
    'changing a password': async () => () =>
      changer.client
        .json('POST', '/api/auth/password', { currentPassword: password, newPassword: nextPassword })
        .then((answer) => {
          if (answer.status === 200) [password, nextPassword] = [nextPassword, password];
          return answer;
        }),
    'creating a command': async () => () =>
      world.owner.client.json('POST', '/api/orgs/acme/commands', {
        agent: agentId,
        service: 'app',
        action: 'check',
        reason: 'fail-closed test',
      }),
    'approving a command': async () => {
      const created = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/commands', {
        agent: agentId,
        service: 'app',
        action: 'migrate',
        reason: 'fail-closed test',
        confirm: true,
      });
      expect(created.status).toBe(201);
      return () =>
        approver.client.json('POST', `/api/orgs/acme/commands/${created.body.id}/approve`, { comment: 'ok' });
    },
    'creating an API key': async () => () =>
      world.owner.client.json('POST', '/api/orgs/acme/api-keys', {
        name: `key-${Math.random()}`,
        permissions: ['agents:read'],
      }),
    'writing a secret': async () => () =>
      world.owner.client.json('POST', '/api/orgs/acme/secrets', {
        name: `S_${Math.floor(Math.random() * 1e9)}`,
        value: 'value-of-the-secret',
      }),
  };

  for (const [failure, make] of Object.entries(FAILURES)) {
    for (const [change, prepare] of Object.entries(changes)) {
      it(`${change} is refused, and nothing changes, when ${failure}`, async () => {
        const attempt = await prepare();
        const { on, off } = make(world.server.config.database.kind === 'sqlite' ? 'sqlite' : 'postgres');
        const before = await snapshot();
        const refusalsBefore = await refusalsCounted();
        await run(on);
        let refused: { status: number; body: unknown };
        try {
          refused = await attempt();
        } finally {
          await run(off);
        }
        expect(refused.status, JSON.stringify(refused.body)).toBe(503);
        expect(refused.body).toMatchObject({ error: { code: 'audit_unavailable' } });
        expect(await snapshot()).toBe(before);
        expect(await refusalsCounted()).toBe(refusalsBefore + 1);
        // The store works again: the same change goes through, no restart needed.
        const again = await attempt();
        expect(again.status, JSON.stringify(again.body)).toBeLessThan(300);
        expect(await snapshot()).not.toBe(before);
      });
    }
  }
});
