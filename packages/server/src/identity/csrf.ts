import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';

/**
 * CSRF (AUTH-4). The synchronizer token is derived from the session id with a server key, so it needs
 * no storage and changes with every session; the console keeps it in memory and sends it as
 * X-CSRF-Token on every state-changing request. On top, a browser's Origin and Sec-Fetch-Site headers
 * must say the request comes from this origin.
 */

export const CSRF_HEADER = 'x-csrf-token';

/**
 * Why a browser says this request comes from another site (its Sec-Fetch-Site or Origin header), or
 * undefined. A request without those headers (a script, the CLI) is not refused here: it carries no
 * ambient cookie a page could have made a browser send.
 */
export function crossSiteProblem(request: FastifyRequest): string | undefined {
  const fetchSite = request.headers['sec-fetch-site'];
  if (typeof fetchSite === 'string' && fetchSite !== 'same-origin') return `Sec-Fetch-Site is ${fetchSite}`;
  const origin = request.headers.origin;
  if (typeof origin === 'string') {
    let host: string;
    try {
      host = new URL(origin).host;
    } catch {
      return 'Origin is malformed';
    }
    if (host !== request.headers.host) return 'Origin is another site';
  }
  return undefined;
}

export function createCsrf(key: Buffer) {
  const tokenFor = (sessionId: string) => createHmac('sha256', key).update(sessionId).digest('base64url');

  return {
    tokenFor,

    /** Why this cookie-authenticated, state-changing request must be refused, or undefined if it may proceed. */
    problem(request: FastifyRequest, sessionId: string): string | undefined {
      const crossSite = crossSiteProblem(request);
      if (crossSite) return crossSite;
      const presented = request.headers[CSRF_HEADER];
      if (typeof presented !== 'string') return 'the CSRF token is missing';
      const expected = Buffer.from(tokenFor(sessionId));
      const given = Buffer.from(presented);
      if (expected.length !== given.length || !timingSafeEqual(expected, given))
        return 'the CSRF token does not match';
      return undefined;
    },
  };
}

export type Csrf = ReturnType<typeof createCsrf>;
