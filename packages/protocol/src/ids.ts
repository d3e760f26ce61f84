import { randomBytes } from 'node:crypto';

/**
 * Prefixed, time-sortable identifiers (`agt_01J…`, `evt_01J…`).
 *
 * The body is a ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32, so ids sort
 * by creation time in any database and in logs, and the prefix tells a reader what kind of thing an
 * id names. 80 random bits make collisions within one millisecond negligible.
 */

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const TIME_CHARS = 10;

export const ID_PREFIXES = {
  auditEvent: 'evt',
  auditCheckpoint: 'ckp',
  serverKey: 'key',
  dataKey: 'dek',
  secret: 'sec',
  apiKey: 'apk',
  mfaFactor: 'mfa',
  request: 'req',
  org: 'org',
  user: 'usr',
  session: 'ses',
  role: 'rol',
  roleBinding: 'rbd',
  team: 'tea',
  invitation: 'inv',
  agent: 'agt',
  registrationToken: 'rgt',
  service: 'svc',
  command: 'cmd',
  bulkRun: 'blk',
  ssoConnection: 'sso',
  ssoIdentity: 'sid',
  notification: 'ntf',
  emailMessage: 'eml',
  piiKey: 'pik',
  auditSink: 'snk',
} as const;

export type IdPrefix = (typeof ID_PREFIXES)[keyof typeof ID_PREFIXES];

function encodeTime(ms: number): string {
  let out = '';
  let rest = ms;
  for (let i = 0; i < TIME_CHARS; i++) {
    out = CROCKFORD[rest % 32] + out;
    rest = Math.floor(rest / 32);
  }
  return out;
}

// One CSPRNG call per 1,024 ids instead of one per id (a call costs more than the id itself).
const RANDOM_BYTES_PER_ID = 10;
const POOL_BYTES = RANDOM_BYTES_PER_ID * 1024;
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** 80 fresh random bits (10 bytes of the pool, never reused) as 16 base32 characters. */
function randomPart(): string {
  if (poolOffset + RANDOM_BYTES_PER_ID > pool.length) {
    pool = randomBytes(POOL_BYTES);
    poolOffset = 0;
  }
  // Take 5 bits at a time from a small accumulator; 10 bytes = 80 bits = 16 characters exactly.
  let out = '';
  let accumulator = 0;
  let bits = 0;
  for (let i = poolOffset; i < poolOffset + RANDOM_BYTES_PER_ID; i++) {
    accumulator = ((accumulator << 8) | pool[i]!) & 0xfff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += CROCKFORD[(accumulator >> bits) & 31];
    }
  }
  poolOffset += RANDOM_BYTES_PER_ID;
  return out;
}

// Ids made in the same millisecond share their time part: encode it once (every request makes one).
let encodedAt = Number.NaN;
let encodedTime = '';

export function newId(prefix: IdPrefix, now: number = Date.now()): string {
  if (now !== encodedAt) {
    encodedAt = now;
    encodedTime = encodeTime(now);
  }
  return `${prefix}_${encodedTime}${randomPart()}`;
}

/** The body of an id after its prefix: 10 time and 16 random Crockford base32 characters. */
export const ID_BODY_PATTERN = '[0-9A-HJKMNP-TV-Z]{26}';
const ID_BODY = new RegExp(`^${ID_BODY_PATTERN}$`);

export function isId(value: string, prefix: IdPrefix): boolean {
  return value.startsWith(`${prefix}_`) && ID_BODY.test(value.slice(prefix.length + 1));
}
