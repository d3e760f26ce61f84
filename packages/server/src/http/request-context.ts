import { tokenHash } from '@bulwark/protocol';
import type { FastifyRequest } from 'fastify';
import type { AuditRequestContext } from '../audit/audit.types.js';

const MAX_USER_AGENT = 512;

/** Where a request came from, for audit events: the client address (through trusted proxies only), its user agent and request id. */
export function auditContextOf(request: FastifyRequest): AuditRequestContext {
  const userAgent = request.headers['user-agent'];
  return {
    ip: request.ip,
    userAgent: typeof userAgent === 'string' ? userAgent.slice(0, MAX_USER_AGENT) : null,
    requestId: request.id,
  };
}

/** The token of an `Authorization: Bearer …` header; undefined when there is no such header. */
export function bearerTokenOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer +(\S+) *$/i.exec(header);
  // A malformed header is a failed authentication, never a fall-back to the cookie.
  return match?.[1] ?? '';
}

const bearerHashes = new WeakMap<FastifyRequest, string>();

/** SHA-256 of the bearer token, once per request: the rate limiter and the key lookup both need it. */
export function bearerTokenHashOf(request: FastifyRequest, token: string): string {
  let hash = bearerHashes.get(request);
  if (hash === undefined) {
    hash = tokenHash(token);
    bearerHashes.set(request, hash);
  }
  return hash;
}
