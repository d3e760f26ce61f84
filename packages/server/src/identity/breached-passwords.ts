import { createHash } from 'node:crypto';
import { ServiceUnavailableError } from '../errors.js';
import type { GuardedFetch } from '../net/outbound.js';

/**
 * The optional breached-password check of AUTH-1, on the k-anonymity range protocol of Have I Been
 * Pwned's Pwned Passwords (`GET <base>/<first 5 hex of SHA-1>`): only five hex characters of the
 * password's SHA-1 leave the server (one of 16^5 buckets, each holding hundreds of real hashes), the
 * suffixes that come back are compared here, and `Add-Padding: true` makes every answer about the
 * same size so an observer of the TLS stream cannot tell the bucket by its length. The request goes
 * through the SSRF guard like every server-side fetch (NET-3).
 *
 * When the service cannot be reached the password change is refused with 503
 * `breached_check_unavailable` rather than accepted unchecked: an operator who turned the check on
 * asked for it to hold, and an attacker who can block the lookup must not be able to switch it off.
 * Neither the password nor its hash is logged or put in an error.
 */

// A padded range answer is about 1,000 lines of 40 bytes; this leaves ample room and no more.
const MAX_RANGE_BYTES = 512 * 1024;
const RANGE_TIMEOUT_MS = 5_000;

export interface BreachedPasswords {
  /** Whether the password appears in the breach corpus; throws 503 when the service cannot answer. */
  isBreached(password: string): Promise<boolean>;
}

export class BreachedCheckUnavailableError extends ServiceUnavailableError {
  constructor() {
    super(
      'breached_check_unavailable',
      'The breached-password check could not be completed, so the password was not changed. Try again shortly.',
    );
  }
}

export function createBreachedPasswords(deps: { fetch: GuardedFetch; baseUrl: string }): BreachedPasswords {
  const base = deps.baseUrl.endsWith('/') ? deps.baseUrl : `${deps.baseUrl}/`;
  return {
    async isBreached(password) {
      const digest = createHash('sha1').update(password, 'utf8').digest('hex').toUpperCase();
      const prefix = digest.slice(0, 5);
      const suffix = digest.slice(5);
      let body: string;
      try {
        const response = await deps.fetch(new URL(prefix, base), {
          headers: { 'add-padding': 'true', accept: 'text/plain' },
          maxResponseBytes: MAX_RANGE_BYTES,
          timeoutMs: RANGE_TIMEOUT_MS,
          redirect: 'error',
        });
        if (response.status !== 200) {
          await response.body?.cancel();
          throw new BreachedCheckUnavailableError();
        }
        body = await response.text();
      } catch {
        // The cause (refused by the guard, timeout, 5xx) is deliberately not kept: it would carry the
        // request URL, and with it the hash prefix, into whatever logs the error.
        throw new BreachedCheckUnavailableError();
      }
      for (const line of body.split('\n')) {
        const [candidate, count] = line.trim().split(':');
        // Padding lines carry a count of 0: they are not breached passwords.
        if (candidate?.toUpperCase() === suffix && Number(count) > 0) return true;
      }
      return false;
    },
  };
}
