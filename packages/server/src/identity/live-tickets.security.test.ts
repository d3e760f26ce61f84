import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, type Member, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';
import type { SessionClient } from '../test-support/session-client.js';
import { LIVE_TICKET_TTL_MS } from './live-tickets.service.js';
import { SESSION_COOKIE } from './session-guard.js';

/**
 * The console's live stream of a command (NET-5) is an EventSource, which cannot send a header: the
 * session cookie is all a browser attaches to it on its own. Attacks on it:
 * - a page of another site opens the stream in the victim's browser (a navigation, an EventSource
 *   with credentials): the cookie alone, or a foreign Origin, must open nothing;
 * - someone who read a ticket (a proxy's access log, a shoulder) uses it again, later, for another
 *   command or organization, or with their own session;
 * - many requests race one ticket, hoping that more than one gets through;
 * - a member whose access was taken away uses a ticket obtained before.
 * The console asks for a ticket with its cookie and CSRF token, then opens the stream with it; the
 * ticket is 256-bit, single use, 30 seconds, for one session, organization and stream, and kept only
 * as a hash. What the holder may read is still decided by the route's permission, as before.
 */

type ErrorBody = { error: { code: string } };
type AuditPage = { events: Array<{ details: { reason?: string; permission?: string } }> };

const PING = {
  name: 'ping',
  description: 'ping',
  params: { type: 'object', additionalProperties: false },
  risk: 'low',
  timeoutSeconds: 10,
  secrets: [],
};

