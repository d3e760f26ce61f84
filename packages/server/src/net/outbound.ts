import type { LookupAddress, LookupOptions } from 'node:dns';
import { Resolver, lookup as systemLookup } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';
import { Agent, buildConnector, fetch as undiciFetch } from 'undici';

/**
 * The one SSRF guard (NET-3). Every server-side HTTP request (OIDC discovery/JWKS/token/userinfo,
 * token introspection, SAML metadata, webhook sinks, breached-password lookups) goes through a
 * fetch made here, so a URL an org admin (or an IdP's discovery document, or a redirect) names can
 * never make the server talk to its own loopback services, the cloud metadata endpoint or the
 * private network behind it.
 *
 * How: undici's Agent gets a connector that (1) refuses IP-literal hosts outside the policy (Node
 * skips `lookup` for those) and (2) passes a `lookup` to net/tls.connect that resolves the name
 * once, classifies every answer with ipaddr.js and hands back only the addresses it checked, so
 * the socket connects to exactly what was checked (no DNS rebinding between check and connect).
 * Redirects are followed here by hand, each hop a new request through the same connector.
 */

/** A fetch whose every connection (and every redirect hop) goes only where the outbound policy allows. */
export type GuardedFetch = (url: string | URL, init?: GuardedRequestInit) => Promise<Response>;

export interface GuardedRequestInit extends RequestInit {
  /** Reading the body past this many bytes fails with `OutboundLimitError('response_too_large')`. */
  maxResponseBytes?: number;
  /** The whole exchange (connect, every redirect hop, reading the body) must finish in this time. */
  timeoutMs?: number;
  /**
   * The caller judges the answer by its status and headers only: the body is not read (the returned
   * Response has none), so a receiver's oversized answer cannot turn an accepted delivery into a
   * failure (and the same batch into an endless resend).
   */
  discardBody?: boolean;
}

export interface OutboundPolicy {
  /**
   * BULWARK_OUTBOUND_ALLOWLIST: when non-empty, only these destinations may be reached at all.
   * Entries: a host name (`idp.example.com`), a domain and its subdomains (`.example.com` or
   * `*.example.com`), an IP address or a CIDR (`203.0.113.0/24`).
   */
  allowlist: readonly string[];
  /**
   * BULWARK_OUTBOUND_ALLOW_PRIVATE: destinations that may be non-public (an on-prem IdP, a
   * webhook receiver on the LAN): host names (matched as in `allowlist`), IPs or CIDRs. A host
   * entry trusts the private (RFC 1918), unique-local (fc00::/7) and CGNAT (100.64/10) addresses
   * that name resolves to, never loopback or link-local (the metadata endpoint): those only through
   * an IP or CIDR entry. A CIDR entry trusts those addresses for any name.
   * It only lifts the private-address block: under an allow-list the destination must be listed
   * there too (the allow-list decides what may be reached at all).
   */
  allowPrivate: readonly string[];
  /** BULWARK_DNS_SERVERS: resolvers to ask (host or host:port); empty: the system's resolver. */
  dnsServers: readonly string[];
  /** Default whole-exchange time limit, per request (overridable per call). */
  timeoutMs?: number;
  /** Default response size limit (overridable per call). */
  maxResponseBytes?: number;
  /** Redirect hops followed (each re-checked); more is an error. */
  maxRedirects?: number;
}

export type OutboundBlockReason =
  | 'scheme_not_allowed'
  | 'address_not_public'
  | 'not_in_allowlist'
  | 'redirect_not_allowed'
  | 'too_many_redirects'
  | 'redirect_downgrade';

export type OutboundFailureReason = 'response_too_large' | 'timeout' | 'dns_failed';

/** Base of the guard's errors: a stable `reason`; messages never carry a resolved address. */
export class OutboundError extends Error {
  constructor(
    readonly reason: OutboundBlockReason | OutboundFailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'OutboundError';
  }
}

