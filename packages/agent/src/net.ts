import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import { z } from 'zod';

/**
 * Where the agent may talk to, and how it pins who answers. Plain http:// and ws:// are allowed only
 * to loopback (a server on the same host, or a test): anywhere else the path between agent and
 * server is someone else's network.
 */

export class InsecureServerError extends Error {}

/** 127.0.0.0/8, ::1 and `localhost`, as the WHATWG URL parser spells them. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host === '::1') return true;
  return isIPv4(host) && host.startsWith('127.');
}

/**
 * The server's base URL, checked. Only http(s), no credentials, query or
 * fragment; http:// only to loopback.
 */
export function parseServerUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InsecureServerError(`"${raw}" is not a URL; expected e.g. https://bulwark.example.com`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InsecureServerError(`the server URL must start with https:// (got ${url.protocol}//)`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new InsecureServerError('the server URL must not carry credentials, a query or a fragment');
  }
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new InsecureServerError(
      `refusing plain http:// to ${url.hostname}: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 and localhost)`,
    );
  }
  return url;
}

/** A path prefix without its trailing slash (a URL's pathname is never empty: `/` at least). */
function basePath(url: URL): string {
  return url.pathname.replace(/\/+$/, '');
}

/** The normalized base URL to append API paths to: no trailing slash. */
export function serverBase(url: URL): string {
  return `${url.origin}${basePath(url)}`;
}

/** The WebSocket URL for a path on the server: http → ws, https → wss; ws:// only to loopback. */
export function websocketUrl(server: string, path: string): string {
  const url = parseServerUrl(server);
  const scheme = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${url.host}${basePath(url)}${path}`;
}

/** SHA-256 certificate fingerprint, hex with or without colons; kept as Node prints it (AA:BB:…). */
export const Fingerprint256 = z
  .string()
  .regex(/^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$/, 'must be a SHA-256 fingerprint (64 hex digits)')
  .transform((value) =>
    value
      .replace(/:/g, '')
      .toUpperCase()
      .replace(/(..)(?!$)/g, '$1:'),
  );

/** Optional pinning beyond the public CA system (AGT-6). */
export interface TlsPin {
  /** PEM bundle of the CA(s) trusted for the server's certificate, instead of the system's. */
  caFile?: string;
  /** The server certificate's SHA-256 fingerprint; any other certificate is refused. */
  fingerprint256?: string;
}

export interface TlsClientOptions {
  ca?: Buffer;
  rejectUnauthorized: boolean;
}

/**
 * With a fingerprint and no CA, the certificate is trusted for being exactly that certificate (a
 * self-signed server), so chain validation is off and the caller MUST compare the fingerprint before
 * sending anything that matters. With a CA, the chain is checked against that CA only.
 */
export function tlsClientOptions(pin: TlsPin | undefined): TlsClientOptions {
  const options: TlsClientOptions = { rejectUnauthorized: true };
  if (pin?.caFile) options.ca = readFileSync(pin.caFile);
  else if (pin?.fingerprint256) options.rejectUnauthorized = false;
  return options;
}

export function fingerprintMatches(cert: PeerCertificate | undefined, expected: string): boolean {
  const actual = cert?.fingerprint256;
  if (!actual) return false;
  return actual.replace(/:/g, '').toUpperCase() === expected.replace(/:/g, '').toUpperCase();
}

/** Server-provided text shown to an operator: no terminal escapes, bounded length. */
export function printable(text: string, max = 500): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping control characters is the point
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}