describe.each(BACKENDS)('live tickets on %s', (backend) => {
  let world: OrgWorld;
  let acmeCommand: string;
  let otherAcmeCommand: string;
  let betaCommand: string;

  /** A command in `slug` that has ended (cancelled before delivery): its stream ends at once. */
  async function endedCommand(client: SessionClient, slug: string, agentName: string): Promise<string> {
    const registration = await client.json<{ token: string }>(
      'POST',
      `/api/orgs/${slug}/agent-registration-tokens`,
      { uses: 1 },
    );
    const agent = await registerAgent(world.server.url, registration.body.token, agentName);
    const connection = await handshake(world.server.url, agent.agentId, agent.keys);
    await reportApp(connection, [PING]);
    connection.socket.close();
    await connection.closed;
    const command = await client.json<{ id: string }>('POST', `/api/orgs/${slug}/commands`, {
      agent: agent.agentId,
      service: 'app',
      action: 'ping',
    });
    expect(command.status).toBe(201);
    expect((await client.json('POST', `/api/orgs/${slug}/commands/${command.body.id}/cancel`)).status).toBe(
      200,
    );
    return command.body.id;
  }

  async function ticketFor(client: SessionClient, slug: string, command: string): Promise<string> {
    const issued = await client.json<{ ticket: string; expiresAt: string }>(
      'POST',
      `/api/orgs/${slug}/commands/${command}/events/tickets`,
    );
    expect(issued.status).toBe(201);
    return issued.body.ticket;
  }

  function open(
    client: SessionClient,
    slug: string,
    command: string,
    ticket?: string,
    headers: Record<string, string> = {},
  ) {
    const query = ticket === undefined ? '' : `?ticket=${encodeURIComponent(ticket)}`;
    return client.send('GET', `/api/orgs/${slug}/commands/${command}/events${query}`, undefined, headers);
  }

  /** The refusal's status and code; the stream's end when it was let through. */
  async function outcome(response: Response): Promise<{ status: number; code?: string; ended?: boolean }> {
    const text = await response.text();
    if (response.status !== 200)
      return { status: response.status, code: (JSON.parse(text) as ErrorBody).error.code };
    return { status: 200, ended: text.includes('"status":"cancelled"') };
  }

  const REFUSED = { status: 401, code: 'live_ticket_invalid' };
  const OPENED = { status: 200, ended: true };

  beforeAll(async () => {
    world = await startOrgWorld({}, backend);
    acmeCommand = await endedCommand(world.owner.client, 'acme', 'acme-web');
    otherAcmeCommand = await endedCommand(world.owner.client, 'acme', 'acme-db');
    // The owner also owns a second organization.
    const created = await world.admin(
      'create-org',
      '--name',
      'Beta',
      '--owner',
      OWNER.email,
      '--mfa-optional',
    );
    expect(created.code, created.stderr).toBe(0);
    betaCommand = await endedCommand(world.owner.client, 'beta', 'beta-web');
  }, 60_000);
  afterAll(() => world?.close());

  it('opens the stream with a fresh ticket from the same session', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', acmeCommand);
    expect(ticket).toMatch(/^bwt_[A-Za-z0-9_-]{49}$/);
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand, ticket))).toEqual(OPENED);
  });

  it('refuses the session cookie alone, and records the refusal', async () => {
    // A page of another site cannot read a ticket, so all it can make the browser send is the cookie.
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand))).toEqual(REFUSED);
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand, 'bwt_made-up'))).toEqual(
      REFUSED,
    );
    const denied = await world.owner.client.json<AuditPage>(
      'GET',
      '/api/orgs/acme/audit/events?action=access.denied&limit=500',
    );
    expect(denied.body.events.map((event) => event.details)).toContainEqual({
      permission: 'commands:read',
      reason: 'no live ticket',
    });
  });

  it('refuses a ticket the second time, and lets exactly one of many racing requests through', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', acmeCommand);
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand, ticket))).toEqual(OPENED);
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand, ticket))).toEqual(REFUSED);

    const raced = await ticketFor(world.owner.client, 'acme', acmeCommand);
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, async () =>
        outcome(await open(world.owner.client, 'acme', acmeCommand, raced)),
      ),
    );
    expect(outcomes.filter((o) => o.status === 200)).toEqual([OPENED]);
    expect(outcomes.filter((o) => o.status !== 200)).toEqual(Array.from({ length: 7 }, () => REFUSED));
  });

  it('refuses a ticket past its 30 seconds', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', acmeCommand);
    world.clock.advance(LIVE_TICKET_TTL_MS + 1);
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand, ticket))).toEqual(REFUSED);
  });

  it('refuses a ticket for another command, and that ticket is used up by the attempt', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', otherAcmeCommand);
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand, ticket))).toEqual(REFUSED);
    expect(await outcome(await open(world.owner.client, 'acme', otherAcmeCommand, ticket))).toEqual(REFUSED);
  });

  it('refuses a ticket of one organization in another, even to a member of both', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', acmeCommand);
    expect(await outcome(await open(world.owner.client, 'beta', betaCommand, ticket))).toEqual(REFUSED);
    // Not used up there: another organization's tickets are not even found.
    expect(await outcome(await open(world.owner.client, 'acme', acmeCommand, ticket))).toEqual(OPENED);
  });

  it("refuses someone else's ticket used with one's own session, another session of the same user included", async () => {
    const mallory: Member = await world.join(`mallory-${backend}@example.test`, 'viewer');
    const stolen = await ticketFor(world.owner.client, 'acme', acmeCommand);
    expect(await outcome(await open(mallory.client, 'acme', acmeCommand, stolen))).toEqual(REFUSED);
    const ownerElsewhere = await world.signIn(OWNER.email, OWNER.password);
    const fromFirstSession = await ticketFor(world.owner.client, 'acme', acmeCommand);
    expect(await outcome(await open(ownerElsewhere.client, 'acme', acmeCommand, fromFirstSession))).toEqual(
      REFUSED,
    );
    // Her own ticket works: she may read commands.
    const own = await ticketFor(mallory.client, 'acme', acmeCommand);
    expect(await outcome(await open(mallory.client, 'acme', acmeCommand, own))).toEqual(OPENED);
  });

  it('refuses a request another site makes, valid ticket or not', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', acmeCommand);
    // An EventSource of another site, with credentials: the browser names that site as the Origin.
    expect(
      await outcome(
        await open(world.owner.client, 'acme', acmeCommand, ticket, { origin: 'https://evil.example' }),
      ),
    ).toEqual({ status: 403, code: 'csrf_failed' });
    // A navigation from another site carries no Origin on a GET, but Sec-Fetch-Site says where it came from.
    const withCookie = (headers: Record<string, string>) =>
      fetch(`${world.server.url}/api/orgs/acme/commands/${acmeCommand}/events?ticket=${ticket}`, {
        headers: { cookie: `${SESSION_COOKIE}=${world.owner.client.cookie}`, ...headers },
      });
    expect(await outcome(await withCookie({ 'sec-fetch-site': 'cross-site' }))).toEqual({
      status: 403,
      code: 'csrf_failed',
    });
    expect(await outcome(await withCookie({ origin: 'null' }))).toEqual({ status: 403, code: 'csrf_failed' });
    // Without the headers a browser adds (a script, curl), the ticket is what counts; it was not used above.
    expect(await outcome(await withCookie({}))).toEqual(OPENED);
  });

  it('issues tickets only to a request with the CSRF token, which no other site can send', async () => {
    const issued = await world.owner.client.json<ErrorBody>(
      'POST',
      `/api/orgs/acme/commands/${acmeCommand}/events/tickets`,
      undefined,
      { 'x-csrf-token': '' },
    );
    expect(issued).toEqual({
      status: 403,
      body: { error: expect.objectContaining({ code: 'csrf_failed' }) },
    });
  });

  it('still decides access: a ticket obtained before a member was removed opens nothing', async () => {
    const leaving = await world.join(`leaving-${backend}@example.test`, 'viewer');
    const ticket = await ticketFor(leaving.client, 'acme', acmeCommand);
    // Removing a member is privileged; the clock has moved past the owner's sign-in.
    await world.owner.client.send('POST', '/api/auth/reauth', { password: OWNER.password });
    expect((await world.owner.client.json('DELETE', `/api/orgs/acme/members/${leaving.id}`)).status).toBe(
      200,
    );
    expect(await outcome(await open(leaving.client, 'acme', acmeCommand, ticket))).toEqual({
      status: 404,
      code: 'not_found',
    });
    // And nobody gets a ticket for a command they may not read.
    const outsider = await world.owner.client.json<ErrorBody>(
      'POST',
      `/api/orgs/acme/commands/${betaCommand}/events/tickets`,
    );
    expect(outsider.status).toBe(404);
  });

  it('lets an API key read the stream with its Authorization header, and gives keys no ticket', async () => {
    await world.owner.client.send('POST', '/api/auth/reauth', { password: OWNER.password });
    const created = await world.owner.client.json<{ token: string }>('POST', '/api/orgs/acme/api-keys', {
      name: `live ${backend}`,
      permissions: ['commands:read'],
    });
    expect(created.status).toBe(201);
    const authorization = { authorization: `Bearer ${created.body.token}` };
    const base = `${world.server.url}/api/orgs/acme/commands/${acmeCommand}`;
    expect(await outcome(await fetch(`${base}/events`, { headers: authorization }))).toEqual(OPENED);
    const issued = await fetch(`${base}/events/tickets`, { method: 'POST', headers: authorization });
    expect(await outcome(issued)).toEqual({ status: 403, code: 'api_key_not_allowed' });
  });

  it('keeps the ticket out of the access log', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', acmeCommand);
    await outcome(await open(world.owner.client, 'acme', acmeCommand, ticket));
    const logs = world.server.logs.text;
    expect(logs).not.toContain(ticket);
    expect(logs).not.toContain(ticket.slice(4, 30));
    const lines = world.server.logs
      .entries()
      .filter((entry) => JSON.stringify(entry.req ?? '').includes(`/commands/${acmeCommand}/events?`));
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect((line.req as { url: string }).url).toMatch(/\?ticket=%5Bredacted%5D$/);
  });

  it('stores only the SHA-256 of a ticket', async () => {
    const ticket = await ticketFor(world.owner.client, 'acme', acmeCommand);
    const database = openDatabase(world.server.config);
    try {
      const rows = JSON.stringify(await database.db.selectFrom('live_tickets').selectAll().execute());
      expect(rows).toContain(createHash('sha256').update(ticket).digest('hex'));
      expect(rows).not.toContain(ticket.slice(4, 30));
    } finally {
      await database.close();
    }
  });
});