/** The policy refused a destination (before any connection to it was made). */
export class OutboundBlockedError extends OutboundError {
  constructor(
    override readonly reason: OutboundBlockReason,
    /** The host as the caller named it (never the resolved address: that would map the network). */
    readonly host: string,
  ) {
    super(reason, `Outbound request to "${host}" refused by the outbound policy (${reason}).`);
    this.name = 'OutboundBlockedError';
  }
}

/** A size or time limit cut the exchange off, or the name did not resolve. */
export class OutboundLimitError extends OutboundError {
  constructor(reason: OutboundFailureReason, message: string) {
    super(reason, message);
    this.name = 'OutboundLimitError';
  }
}

const DEFAULT_TIMEOUT_MS = 10_000;
// Discovery documents, JWKS, SAML metadata and range answers are kilobytes; 2 MiB leaves room for
// large federation metadata without letting a hostile endpoint fill memory.
const DEFAULT_MAX_RESPONSE_BYTES = 2 * 1024 * 1024;
const DEFAULT_MAX_REDIRECTS = 3;

type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Cidr = [Address, number];

interface CompiledList {
  names: Set<string>;
  suffixes: string[];
  cidrs: Cidr[];
}

function normalizeHost(host: string): string {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return bare.toLowerCase().replace(/\.$/, '');
}

/** IPv4-mapped (::ffff:a.b.c.d) addresses are judged as the IPv4 address they reach. */
function canonical(address: Address): Address {
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress())
    return (address as ipaddr.IPv6).toIPv4Address();
  return address;
}

function compileList(entries: readonly string[], setting: string): CompiledList {
  const list: CompiledList = { names: new Set(), suffixes: [], cidrs: [] };
  for (const raw of entries) {
    const entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry.includes('/')) {
      try {
        const [address, bits] = ipaddr.parseCIDR(entry);
        list.cidrs.push([canonicalCidrBase(address, bits), canonicalBits(address, bits)]);
      } catch {
        throw new Error(`${setting}: "${raw}" is not a valid CIDR`);
      }
    } else if (ipaddr.isValid(normalizeHost(entry))) {
      const address = canonical(ipaddr.parse(normalizeHost(entry)));
      list.cidrs.push([address, address.kind() === 'ipv4' ? 32 : 128]);
    } else if (entry.startsWith('*.') || entry.startsWith('.')) {
      list.suffixes.push(`.${entry.replace(/^\*?\./, '')}`);
    } else {
      list.names.add(normalizeHost(entry));
    }
  }
  return list;
}

// A CIDR written in IPv4-mapped form (::ffff:10.0.0.0/104) is kept as the IPv4 CIDR it means.
function canonicalCidrBase(address: Address, bits: number): Address {
  return bits >= 96 ? canonical(address) : address;
}
function canonicalBits(address: Address, bits: number): number {
  return address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96
    ? bits - 96
    : bits;
}

function nameMatches(list: CompiledList, host: string): boolean {
  if (list.names.has(host)) return true;
  return list.suffixes.some((suffix) => host.endsWith(suffix) || host === suffix.slice(1));
}

function addressMatches(list: CompiledList, address: Address): boolean {
  return list.cidrs.some(([base, bits]) => base.kind() === address.kind() && address.match(base, bits));
}

// ipaddr.js names every special-purpose block (loopback, private, linkLocal — which holds the
// 169.254.169.254 metadata endpoint —, carrierGradeNat, uniqueLocal, rfc6052/NAT64, 6to4, teredo,
// reserved, …); only what it calls `unicast` is the public internet.
function isPublic(address: Address): boolean {
  if (address.range() !== 'unicast') return false;
  // IPv4-compatible ::a.b.c.d (deprecated) still reaches the embedded IPv4 on some stacks.
  if (address.kind() === 'ipv6' && address.match(ipaddr.parse('::'), 96)) return false;
  return true;
}

/**
 * What a host-name entry of BULWARK_OUTBOUND_ALLOW_PRIVATE may reach: the LAN, never this host
 * (loopback) or the link (169.254/16 with the cloud metadata endpoint, fe80::/10). A name is only as
 * trustworthy as its DNS answers; an address entry names exactly what it trusts.
 */
