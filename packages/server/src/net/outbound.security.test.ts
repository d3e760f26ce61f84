import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.js';
import { type DnsServer, startDnsServer } from '../test-support/dns-server.js';
import {
  createCheckedResolver,
  createGuardedFetch,
  createOutboundDecider,
  OutboundBlockedError,
  OutboundLimitError,
  type OutboundPolicy,
  outboundPolicyOf,
} from './outbound.js';

/**
 * Server-side request forgery (NET-3). Attack: someone who can name a URL the server fetches (an org
 * admin's OIDC issuer, JWKS or introspection URL, SAML metadata URL, webhook sink, or a redirect or
 * discovery document served by a hostile IdP) points it at the server's own neighbourhood: the
 * loopback admin ports, the cloud metadata endpoint (169.254.169.254, which hands out instance
 * credentials), the private network, by a literal address in any disguise (decimal, octal, hex,
 * IPv4-mapped IPv6, NAT64), by a name that resolves there, by a name that resolves to a public
 * address when checked and to 127.0.0.1 when connected (DNS rebinding), or by a redirect from an
 * allowed server. The guard refuses each before any connection reaches the victim, which here is a
 * real HTTP server on 127.0.0.1 that counts the requests it gets. Names go through a real DNS server
 * the test runs. Size and time limits stop an endpoint that streams forever or never answers.
 */

type Seen = {
  host: string | undefined;
  path: string | undefined;
  authorization?: string | undefined;
  collector?: string | undefined;
  method?: string | undefined;
};

interface TestServer {
  server: Server;
  seen: Seen[];
}

function handle(seen: Seen[], label: string) {
  return (req: IncomingMessage, res: ServerResponse) => {
    const collector = req.headers['x-collector-key'] as string | undefined;
    seen.push({
      host: req.headers.host,
      path: req.url,
      authorization: req.headers.authorization,
      ...(collector !== undefined ? { collector } : {}),
      ...(req.method !== 'GET' ? { method: req.method } : {}),
    });
    const url = new URL(req.url ?? '/', 'http://x');
    switch (url.pathname) {
      case '/redirect':
        res
          .writeHead(Number(url.searchParams.get('status') ?? 302), {
            location: url.searchParams.get('to') ?? '/',
          })
          .end();
        return;
      case '/loop':
        res.writeHead(302, { location: '/loop' }).end();
        return;
      case '/forever': {
        // Streams until the client goes away: only the size limit ends it.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(16 * 1024, 0x61);
        const pump = () => {
          while (!res.destroyed && res.write(chunk)) {}
        };
        res.on('drain', pump);
        pump();
        return;
      }
      case '/declared-huge':
        res.writeHead(200, { 'content-length': String(50 * 1024 * 1024) }).write('a');
        return;
      case '/hang':
        return; // never answers: only the time limit ends it
      case '/trickle':
        res.writeHead(200, { 'content-type': 'text/plain' }).write('first bytes, then nothing');
        return;
      default:
        res.writeHead(200, { 'content-type': 'text/plain', 'x-served-by': label }).end(`hello from ${label}`);
    }
  };
}

async function listen(host: string, port: number, label: string): Promise<TestServer> {
  const seen: Seen[] = [];
  const server = createServer(handle(seen, label));
  server.listen(port, host);
  await once(server, 'listening');
  return { server, seen };
}

