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
