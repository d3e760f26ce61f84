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
const RANDOM_CHARS = 16;

export const ID_PREFIXES = {
  auditEvent: 'evt',
  auditCheckpoint: 'ckp',
  serverKey: 'key',
  request: 'req',
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

function encodeRandom(bytes: Buffer): string {
  // 10 bytes = 80 bits = 16 base32 characters exactly.
  let bits = 0n;
  for (const byte of bytes) bits = (bits << 8n) | BigInt(byte);
  let out = '';
  for (let i = 0; i < RANDOM_CHARS; i++) {
    out = CROCKFORD[Number(bits & 31n)] + out;
    bits >>= 5n;
  }
  return out;
}

export function newId(prefix: IdPrefix, now: number = Date.now()): string {
  return `${prefix}_${encodeTime(now)}${encodeRandom(randomBytes(10))}`;
}

const ID_BODY = /^[0-9A-HJKMNP-TV-Z]{26}$/;

export function isId(value: string, prefix: IdPrefix): boolean {
  return value.startsWith(`${prefix}_`) && ID_BODY.test(value.slice(prefix.length + 1));
}