async function refusal(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe('outbound SSRF guard', () => {
  let dns: DnsServer;
  // The victim: every request it sees is a failure unless the test allowed 127.0.0.1.
  let victim: TestServer;
  // An allowed stand-in on 127.0.0.2, same port: where a checked address really leads.
  let checked: TestServer;
  let port: number;

  const policy = (overrides: Partial<OutboundPolicy> = {}): OutboundPolicy => ({
    allowlist: [],
    allowPrivate: [],
    dnsServers: [dns.address],
    ...overrides,
  });

  beforeAll(async () => {
    dns = await startDnsServer();
    victim = await listen('127.0.0.1', 0, 'victim');
    port = (victim.server.address() as AddressInfo).port;
    checked = await listen('127.0.0.2', port, 'checked');
  });

  afterAll(async () => {
    for (const { server } of [victim, checked]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    await dns.close();
  });

  beforeEach(() => {
    victim.seen.length = 0;
    checked.seen.length = 0;
  });

  describe('literal addresses in every disguise are refused before connecting', () => {
    const literals = [
      ['loopback', '127.0.0.1'],
      ['decimal loopback', '2130706433'],
      ['octal loopback', '0177.0.0.1'],
      ['hex loopback', '0x7f.0.0.1'],
      ['short-form loopback', '127.1'],
      ['IPv4-mapped IPv6 loopback', '[::ffff:127.0.0.1]'],
      ['NAT64 loopback', '[64:ff9b::7f00:1]'],
      ['IPv4-compatible loopback', '[::127.0.0.1]'],
      ['6to4 loopback', '[2002:7f00:1::]'],
      ['IPv6 loopback', '[::1]'],
      ['unspecified (reaches this host on Linux)', '0.0.0.0'],
      ['IPv6 unspecified', '[::]'],
      ['cloud metadata', '169.254.169.254'],
      ['CGNAT (and Alibaba metadata range)', '100.64.0.1'],
      ['RFC 1918 10/8', '10.0.0.1'],
      ['RFC 1918 172.16/12', '172.16.5.4'],
      ['RFC 1918 192.168/16', '192.168.1.1'],
      ['IPv6 unique local', '[fd00::1]'],
      ['IPv6 link-local', '[fe80::1]'],
      ['AWS IPv6 metadata', '[fd00:ec2::254]'],
    ] as const;
    it.each(literals)('%s (%s)', async (_, host) => {
      const guarded = createGuardedFetch(policy());
      const error = await refusal(guarded(`http://${host}:${port}/secret`));
      expect(error).toBeInstanceOf(OutboundBlockedError);
      expect((error as OutboundBlockedError).reason).toBe('address_not_public');
      expect(victim.seen).toEqual([]);
    });
  });

  describe('names that resolve to a blocked address are refused before connecting', () => {
    const names: Array<[string, string[]]> = [
      ['loopback', ['127.0.0.1']],
      ['mapped', ['::ffff:127.0.0.1']],
      ['nat64', ['64:ff9b::7f00:1']],
      ['ipv6-loopback', ['::1']],
      ['unspecified', ['0.0.0.0']],
      ['metadata', ['169.254.169.254']],
      ['cgnat', ['100.64.0.1']],
      ['private', ['10.1.2.3']],
      ['ula', ['fd00::1']],
      ['link-local6', ['fe80::1']],
      // One public and one private answer: the client might pick either, so the name is refused.
      ['mixed', ['93.184.215.14', '127.0.0.1']],
    ];
    it.each(names)('%s.attacker.test -> %s', async (label, addresses) => {
      const name = `${label}.attacker.test`;
      dns.setAddresses(name, addresses);
      const guarded = createGuardedFetch(policy());
      const error = await refusal(guarded(`http://${name}:${port}/secret`));
      expect(error).toBeInstanceOf(OutboundBlockedError);
      expect((error as OutboundBlockedError).reason).toBe('address_not_public');
      // The message names the host as given, never the address it resolved to.
      for (const address of addresses) expect((error as Error).message).not.toContain(address);
      expect(victim.seen).toEqual([]);
    });

    it('localhost through the system resolver', async () => {
      const guarded = createGuardedFetch(policy({ dnsServers: [] }));
      const error = await refusal(guarded(`http://localhost:${port}/secret`));
      expect(error).toBeInstanceOf(OutboundBlockedError);
      expect(victim.seen).toEqual([]);
    });

    it('non-HTTP schemes', async () => {
      const guarded = createGuardedFetch(policy());
      for (const url of ['file:///etc/passwd', `ftp://127.0.0.1:${port}/`, 'data:text/plain,hi']) {
        const error = await refusal(guarded(url));
        expect((error as OutboundBlockedError).reason).toBe('scheme_not_allowed');
      }
    });
  });

  describe('DNS rebinding: the connection goes to the address that was checked', () => {
    it('a name answering an allowed address, then 127.0.0.1, reaches only the allowed one', async () => {
      // 127.0.0.2 stands in for the "public" first answer so the success path is a real exchange.
      dns.setAddresses('rebind.attacker.test', ['127.0.0.2'], ['127.0.0.1']);
      const guarded = createGuardedFetch(policy({ allowPrivate: ['127.0.0.2/32'] }));
      const response = await guarded(`http://rebind.attacker.test:${port}/secret`);
      expect(await response.text()).toBe('hello from checked');
      expect(checked.seen).toHaveLength(1);
      expect(victim.seen).toEqual([]);
      expect(dns.addressQuestions('rebind.attacker.test', 'A')).toBe(1);
    });

    it('a name answering a public address, then 127.0.0.1, never reaches loopback', async () => {
      // The sandbox may or may not route to the public address; either way loopback sees nothing.
      dns.setAddresses('rebind-public.attacker.test', ['93.184.215.14'], ['127.0.0.1']);
      const guarded = createGuardedFetch(policy({ timeoutMs: 3000 }));
      const outcome = await guarded(`http://rebind-public.attacker.test:${port}/secret`).then(
        (response) => response.headers.get('x-served-by'),
        (error: unknown) => (error instanceof OutboundBlockedError ? 'blocked' : 'network error'),
      );
      expect(outcome).not.toBe('victim');
      expect(outcome).not.toBe('blocked');
      expect(victim.seen).toEqual([]);
      expect(dns.addressQuestions('rebind-public.attacker.test', 'A')).toBe(1);
    });
  });

  describe('redirects are re-checked on every hop', () => {
    const allowLoopback = () => createGuardedFetch(policy({ allowPrivate: ['127.0.0.1/32'] }));

    it('an allowed server redirecting to a blocked address is refused', async () => {
      for (const target of [`http://127.0.0.2:${port}/secret`, 'http://169.254.169.254/latest/meta-data/']) {
        const error = await refusal(
          allowLoopback()(`http://127.0.0.1:${port}/redirect?to=${encodeURIComponent(target)}`),
        );
        expect(error).toBeInstanceOf(OutboundBlockedError);
        expect((error as OutboundBlockedError).reason).toBe('address_not_public');
      }
      expect(checked.seen).toEqual([]);
      expect(victim.seen).toHaveLength(2);
    });

    it('a redirect to a name resolving to a blocked address is refused', async () => {
      dns.setAddresses('redirected.attacker.test', ['127.0.0.2']);
      const target = `http://redirected.attacker.test:${port}/secret`;
      const error = await refusal(
        allowLoopback()(`http://127.0.0.1:${port}/redirect?to=${encodeURIComponent(target)}`),
      );
      expect(error).toBeInstanceOf(OutboundBlockedError);
      expect(checked.seen).toEqual([]);
    });

    it('credentials for one origin do not follow a redirect to another', async () => {
      dns.setAddresses('elsewhere.onprem.test', ['127.0.0.1']);
      const target = `http://elsewhere.onprem.test:${port}/ok`;
      const response = await allowLoopback()(
        `http://127.0.0.1:${port}/redirect?to=${encodeURIComponent(target)}`,
        { headers: { authorization: 'Bearer for-the-first-origin-only' } },
      );
      expect(response.status).toBe(200);
      expect(victim.seen.map((request) => request.authorization)).toEqual([
        'Bearer for-the-first-origin-only',
        undefined,
      ]);
    });

    // A caller's own API-key header (not only Authorization/Cookie) and its request body were meant
    // for the first origin: a redirect elsewhere must not carry them there.
    it('a cross-origin hop drops every caller header and never re-sends a body', async () => {
      dns.setAddresses('collector.onprem.test', ['127.0.0.1']);
      const target = encodeURIComponent(`http://collector.onprem.test:${port}/ok`);
      const followed = await allowLoopback()(`http://127.0.0.1:${port}/redirect?to=${target}`, {
        headers: { 'x-collector-key': 'for-the-first-origin-only' },
      });
      expect(followed.status).toBe(200);
      expect(victim.seen.map((request) => request.collector)).toEqual([
        'for-the-first-origin-only',
        undefined,
      ]);

      victim.seen.length = 0;
      const error = await refusal(
        allowLoopback()(`http://127.0.0.1:${port}/redirect?status=307&to=${target}`, {
          method: 'POST',
          body: 'audit lines',
        }),
      );
      expect((error as OutboundBlockedError).reason).toBe('redirect_not_allowed');
      expect(victim.seen).toHaveLength(1);
    });

    it('allowed redirects are followed, endless ones stop', async () => {
      const response = await allowLoopback()(`http://127.0.0.1:${port}/redirect?to=%2Fok`);
      expect(await response.text()).toBe('hello from victim');
      const error = await refusal(allowLoopback()(`http://127.0.0.1:${port}/loop`));
      expect((error as OutboundBlockedError).reason).toBe('too_many_redirects');
    });
  });

  describe('allow entries and the allow-list', () => {
    it('an on-prem name explicitly allowed works end to end; without the entry it is refused', async () => {
      dns.setAddresses('idp.onprem.test', ['127.0.0.1']);
      const refused = await refusal(createGuardedFetch(policy())(`http://idp.onprem.test:${port}/ok`));
      expect((refused as OutboundBlockedError).reason).toBe('address_not_public');
      expect(victim.seen).toEqual([]);

      // A name entry lifts the block for the LAN only: this host's loopback takes an address entry.
      const byName = await refusal(
        createGuardedFetch(policy({ allowPrivate: ['idp.onprem.test'] }))(
          `http://idp.onprem.test:${port}/ok`,
        ),
      );
      expect((byName as OutboundBlockedError).reason).toBe('address_not_public');
      expect(victim.seen).toEqual([]);

      const guarded = createGuardedFetch(policy({ allowPrivate: ['127.0.0.1'] }));
      const response = await guarded(`http://idp.onprem.test:${port}/ok`);
      expect(response.status).toBe(200);
      expect(await response.text()).toBe('hello from victim');
      expect(victim.seen).toEqual([{ host: `idp.onprem.test:${port}`, path: '/ok' }]);
    });

    // An attacker who controls (or poisons) the DNS of an allowed on-prem name points it at the
    // server's loopback services or the cloud metadata endpoint: a name entry does not reach those.
    it('a host-name entry reaches private, unique-local and CGNAT addresses, never loopback or link-local', () => {
      const decider = createOutboundDecider({
        allowlist: [],
        allowPrivate: ['idp.onprem.test', '.lan.test'],
      });
      const verdict = (host: string, address: string) => decider.checkAddress(host, address).allowed;
      for (const address of ['10.1.2.3', '192.168.0.9', '172.16.0.1', '100.64.0.1', 'fd00::1'])
        expect(verdict('idp.onprem.test', address), address).toBe(true);
      for (const address of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '169.254.169.254', 'fe80::1'])
        expect(verdict('idp.onprem.test', address), address).toBe(false);
      expect(verdict('x.lan.test', '169.254.169.254')).toBe(false);
      expect(verdict('other.test', '10.1.2.3')).toBe(false);
      // An explicit address or CIDR entry still opens loopback or link-local, for any name.
      const explicit = createOutboundDecider({
        allowlist: [],
        allowPrivate: ['127.0.0.1', '169.254.0.0/16'],
      });
      expect(explicit.checkAddress('any.test', '127.0.0.1').allowed).toBe(true);
      expect(explicit.checkAddress('any.test', '169.254.169.254').allowed).toBe(true);
    });

    it('the allow-list refuses a host outside it, before asking DNS', async () => {
      dns.setAddresses('allowed.corp.test', ['127.0.0.1']);
      dns.setAddresses('other.corp.test', ['127.0.0.1']);
      const guarded = createGuardedFetch(
        policy({ allowlist: ['.corp-idp.test', 'allowed.corp.test'], allowPrivate: ['127.0.0.1/32'] }),
      );
      const error = await refusal(guarded(`http://other.corp.test:${port}/ok`));
      expect((error as OutboundBlockedError).reason).toBe('not_in_allowlist');
      expect(dns.addressQuestions('other.corp.test', 'A')).toBe(0);
      const literal = await refusal(guarded(`http://127.0.0.1:${port}/ok`));
      expect((literal as OutboundBlockedError).reason).toBe('not_in_allowlist');
      expect(victim.seen).toEqual([]);

      const response = await guarded(`http://allowed.corp.test:${port}/ok`);
      expect(await response.text()).toBe('hello from victim');
    });

    it('the allow-list alone does not open private addresses', async () => {
      dns.setAddresses('listed.corp.test', ['127.0.0.1']);
      const guarded = createGuardedFetch(policy({ allowlist: ['listed.corp.test'] }));
      const error = await refusal(guarded(`http://listed.corp.test:${port}/ok`));
      expect((error as OutboundBlockedError).reason).toBe('address_not_public');
      expect(victim.seen).toEqual([]);
    });
  });

  describe('settings', () => {
    it('the server builds its guard from BULWARK_OUTBOUND_* and BULWARK_DNS_SERVERS', async () => {
      dns.setAddresses('idp.configured.test', ['127.0.0.1']);
      const config = loadConfig({
        env: {
          BULWARK_DNS_SERVERS: dns.address,
          BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1',
          BULWARK_OUTBOUND_ALLOWLIST: '.configured.test',
        },
      });
      const guarded = createGuardedFetch(outboundPolicyOf(config));
      expect((await guarded(`http://idp.configured.test:${port}/ok`)).status).toBe(200);
      const error = await refusal(guarded(`http://elsewhere.example:${port}/ok`));
      expect((error as OutboundBlockedError).reason).toBe('not_in_allowlist');
    });

    // Syslog connects itself: its name must go through the same resolver (BULWARK_DNS_SERVERS) and
    // checks as HTTP, not the system's lookup, which the operator's DNS setting does not govern.
    it("clients that connect themselves resolve through the guard's resolver and checks", async () => {
      dns.setAddresses('syslog.lan.test', ['10.20.30.40']);
      dns.setAddresses('syslog.evil.test', ['169.254.169.254']);
      const resolveChecked = createCheckedResolver(policy({ allowPrivate: ['.lan.test'] }));
      expect(await resolveChecked('syslog.lan.test')).toBe('10.20.30.40');
      expect(dns.addressQuestions('syslog.lan.test', 'A')).toBe(1);
      const metadata = await refusal(resolveChecked('syslog.evil.test'));
      expect((metadata as OutboundBlockedError).reason).toBe('address_not_public');
      expect((metadata as Error).message).not.toContain('169.254');
      expect(((await refusal(resolveChecked('127.0.0.1'))) as OutboundBlockedError).reason).toBe(
        'address_not_public',
      );
    });

    it('refuses entries that are not a host, .domain, IP or CIDR', () => {
      for (const bad of ['http://idp.example', '10.0.0.0/33', 'idp.example:8443', 'a b'])
        expect(() => loadConfig({ env: { BULWARK_OUTBOUND_ALLOW_PRIVATE: bad } })).toThrow(ConfigError);
      expect(() =>
        loadConfig({ env: { BULWARK_BREACHED_PASSWORDS_URL: 'https://u:p@range.example/' } }),
      ).toThrow(ConfigError);
    });
  });

  describe('size and time limits', () => {
    const guarded = () => createGuardedFetch(policy({ allowPrivate: ['127.0.0.1/32'] }));

    it('a body that never ends is cut off at maxResponseBytes', async () => {
      const response = await guarded()(`http://127.0.0.1:${port}/forever`, { maxResponseBytes: 256 * 1024 });
      const error = await refusal(response.arrayBuffer());
      expect(error).toBeInstanceOf(OutboundLimitError);
      expect((error as OutboundLimitError).reason).toBe('response_too_large');
    });

    // A webhook receiver answers 2xx with a body over the limit: a caller judging by status (the
    // audit sinks) must see the 2xx, or it counts a delivered batch as failed and resends it for ever.
    it('discardBody: the status of an answer whose body is over the limit, no body read', async () => {
      const response = await guarded()(`http://127.0.0.1:${port}/declared-huge`, {
        maxResponseBytes: 1024,
        discardBody: true,
      });
      expect(response.status).toBe(200);
      expect(response.body).toBeNull();
    });

    it('a declared length over the limit is refused without reading', async () => {
      const error = await refusal(
        guarded()(`http://127.0.0.1:${port}/declared-huge`, { maxResponseBytes: 1024 }),
      );
      expect((error as OutboundLimitError).reason).toBe('response_too_large');
    });

    it('a server that never answers, or stalls mid-body, is cut off at timeoutMs', async () => {
      const silent = await refusal(guarded()(`http://127.0.0.1:${port}/hang`, { timeoutMs: 300 }));
      expect(silent).toBeInstanceOf(OutboundLimitError);
      expect((silent as OutboundLimitError).reason).toBe('timeout');
      const response = await guarded()(`http://127.0.0.1:${port}/trickle`, { timeoutMs: 300 });
      const stalled = await refusal(response.text());
      expect((stalled as OutboundLimitError).reason).toBe('timeout');
    });
  });
});
