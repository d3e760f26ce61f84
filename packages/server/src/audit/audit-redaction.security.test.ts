import { generateToken, type TokenPrefix } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Database, openPostgres, openSqlite } from '../db/database.js';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * AUD-2 against an attacker who puts credential-shaped text where a request carries text: a URL
 * segment, a query parameter, a header, a body field. The audit guard keeps secrets out of the log;
 * if it refused such events instead of redacting them, anyone could fail a request after its change
 * committed, or suppress the record of their own denial, by pasting a token into a field. Every
 * request below gets its ordinary answer, every event is recorded, and no planted token is in the log.
 */

describe.each(BACKENDS)('credential-shaped input in audited requests on %s', (backend: Backend) => {
  let world: OrgWorld;
  let viewer: Member;
  let database: Database;
  const planted: string[] = [];
  const plant = (prefix: TokenPrefix) => {
    const token = generateToken(prefix);
    planted.push(token);
    return token;
  };

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    viewer = await world.join('viewer@acme.test', 'viewer');
    const config = world.server.config.database;
    database =
      config.kind === 'sqlite'
        ? openSqlite({ file: config.file, busyTimeoutMs: 10_000 })
        : openPostgres({ url: config.url, poolMax: 2 });
  }, 60_000);

  afterAll(async () => {
    await database?.db.destroy();
    await world?.close();
  });

  const eventsOf = (action: string) =>
    database.db.selectFrom('audit_events').selectAll().where('action', '=', action).execute();

  it('records a change whose body fields hold tokens, with the tokens redacted', async () => {
    const name = plant('bwk');
    const secret = await world.owner.client.json<{ id: string }>('POST', '/api/orgs/acme/secrets', {
      name,
      description: `rotated from ${plant('bws')}`,
      value: 'the-value',
    });
    expect(secret.status, JSON.stringify(secret.body)).toBe(201);
    const team = await world.owner.client.json('POST', '/api/orgs/acme/teams', {
      name: `ops ${plant('bwr')}`.slice(0, 64),
      description: 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789',
    });
    expect(team.status, JSON.stringify(team.body)).toBe(201);
    const [created] = await eventsOf('secret.created');
    expect(created).toBeDefined();
    expect(JSON.stringify(created)).toContain('[redacted: a Bulwark token]');
    const [teamEvent] = await eventsOf('team.created');
    expect(teamEvent!.details).not.toContain('abcdefghijklmnopqrstuvwxyz0123456789');
  });

  it('records the request context (a header) with the token redacted, and keeps the rest of it', async () => {
    const client = new SessionClient(world.server.url, { 'user-agent': `curl/8.5 ${plant('bwk')} x` });
    expect((await client.login('viewer@acme.test', 'Quiet-Harbor-Lantern-93')).status).toBe(200);
    // A person's user agent is stored sealed (DATA-2): read it the way the console does, opened.
    const listed = await world.owner.client.json<{ events: Array<{ userAgent: string | null }> }>(
      'GET',
      '/api/orgs/acme/audit/events?members=include&action=auth.login_succeeded&limit=100',
    );
    const [login] = listed.body.events.filter((e) => e.userAgent?.startsWith('curl/8.5'));
    expect(login!.userAgent).toBe('curl/8.5 [redacted: a Bulwark token] x');
  });

  it('still records a denial when the denied request is full of tokens', async () => {
    const denied = await viewer.client.send('DELETE', `/api/orgs/acme/secrets/${plant('bwk')}`, undefined, {
      'user-agent': `agent ${plant('bwk')}`,
    });
    expect([403, 404]).toContain(denied.status);
    const attempt = await viewer.client.json('POST', '/api/orgs/acme/teams', {
      name: `x ${plant('bwk')}`.slice(0, 64),
    });
    expect(attempt.status).toBe(403);
    const denials = await eventsOf('access.denied');
    expect(denials.length).toBeGreaterThanOrEqual(1);
  });

  it('records a query parameter holding a token, redacted, in the export it describes', async () => {
    const exported = await world.owner.client.send(
      'GET',
      `/api/orgs/acme/audit/export?format=ndjson&actor=${encodeURIComponent(plant('bwk'))}`,
    );
    expect(exported.status).toBe(200);
    await exported.text();
    const [event] = await eventsOf('audit.exported');
    expect(event!.details).toContain('[redacted: a Bulwark token]');
  });

  it('a failed sign-in with a token as the email is answered and recorded as any other', async () => {
    const answer = await new SessionClient(world.server.url).login(`${plant('bwk')}@acme.test`, plant('bws'));
    expect(answer.status).toBe(401);
    expect((await eventsOf('auth.login_failed')).length).toBeGreaterThanOrEqual(1);
  });

  it('leaves no planted token anywhere in the log, and the chain verifies', async () => {
    const everything = JSON.stringify(await database.db.selectFrom('audit_events').selectAll().execute());
    for (const token of planted) expect(everything).not.toContain(token.slice(4));
    const verified = await world.cli('audit', 'verify');
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
  });
});