const NAME_LIFTABLE = new Set(['private', 'uniqueLocal', 'carrierGradeNat']);

/** Never reachable, whatever the allow entries say: they mean "this host" or "everyone". */
function isNeverAllowed(address: Address): boolean {
  const range = address.range();
  return range === 'unspecified' || range === 'broadcast' || range === 'multicast';
}

export interface OutboundVerdict {
  allowed: boolean;
  reason?: OutboundBlockReason;
}

/** The decision for one (host as named, address it resolved to) pair; usable by non-HTTP clients too. */
export function createOutboundDecider(policy: Pick<OutboundPolicy, 'allowlist' | 'allowPrivate'>) {
  const allowlist = compileList(policy.allowlist, 'BULWARK_OUTBOUND_ALLOWLIST');
  const allowPrivate = compileList(policy.allowPrivate, 'BULWARK_OUTBOUND_ALLOW_PRIVATE');
  const restricted = policy.allowlist.some((entry) => entry.trim() !== '');

  /** Checks that need only the name (before any DNS question is asked). */
  function checkName(rawHost: string): OutboundVerdict {
    const host = normalizeHost(rawHost);
    if (!restricted || ipaddr.isValid(host) || nameMatches(allowlist, host)) return { allowed: true };
    // A name outside the listed names may still resolve into a listed CIDR: decided on the address.
    if (allowlist.cidrs.length > 0) return { allowed: true };
    return { allowed: false, reason: 'not_in_allowlist' };
  }

  function checkAddress(rawHost: string, rawAddress: string): OutboundVerdict {
    const host = normalizeHost(rawHost);
    const address = canonical(ipaddr.parse(normalizeHost(rawAddress)));
    if (isNeverAllowed(address)) return { allowed: false, reason: 'address_not_public' };
    if (restricted && !nameMatches(allowlist, host) && !addressMatches(allowlist, address))
      return { allowed: false, reason: 'not_in_allowlist' };
    if (
      !isPublic(address) &&
      !addressMatches(allowPrivate, address) &&
      !(NAME_LIFTABLE.has(address.range()) && nameMatches(allowPrivate, host))
    )
      return { allowed: false, reason: 'address_not_public' };
    return { allowed: true };
  }

  return { checkName, checkAddress };
}

type Decider = ReturnType<typeof createOutboundDecider>;

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

function createResolve(dnsServers: readonly string[], timeoutMs: number) {
  if (dnsServers.length === 0) {
    return async (host: string): Promise<LookupAddress[]> =>
      systemLookup(host, { all: true, verbatim: true });
  }
  const resolver = new Resolver({ timeout: Math.min(timeoutMs, 5_000), tries: 2 });
  resolver.setServers([...dnsServers]);
  return async (host: string): Promise<LookupAddress[]> => {
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    const addresses: LookupAddress[] = [
      ...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 })) : []),
      ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 })) : []),
    ];
    if (addresses.length === 0)
      throw new OutboundLimitError('dns_failed', `The name "${host}" did not resolve.`);
    return addresses;
  };
}

/**
 * For clients that connect themselves (syslog over TLS): the host resolved once, through the guard's
 * resolver (BULWARK_DNS_SERVERS when set, as for every HTTP request), every answer checked against
 * the policy, and the one address to connect to returned (no second lookup to rebind).
 */
