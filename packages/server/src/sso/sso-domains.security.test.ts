import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DnsServer, startDnsServer } from '../test-support/dns-server.js';
import { type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';

/**
 * Email domains route sign-in only once verified (SSO-4). Attack: an organization claims a domain it
 * does not hold (a customer's, or gmail.com) so that people typing their address on the sign-in
 * page are sent to its identity provider. The claim routes nothing until its challenge is in that
 * domain's DNS, and a domain another organization verified cannot be taken. The lookups go through
 * a real DNS server the test runs, over the DNS protocol.
 */

type DomainBody = { domain: string; verified: boolean; txtName: string; txtValue: string };
type ErrorBody = { error: { code: string; message: string } };

describe('verified email domains', () => {
  let world: OrgWorld;
  let dns: DnsServer;
  let beta: SessionClient;

  beforeAll(async () => {
    dns = await startDnsServer();
    world = await startOrgWorld({ BULWARK_DNS_SERVERS: dns.address });
    await world.createOrg('Beta');
    beta = world.owner.client;
    for (const slug of ['acme', 'beta'])
      expect(
        (
          await world.owner.client.json('POST', `/api/orgs/${slug}/sso/connections`, {
            name: `${slug} IdP`,
            kind: 'oidc',
            config: {
              issuer: 'http://127.0.0.1:9',
              clientId: slug,
              clientSecret: 's',
              defaultRole: 'viewer',
            },
          })
        ).status,
      ).toBe(201);
  }, 60_000);

  afterAll(async () => {
    await world?.close();
    await dns?.close();
  });

  const discover = async (email: string) =>
    (
      await new SessionClient(world.server.url).json<{ connections: Array<{ org: string; name: string }> }>(
        'GET',
        `/api/auth/sso/discover?email=${encodeURIComponent(email)}`,
      )
    ).body.connections;

  it('routes an address to the organization only after its TXT record is published', async () => {
    const claimed = await world.owner.client.json<DomainBody>('POST', '/api/orgs/acme/sso/domains', {
      domain: 'Acme.Test',
    });
    expect(claimed.status).toBe(201);
    expect(claimed.body).toMatchObject({
      domain: 'acme.test',
      verified: false,
      txtName: '_bulwark-challenge.acme.test',
    });
    // Claimed, not proved: nobody is routed.
    expect(await discover('ada@acme.test')).toEqual([]);
    const early = await world.owner.client.json<ErrorBody>(
      'POST',
      '/api/orgs/acme/sso/domains/acme.test/verify',
    );
    expect([early.status, early.body.error.code]).toEqual([409, 'domain_not_verified']);
    // A record with another value (someone else's challenge) proves nothing either.
    dns.setTxt('_bulwark-challenge.acme.test', ['bulwark-domain-verification=not-this-one']);
    const wrong = await world.owner.client.json<ErrorBody>(
      'POST',
      '/api/orgs/acme/sso/domains/acme.test/verify',
    );
    expect(wrong.body.error.message).toMatch(/found 1 other record/);

    dns.setTxt('_bulwark-challenge.acme.test', ['v=spf1 -all', claimed.body.txtValue]);
    const verified = await world.owner.client.json<DomainBody>(
      'POST',
      '/api/orgs/acme/sso/domains/acme.test/verify',
    );
    expect([verified.status, verified.body.verified]).toEqual([200, true]);
    expect(await discover('Ada@ACME.test')).toEqual([
      expect.objectContaining({ org: 'acme', name: 'acme IdP' }),
    ]);
    expect(await discover('ada@other.test')).toEqual([]);
  });

  it('lets no other organization take a verified domain, even with the record of its own challenge', async () => {
    const claimed = await beta.json<DomainBody>('POST', '/api/orgs/beta/sso/domains', {
      domain: 'acme.test',
    });
    expect(claimed.status).toBe(201);
    dns.setTxt('_bulwark-challenge.acme.test', [claimed.body.txtValue]);
    const taken = await beta.json<ErrorBody>('POST', '/api/orgs/beta/sso/domains/acme.test/verify');
    expect([taken.status, taken.body.error.code]).toEqual([409, 'domain_taken']);
    expect(await discover('ada@acme.test')).toEqual([expect.objectContaining({ org: 'acme' })]);
  });

  it('stops routing a domain given up, and answers junk precisely', async () => {
    expect((await world.owner.client.json('DELETE', '/api/orgs/acme/sso/domains/acme.test')).status).toBe(
      200,
    );
    expect(await discover('ada@acme.test')).toEqual([]);
    const bad = await world.owner.client.json<ErrorBody>('POST', '/api/orgs/acme/sso/domains', {
      domain: 'not a domain',
    });
    expect(bad.status).toBe(422);
    const noAt = await new SessionClient(world.server.url).json('GET', '/api/auth/sso/discover?email=nobody');
    expect(noAt.status).toBe(422);
    const unclaimed = await world.owner.client.json<ErrorBody>(
      'POST',
      '/api/orgs/acme/sso/domains/nowhere.test/verify',
    );
    expect(unclaimed.status).toBe(404);
  });
});
