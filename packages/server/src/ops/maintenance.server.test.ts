import { afterEach, describe, expect, it, vi } from 'vitest';
import { type Database, openDatabase } from '../db/database.js';
import { BACKENDS, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';

/**
 * The running server's maintenance loop (PLAT-6): with a short interval and the clock moved past
 * every expiry, the session, registration token and invitation people made through the API are
 * deleted by the server on its own, and the ones made after the move stay.
 */

const DAY = 86_400_000;

describe.each(BACKENDS)('the maintenance loop of a running server on %s', (backend) => {
  let world: OrgWorld | undefined;
  let database: Database | undefined;

  afterEach(async () => {
    await database?.close();
    database = undefined;
    await world?.close();
    world = undefined;
  });

  it('deletes what expired and keeps what is live, without being asked', async () => {
    world = await startOrgWorld({ BULWARK_MAINTENANCE_INTERVAL_SECONDS: '1' }, backend);
    // The server's own database, through a connection of the test's.
    database = openDatabase(world.server.config);
    const db = database.db;

    const makeTokenAndInvite = async (client: OrgWorld['owner']['client'], email: string) => {
      const token = await client.json<{ id: string }>('POST', '/api/orgs/acme/agent-registration-tokens', {});
      expect(token.status).toBe(201);
      await world?.invite(email, 'viewer', client);
      const invitation = await db
        .selectFrom('invitations')
        .select('id')
        .where('email', '=', email)
        .executeTakeFirstOrThrow();
      return { tokenId: token.body.id, invitationId: invitation.id };
    };

    const old = await makeTokenAndInvite(world.owner.client, 'early@acme.test');
    const oldSessions = (await db.selectFrom('sessions').select('id').execute()).map((row) => row.id);
    expect(oldSessions).toHaveLength(1);

    // Past the session's lifetime, the token's hour and the invitation's week.
    world.clock.advance(8 * DAY);
    const owner = await world.signIn(OWNER.email, OWNER.password);
    const live = await makeTokenAndInvite(owner.client, 'late@acme.test');

    const remaining = async () => ({
      sessions: (await db.selectFrom('sessions').select('id').execute()).map((row) => row.id),
      tokens: (await db.selectFrom('registration_tokens').select('id').execute()).map((row) => row.id),
      invitations: (await db.selectFrom('invitations').select('id').execute()).map((row) => row.id),
    });
    // The loop's next run (within a second) is what removes them: nothing in the test deletes.
    await vi.waitFor(
      async () => {
        const now = await remaining();
        expect(now.sessions).not.toContain(oldSessions[0]);
        expect(now.tokens).not.toContain(old.tokenId);
        expect(now.invitations).not.toContain(old.invitationId);
      },
      { timeout: 15_000, interval: 100 },
    );
    const after = await remaining();
    expect(after.sessions).toHaveLength(1);
    expect(after.tokens).toEqual([live.tokenId]);
    expect(after.invitations).toEqual([live.invitationId]);
    // The new session still works.
    expect((await owner.client.send('GET', '/api/orgs/acme/agent-registration-tokens')).status).toBe(200);
    expect(world.server.logs.entries()).toContainEqual(
      expect.objectContaining({ msg: 'maintenance removed expired rows' }),
    );
  });
});