export function createCheckedResolver(
  policy: Pick<OutboundPolicy, 'allowlist' | 'allowPrivate' | 'dnsServers' | 'timeoutMs'>,
): (host: string) => Promise<string> {
  const decider = createOutboundDecider(policy);
  const resolve = createResolve(policy.dnsServers, policy.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  return async (rawHost) => {
    const host = normalizeHost(rawHost);
    if (ipaddr.isValid(host)) {
      const verdict = decider.checkAddress(host, host);
      if (!verdict.allowed) throw new OutboundBlockedError(verdict.reason ?? 'address_not_public', host);
      return host;
    }
    const named = decider.checkName(host);
    if (!named.allowed) throw new OutboundBlockedError(named.reason ?? 'not_in_allowlist', host);
    let answers: LookupAddress[];
    try {
      answers = await resolve(host);
    } catch (error) {
      if (error instanceof OutboundError) throw error;
      throw new OutboundLimitError('dns_failed', `The name "${host}" did not resolve.`);
    }
    for (const { address } of answers) {
      const verdict = decider.checkAddress(host, address);
      if (!verdict.allowed) throw new OutboundBlockedError(verdict.reason ?? 'address_not_public', host);
    }
    if (!answers[0]) throw new OutboundLimitError('dns_failed', `The name "${host}" did not resolve.`);
    return answers[0].address;
  };
}

/**
 * The `lookup` handed to net/tls.connect: it resolves once, refuses the connection if any answer
 * is outside the policy (a name that mixes public and private answers is an attack, not a
 * configuration), and returns only the addresses it checked, so the connection goes to one of them.
 */
function createGuardedLookup(decider: Decider, resolve: (host: string) => Promise<LookupAddress[]>) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    const host = normalizeHost(hostname);
    resolve(host).then(
      (answers) => {
        const wanted = options.family === 4 || options.family === 6 ? options.family : 0;
        const usable = answers.filter((answer) => wanted === 0 || answer.family === wanted);
        for (const answer of answers) {
          const verdict = decider.checkAddress(host, answer.address);
          if (!verdict.allowed) {
            callback(new OutboundBlockedError(verdict.reason ?? 'address_not_public', host), '');
            return;
          }
        }
        if (usable.length === 0) {
          callback(new OutboundLimitError('dns_failed', `The name "${host}" did not resolve.`), '');
          return;
        }
        const first = usable[0] as LookupAddress;
        if (options.all) callback(null, usable);
        else callback(null, first.address, first.family);
      },
      (error: unknown) => {
        callback(
          error instanceof OutboundError
            ? error
            : new OutboundLimitError('dns_failed', `The name "${host}" did not resolve.`),
          '',
        );
      },
    );
  };
}

function createGuardedAgent(decider: Decider, resolve: (host: string) => Promise<LookupAddress[]>): Agent {
  const base = buildConnector({ lookup: createGuardedLookup(decider, resolve) as never });
  const connect: buildConnector.connector = (options, callback) => {
    // Node's net.connect does not call `lookup` for an IP literal, so literals are judged here.
    const host = normalizeHost(options.hostname);
    if (ipaddr.isValid(host)) {
      const verdict = decider.checkAddress(host, host);
      if (!verdict.allowed) {
        callback(new OutboundBlockedError(verdict.reason ?? 'address_not_public', host), null);
        return;
      }
    }
    base(options, callback);
  };
  return new Agent({ connect });
}

/** Digs an OutboundError (or the timeout) out of undici's `TypeError: fetch failed` cause chain. */
function unwrap(error: unknown, timedOut: boolean, timeoutMs: number): unknown {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    if (current instanceof OutboundError) return current;
    current = (current as Error & { cause?: unknown }).cause;
  }
  if (timedOut) return new OutboundLimitError('timeout', `The request took longer than ${timeoutMs} ms.`);
  return error;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

