import { canonicalJson, type JsonValue } from '@bulwark/protocol';
import { keyNamesASecret, redactCredentials } from '../secrets/secret-detection.js';

/**
 * AUD-2: audit details never hold a secret. The audit log is exported, streamed to SIEMs and read by
 * auditors, so a secret written here would leak to all of them.
 *
 * The guard redacts; it never refuses. Much of what an event carries is text an attacker chose (a
 * URL segment, a header, a field of a request body), and a guard that threw on a token-shaped value
 * would let anyone fail a request, or suppress the record of a denial, by putting one there. What was
 * redacted is reported (by path and kind, never value) so the caller can log it: a module of ours
 * passing a secret is still a bug to find.
 */

export const MAX_DETAILS_BYTES = 16 * 1024;
/** Longest string kept in details that are over {@link MAX_DETAILS_BYTES}; the rest is cut. */
const SHORTENED_STRING = 256;
const SHORTENED_ARRAY = 32;

export interface Redaction {
  path: string;
  reason: string;
}

function clean(value: JsonValue, path: string, redactions: Redaction[]): JsonValue {
  if (typeof value === 'string') {
    const { text, shapes } = redactCredentials(value);
    for (const shape of shapes) redactions.push({ path, reason: `value looked like ${shape}` });
    return text;
  }
  if (Array.isArray(value)) return value.map((item, index) => clean(item, `${path}[${index}]`, redactions));
  if (value !== null && typeof value === 'object') {
    const out: { [key: string]: JsonValue } = {};
    let hiddenKeys = 0;
    for (const [rawKey, child] of Object.entries(value)) {
      // A key is text too (a label name, a parameter name): a credential there is cut like any other.
      const key = redactCredentials(rawKey).text === rawKey ? rawKey : `[redacted key ${++hiddenKeys}]`;
      if (key !== rawKey) redactions.push({ path: `${path}.${key}`, reason: 'key looked like a credential' });
      const childPath = `${path}.${key}`;
      if (keyNamesASecret(key) && child !== null && typeof child !== 'boolean') {
        redactions.push({ path: childPath, reason: 'key names a secret' });
        out[key] = '[redacted]';
        continue;
      }
      out[key] = clean(child, childPath, redactions);
    }
    return out;
  }
  // What JSON cannot hold (NaN, Infinity, undefined in an array) is recorded as null, never thrown on.
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'boolean') return value;
  return null;
}

function shorten(value: JsonValue): JsonValue {
  if (typeof value === 'string')
    return value.length > SHORTENED_STRING ? `${value.slice(0, SHORTENED_STRING)}…` : value;
  if (Array.isArray(value)) {
    const kept = value.slice(0, SHORTENED_ARRAY).map(shorten);
    return value.length > SHORTENED_ARRAY ? [...kept, `… ${value.length - SHORTENED_ARRAY} more`] : kept;
  }
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([key, child]) => [key, shorten(child)]));
  return value;
}

/**
 * The details as canonical JSON with every secret redacted, and what was redacted. Details too large
 * to keep are shortened (long strings and arrays cut), and when even that is too large, replaced by a
 * note of their size: the event is always recorded.
 */
export function guardDetails(details: { [key: string]: JsonValue } | undefined): {
  json: string;
  redactions: Redaction[];
} {
  const redactions: Redaction[] = [];
  const value = clean(details ?? {}, 'details', redactions);
  let json = canonicalJson(value);
  const bytes = Buffer.byteLength(json);
  if (bytes > MAX_DETAILS_BYTES) {
    json = canonicalJson({ truncated: true, originalBytes: bytes, details: shorten(value) });
    if (Buffer.byteLength(json) > MAX_DETAILS_BYTES)
      json = canonicalJson({ truncated: true, originalBytes: bytes });
    redactions.push({ path: 'details', reason: `larger than ${MAX_DETAILS_BYTES} bytes; shortened` });
  }
  return { json, redactions };
}

/** Free text for an event's columns (a user agent, a target id), with any credential in it redacted. */
export function guardText(value: string | null, redactions: Redaction[], path: string): string | null {
  if (value === null) return null;
  const { text, shapes } = redactCredentials(value);
  for (const shape of shapes) redactions.push({ path, reason: `value looked like ${shape}` });
  return text;
}
