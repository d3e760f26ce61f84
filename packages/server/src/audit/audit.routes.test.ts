import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  type Backend,
  type Member,
  type OrgWorld,
  startOrgWorld,
} from '../test-support/org-world.js';

/**
 * The audit search over HTTP (AUD-4): type families, actors by email or name, server-side sorting
 * and keyset paging, each event's place in its chain, and precise refusals of junk.
 */

interface Event {
  id: string;
  seq: number;
  ts: string;
  action: string;
  chain: 'org' | 'instance';
  actor: { id: string | null; name: string | null; email: string | null };
  hash: string;
  prevHash: string;
  signed: boolean;
}
interface Page {
  events: Event[];
  nextCursor: string | null;
}
interface Refusal {
  error: { code: string; fields?: Array<{ path: string; message: string }> };
}

describe.each(BACKENDS)('audit search on %s', (backend: Backend) => {
  let world: OrgWorld;
  let admin: Member;

  const search = async (query: string, client = world.owner.client) => {
    const answer = await client.json<Page & Refusal>('GET', `/api/orgs/acme/audit/events?${query}`);
    return answer;
  };
  /** Every page of a query, following the cursors. */
  async function everything(query: string): Promise<Event[]> {
    const all: Event[] = [];
    let cursor: string | null = null;
    do {
      const page = await search(`${query}&limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      all.push(...page.body.events);
      cursor = page.body.nextCursor;
    } while (cursor);
    return all;
  }

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_AUDIT_CHECKPOINT_EVERY: '5' }, backend);
    admin = await world.join('ada@example.test', 'admin');
    for (const [client, name] of [
      [world.owner.client, 'owners-team'],
      [admin.client, 'ada-one'],
      [admin.client, 'ada-two'],
    ] as const) {
      world.clock.advance(1000);
      expect((await client.json('POST', '/api/orgs/acme/teams', { name })).status).toBe(201);
    }
    world.clock.advance(1000);
    expect(
      (
        await admin.client.json('POST', '/api/orgs/acme/invitations', {
          email: 'x@example.test',
          role: 'viewer',
        })
      ).status,
    ).toBe(201);
  }, 60_000);
  afterAll(() => world?.close());

  it('filters by a type family: team.* selects every team event and nothing else', async () => {
    const teams = await everything('action=team.*&members=exclude');
    expect(teams.map((e) => e.action)).toEqual(['team.created', 'team.created', 'team.created']);
    const exact = await search('action=invitation.created');
    // Ada's own invitation, and the one Ada sent.
    expect(exact.body.events.map((e) => e.action)).toEqual(['invitation.created', 'invitation.created']);
  });

  it('finds an actor by email, by name, or by id, and shows their name', async () => {
    const byEmail = await everything('actor=ADA@example.test&action=team.*');
    expect(byEmail).toHaveLength(2);
    expect(byEmail.every((e) => e.actor.id === admin.id && e.actor.email === 'ada@example.test')).toBe(true);
    expect(byEmail[0]?.actor.name).toBe('ada');
    expect((await everything('actor=ada&action=team.*')).map((e) => e.id)).toEqual(byEmail.map((e) => e.id));
    expect((await everything(`actor=${admin.id}&action=team.*`)).map((e) => e.id)).toEqual(
      byEmail.map((e) => e.id),
    );
    expect((await search('actor=nobody@example.test')).body.events).toEqual([]);
  });

  it('sorts and pages on the server, without gaps or repeats, in either order', async () => {
    const newest = await everything('members=exclude');
    const oldest = await everything('members=exclude&order=asc');
    expect(oldest.map((e) => e.id)).toEqual([...newest].reverse().map((e) => e.id));
    expect(new Set(newest.map((e) => e.id)).size).toBe(newest.length);
    const byType = await everything('members=exclude&sort=action&order=asc');
    expect(byType.map((e) => e.action)).toEqual(newest.map((e) => e.action).sort());
    expect(byType).toHaveLength(newest.length);
  });

  it("shows each event's place in its chain and whether a signed checkpoint covers it", async () => {
    const chain = await everything('members=exclude&order=asc');
    for (const [i, event] of chain.entries()) {
      if (i > 0 && chain[i - 1]!.seq === event.seq - 1) expect(event.prevHash).toBe(chain[i - 1]!.hash);
    }
    const verification = await world.owner.client.json<{ signedSeq: number }>(
      'GET',
      '/api/orgs/acme/audit/verification',
    );
    expect(verification.body.signedSeq).toBeGreaterThan(0);
    for (const event of chain) expect(event.signed).toBe(event.seq <= verification.body.signedSeq);
  });

  it('refuses junk with a precise 4xx that names the field in words', async () => {
    const cases: Array<[string, number, string, string | undefined]> = [
      [
        'action=nope.*',
        422,
        'query.action',
        'is not an audit event type, nor a type family such as command.*',
      ],
      [
        'action=command',
        422,
        'query.action',
        'is not an audit event type, nor a type family such as command.*',
      ],
      ['sort=actor', 422, 'query.sort', 'is not a sort order (time or action)'],
      ['order=up', 422, 'query.order', 'is not asc or desc'],
      ['outcome=maybe', 422, 'query.outcome', 'is not an outcome (success, failure or denied)'],
      ['since=yesterday', 422, 'query.since', 'is not an ISO-8601 date and time'],
      [
        'since=2026-11-22T10:00:00Z&until=2026-11-22T09:00:00Z',
        422,
        'query.until',
        'must be later than since',
      ],
      ['limit=0', 422, 'query.limit', undefined],
      ['colour=red', 422, 'query.colour', undefined],
    ];
    for (const [query, status, path, message] of cases) {
      const answer = await search(query);
      expect([query, answer.status, answer.body.error.code]).toEqual([query, status, 'validation_failed']);
      expect(answer.body.error.fields?.[0]?.path).toBe(path);
      if (message) expect(answer.body.error.fields?.[0]?.message).toBe(message);
    }
    // A cursor from another sort order, or one the server never issued, is refused, not misread.
    const page = await search('limit=1&sort=action');
    for (const cursor of [page.body.nextCursor!, 'bm90LWEtY3Vyc29y', 'e30']) {
      const answer = await search(`limit=1&cursor=${cursor}`);
      expect([answer.status, answer.body.error.code]).toEqual([400, 'invalid_cursor']);
    }
  });

  it('lists the event types grouped by family', async () => {
    const types = await world.owner.client.json<{ groups: Array<{ prefix: string; types: string[] }> }>(
      'GET',
      '/api/orgs/acme/audit/types',
    );
    expect(types.status).toBe(200);
    const command = types.body.groups.find((g) => g.prefix === 'command.*');
    expect(command?.types).toContain('command.failed');
    expect(command?.types.every((t) => t.startsWith('command.'))).toBe(true);
  });
});