function limitBody(
  body: ReadableStream<Uint8Array>,
  maxBytes: number,
  mapError: (error: unknown) => unknown,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let seen = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        seen += value.byteLength;
        if (seen > maxBytes) {
          await reader.cancel().catch(() => undefined);
          controller.error(
            new OutboundLimitError('response_too_large', `The response is larger than ${maxBytes} bytes.`),
          );
          return;
        }
        controller.enqueue(value);
      } catch (error) {
        controller.error(mapError(error));
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

export function createGuardedFetch(policy: OutboundPolicy): GuardedFetch {
  const decider = createOutboundDecider(policy);
  const defaultTimeout = policy.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const defaultMaxBytes = policy.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  const maxRedirects = policy.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  const resolve = createResolve(policy.dnsServers, defaultTimeout);
  const agent = createGuardedAgent(decider, resolve);

  function precheck(url: URL): void {
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new OutboundBlockedError('scheme_not_allowed', url.hostname);
    const host = normalizeHost(url.hostname);
    const verdict = ipaddr.isValid(host) ? decider.checkAddress(host, host) : decider.checkName(host);
    if (!verdict.allowed) throw new OutboundBlockedError(verdict.reason ?? 'address_not_public', host);
  }

  return async (input, init = {}) => {
    const { maxResponseBytes, timeoutMs, discardBody, signal: callerSignal, redirect, ...rest } = init;
    const limitMs = timeoutMs ?? defaultTimeout;
    const maxBytes = maxResponseBytes ?? defaultMaxBytes;
    const timeout = AbortSignal.timeout(limitMs);
    const signal = callerSignal ? AbortSignal.any([callerSignal, timeout]) : timeout;
    const mapError = (error: unknown) => unwrap(error, timeout.aborted, limitMs);

    let url = new URL(input);
    let method = (rest.method ?? 'GET').toUpperCase();
    let body = rest.body;
    let headers = new Headers(rest.headers);
    let response: Awaited<ReturnType<typeof undiciFetch>>;
    for (let hop = 0; ; hop++) {
      precheck(url);
      try {
        response = await undiciFetch(url, {
          ...(rest as object),
          method,
          body: body as never,
          headers: headers as never,
          signal,
          redirect: 'manual',
          dispatcher: agent,
        });
      } catch (error) {
        throw mapError(error);
      }
      if (!REDIRECTS.has(response.status) || redirect === 'manual') break;
      const location = response.headers.get('location');
      if (location === null) break;
      await response.body?.cancel().catch(() => undefined);
      if (redirect === 'error')
        throw new OutboundBlockedError('redirect_not_allowed', normalizeHost(url.hostname));
      if (hop >= maxRedirects)
        throw new OutboundBlockedError('too_many_redirects', normalizeHost(url.hostname));
      const next = new URL(location, url);
      if (url.protocol === 'https:' && next.protocol !== 'https:')
        throw new OutboundBlockedError('redirect_downgrade', normalizeHost(next.hostname));
      if (
        response.status === 303 ||
        ((response.status === 301 || response.status === 302) && method === 'POST')
      ) {
        if (method !== 'HEAD') method = 'GET';
        body = undefined;
        headers.delete('content-type');
        headers.delete('content-length');
      } else if (body instanceof ReadableStream) {
        // A streamed body was consumed by the first hop and cannot be sent again.
        throw new OutboundBlockedError('redirect_not_allowed', normalizeHost(next.hostname));
      }
      if (next.origin !== url.origin) {
        // What the caller meant for one origin (its body, API keys in any header, not only the
        // well-known credential headers) never goes to another: a body is refused, headers dropped.
        if (body !== undefined && body !== null)
          throw new OutboundBlockedError('redirect_not_allowed', normalizeHost(next.hostname));
        headers = new Headers();
      }
      url = next;
    }

    if (discardBody) {
      await response.body?.cancel().catch(() => undefined);
      const bare = new Response(null, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers as unknown as HeadersInit,
      });
      Object.defineProperty(bare, 'url', { value: url.href });
      return bare;
    }
    const declared = Number(response.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw new OutboundLimitError('response_too_large', `The response is larger than ${maxBytes} bytes.`);
    }
    // Returned as a global Response (not undici's class) so every consumer's instanceof works.
    const limited =
      response.body === null || NULL_BODY.has(response.status)
        ? null
        : limitBody(response.body as ReadableStream<Uint8Array>, maxBytes, mapError);
    const result = new Response(limited, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers as unknown as HeadersInit,
    });
    Object.defineProperty(result, 'url', { value: url.href });
    return result;
  };
}

/** The policy the server runs with, from its settings (BULWARK_OUTBOUND_*, BULWARK_DNS_SERVERS). */
export function outboundPolicyOf(config: {
  outbound: { allowlist: string[]; allowPrivate: string[] };
  sso: { dnsServers: string[] };
}): OutboundPolicy {
  return {
    allowlist: config.outbound.allowlist,
    allowPrivate: config.outbound.allowPrivate,
    dnsServers: config.sso.dnsServers,
  };
}
