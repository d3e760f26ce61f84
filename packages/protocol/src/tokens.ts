import { hash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Secret tokens (API keys, registration tokens, session ids, invitations, live tickets): a prefix that says what a
 * token is, 256 random bits, and a checksum, e.g. `bwk_<43 chars><6 chars>`.
 *
 * The prefix lets secret scanners (GitHub's, gitleaks) recognise a leaked Bulwark token and lets the
 * audit guard refuse one; the checksum lets the server reject a mistyped or made-up token before any
 * database lookup, and lets scanners avoid false positives. Only a SHA-256 of the whole token is
 * stored: with 256 random bits a fast hash is enough (there is nothing to brute-force).
 */

export const TOKEN_PREFIXES = {
  apiKey: 'bwk',
  registration: 'bwr',
  session: 'bws',
  invitation: 'bwi',
  /** The console's ticket to open one live stream: single use, for seconds (NET-5). */
  liveTicket: 'bwt',
  /** An organization's identity provider provisioning its people (SCIM, SSO-5). */
  scim: 'bwp',
  /** The key an audit webhook's deliveries are signed with (HMAC-SHA256, AUD-6); shown once. */
  auditWebhook: 'bwh',
} as const;

export type TokenPrefix = (typeof TOKEN_PREFIXES)[keyof typeof TOKEN_PREFIXES];

const SECRET_BYTES = 32;
const BODY_CHARS = 43; // base64url of 32 bytes, unpadded
const CHECKSUM_CHARS = 6;

function checksum(prefix: string, body: string): string {
  // Covers the prefix too, so a body moved under another prefix does not check out.
  return hash('sha256', `${prefix}_${body}`, 'base64url').slice(0, CHECKSUM_CHARS);
}

export function generateToken(prefix: TokenPrefix): string {
  const body = randomBytes(SECRET_BYTES).toString('base64url');
  return `${prefix}_${body}${checksum(prefix, body)}`;
}

const SHAPE = new RegExp(`^([a-z]{3})_([A-Za-z0-9_-]{${BODY_CHARS}})([A-Za-z0-9_-]{${CHECKSUM_CHARS}})$`);

/** Whether `value` is a well-formed token of this kind with a correct checksum. Says nothing about whether it exists. */
export function isWellFormedToken(value: string, prefix: TokenPrefix): boolean {
  const match = SHAPE.exec(value);
  if (!match || match[1] !== prefix) return false;
  const expected = Buffer.from(checksum(prefix, match[2]!));
  const given = Buffer.from(match[3]!);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/** What is stored instead of the token: its SHA-256, hex. */
export function tokenHash(token: string): string {
  // One-shot `hash` (Node >= 20.12): these run on every authenticated request, and building a Hash
  // object costs more than hashing 60 bytes.
  return hash('sha256', token, 'hex');
}
