import { writeFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import path from 'node:path';
import { generateToken, ID_PREFIXES, rawPublicKey, TOKEN_PREFIXES } from '@bulwark/protocol';
import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import fc from 'fast-check';
import { generate as totpCode } from 'otplib';
import { z } from 'zod';
import { BUILT_IN_ROLE_NAMES, PERMISSION_NAMES } from '../access/permissions.js';
import { registeredRoutesOf } from '../http/app.js';
import type { RouteDefinition } from '../http/route.js';
import { SESSION_COOKIE } from '../identity/session-guard.js';
import { agentKeys, handshake, registerAgent, reportApp } from './agents.js';
import { MEMBER_PASSWORD, type OrgWorld, OWNER, startOrgWorld } from './org-world.js';
import { SessionClient } from './session-client.js';

/**
 * Schema-aware fuzzing of every registered route (QA-2): requests built from each route's own
 * request schemas, then bent — wrong types, huge and deeply nested values, hostile unicode,
 * token-shaped strings, ids of another organization, malformed JSON, wrong content types — and sent
 * over real HTTP to a real server as three callers: a signed-in owner (cookie + CSRF token), an API
 * key with every permission, and nobody. Whatever the input, the answer must be a 4xx with the one
 * error shape or a success: never a 5xx, never a dropped connection.
 *
 * Where the shapes come from: each registered route's own zod declarations, turned into JSON Schema
 * by `z.toJSONSchema` exactly as the OpenAPI document is (http/openapi.ts), and JSON Schema into
 * fast-check arbitraries here. JSON Schema rather than zod's internals because it is zod's public,
 * versioned output (patterns, lengths, enums, bounds, defaults, required keys — everything a
 * generator needs), and rather than fetching /api/openapi.json because the registered routes are
 * what the server really answers, HEAD twins included, each with its declaration at hand.
 *
 * A run is a fixed seed and a request count. Requests are generated in batches of `fc.sample` with
 * `seed + batch`, so every run makes the same choices; the ids and tokens those choices pick are real
 * ones (created at the start, or handed out by earlier answers), so they differ from run to run. A
 * failure prints (and writes to test-output/) the exact request as sent, headers and body, and what
 * the server logged about it, so it can be replayed on its own.
 */

// --- JSON Schema (the subset zod emits) --------------------------------------------------------------

export interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  propertyNames?: JsonSchema;
  items?: JsonSchema;
  prefixItems?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
  maxItems?: number;
  default?: unknown;
  format?: string;
  description?: string;
}

function toJsonSchema(schema: z.ZodType | undefined): JsonSchema | undefined {
  if (!schema) return undefined;
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  return rest as JsonSchema;
}

// --- What the generator draws from -----------------------------------------------------------------

/** Ids and tokens the fuzzer reaches for, by kind. Mutable: responses add what they hand out. */
export interface FuzzPools {
  ownSlug: string;
  otherSlug: string;
  /** Real ids of the caller's own organization (and of the owner: sessions, factors), by prefix. */
  own: Map<string, string[]>;
  /** Real ids of the other organization, by prefix. */
  other: Map<string, string[]>;
  /** Real tokens (registration, invitation, API keys, sessions) and well-formed unknown ones. */
  tokens: string[];
  emails: string[];
  /** Passwords worth trying: the owner's current one among them. */
  passwords: string[];
  /** Meaningful values by field name (`service`, `action`, `permission`, `role`…). */
  names: Record<string, string[]>;
}

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const BASE64URL = `${BASE62}-_`;
const ID_IN_PATTERN = /([a-z]{3})_\[0-9A-HJKMNP-TV-Z\]\{26\}/;
const ALL_ID_PREFIXES = Object.values(ID_PREFIXES);
/** Kept per prefix from responses, so a created team can then be renamed, a new command cancelled. */
const HARVEST_PER_PREFIX = 12;

const pick = (pool: () => readonly string[], fallback: string) =>
  fc.nat({ max: 1_000_000 }).map((i) => {
    const items = pool();
    return items.length > 0 ? items[i % items.length]! : fallback;
  });

const charsOf = (alphabet: string, minLength: number, maxLength: number) =>
  fc.string({ unit: fc.constantFrom(...alphabet), minLength, maxLength });

const idShaped = (prefix: string) => charsOf(CROCKFORD, 26, 26).map((body) => `${prefix}_${body}`);

/** Lone surrogates, NUL, bidi overrides, zero-width and combining marks, emoji, line separators. */
const UNICODE_SAMPLES = [
  '\u0000',
  '\uD800',
  '\uDFFF',
  '\uDC00\uD800',
  '\u202E',
  '\u200F',
  '\u2066',
  '\u200B',
  '\u200D',
  '\uFEFF',
  '\u2028',
  '\u2029',
  '\u0085',
  '\u00A0',
  '\uFFFF',
  '\uFFFE',
  'e\u0301\u0301\u0301',
  '👩‍👩‍👧‍👦',
  '🏳️‍🌈',
  '𝕏',
  'İı',
  'ß',
  'ﷺ',
  '\u001b[31m',
  '\r\n',
  '\t',
  '\b',
  'مرحبا',
  '中文',
];

/** Strings that have broken parsers, queries, templates and spreadsheets elsewhere. */
const HOSTILE_STRINGS = [
  '',
  ' ',
  '  padded  ',
  "' OR '1'='1",
  '"; DROP TABLE users; --',
  '%',
  '_',
  '%_%',
  '\\',
  '\\u0000',
  '../../../../etc/passwd',
  '..%2f..%2fetc%2fpasswd',
  '%00',
  '%E0%A4%A',
  '$' + '{jndi:ldap://127.0.0.1/a}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '=HYPERLINK("http://x","y")',
  '@SUM(1+1)',
  'null',
  'undefined',
  'true',
  'false',
  'NaN',
  'Infinity',
  '-Infinity',
  '1e400',
  '-0',
  '0x10',
  '00',
  '9007199254740993',
  '__proto__',
  'constructor',
  'prototype',
  'hasOwnProperty',
  'toString',
  'owner',
  'admin',
  'env=staging',
  'env=staging,!canary,tier!=db',
  'a in (b, c)',
  '!',
  ',,,',
  '=',
  'a==b',
  'a!=',
];

/** PEM blocks, JWTs, bearer strings and other providers' key shapes: secret-detection and audit-guard food. */
const SECRET_SHAPED = [
  '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----',
  '-----BEGIN RSA PRIVATE KEY-----',
  '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----',
  '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----',
  'eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJvd25lciJ9.',
  'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U',
  'Bearer ',
  'Bearer bwk_',
  'Basic YWRtaW46YWRtaW4=',
  'AKIAIOSFODNN7EXAMPLE',
  'aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  'ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789',
  'xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx',
  'sk_live_4eC39HqLyjWDarjtT1zdp7dc',
  'postgres://user:hunter2@db.internal:5432/prod',
  'password=hunter2',
];

const unicodeString = fc
  .array(fc.oneof(fc.constantFrom(...UNICODE_SAMPLES), fc.string({ unit: 'binary', maxLength: 4 })), {
    minLength: 1,
    maxLength: 12,
  })
  .map((parts) => parts.join(''));

/** Prefix + 43 base62 characters (+ six more where a checksum would go): token-shaped, not tokens. */
const tokenShaped = fc
  .tuple(
    fc.constantFrom(...Object.values(TOKEN_PREFIXES), 'BWK', 'bwx', 'ghp'),
    charsOf(BASE62, 43, 43),
    fc.constantFrom('', 'AAAAAA', '------'),
    fc.constantFrom('_', '-', ''),
  )
  .map(([prefix, body, tail, sep]) => `${prefix}${sep}${body}${tail}`);

const jwtShaped = fc
  .tuple(charsOf(BASE64URL, 10, 60), charsOf(BASE64URL, 10, 200), charsOf(BASE64URL, 0, 86))
  .map(([payload, claims, sig]) => `eyJ${payload}.eyJ${claims}.${sig}`);

/** A long string: a repeated sample, so its size is cheap to make and its content still hostile. */
const hugeString = fc
  .tuple(
    fc.oneof(fc.constantFrom('a', '\u0000', '\uD800', '👩‍👩‍👧‍👦', '%', '\\', '"'), unicodeString),
    fc.integer({ min: 1_000, max: 70_000 }),
  )
  .map(([sample, length]) => {
    const unit = sample || 'a';
    return unit.repeat(Math.max(1, Math.floor(length / unit.length)));
  });

/** JSON nested far deeper than any schema: `{"a":{"a":…}}` or `[[[…]]]`, written as text by toJson. */
export class DeepNest {
  constructor(
    readonly depth: number,
    readonly kind: 'array' | 'object',
  ) {}
}

const deepNest = fc
  .tuple(fc.integer({ min: 100, max: 100_000 }), fc.constantFrom<'array' | 'object'>('array', 'object'))
  .map(([depth, kind]) => new DeepNest(depth, kind));

/** A JSON object with an own `__proto__` or `constructor.prototype` key: prototype-poisoning bait. */
const poisoned = fc.constantFrom('__proto__', 'constructor').map((key) => {
  const value: Record<string, unknown> = Object.create(null);
  value[key] = key === '__proto__' ? { isAdmin: true, role: 'owner' } : { prototype: { isAdmin: true } };
  return value;
});

// --- Strings and values -----------------------------------------------------------------------------

/** Any string the fuzzer finds interesting, valid or not for any particular field. */
function interestingString(pools: FuzzPools): fc.Arbitrary<string> {
  const realIds = () => [...pools.own.values(), ...pools.other.values()].flat();
  return fc.oneof(
    { arbitrary: fc.string({ maxLength: 40 }), weight: 3 },
    { arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }), weight: 2 },
    { arbitrary: unicodeString, weight: 3 },
    { arbitrary: fc.constantFrom(...HOSTILE_STRINGS), weight: 3 },
    { arbitrary: fc.constantFrom(...SECRET_SHAPED), weight: 1 },
    { arbitrary: tokenShaped, weight: 1 },
    { arbitrary: jwtShaped, weight: 1 },
    { arbitrary: pick(() => pools.tokens, 'bwk_'), weight: 2 },
    { arbitrary: pick(realIds, 'agt_'), weight: 3 },
    { arbitrary: fc.constantFrom(...ALL_ID_PREFIXES).chain(idShaped), weight: 1 },
    { arbitrary: pick(() => pools.emails, 'a@b'), weight: 1 },
    { arbitrary: fc.constantFrom(pools.ownSlug, pools.otherSlug), weight: 1 },
    { arbitrary: hugeString, weight: 1 },
  );
}

const junkKey = (pools: FuzzPools) =>
  fc.oneof(
    fc.constantFrom('name', 'role', 'id', 'org', 'isAdmin', 'permissions', '', ' ', 'a.b', '$where', 'x'),
    interestingString(pools).map((s) => s.slice(0, 64)),
  );

/** A JSON value of any type: the wrong type for almost every field. */
function junkValue(pools: FuzzPools): fc.Arbitrary<unknown> {
  const scalar = fc.oneof(
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(0, -0, -1, 1.5, 2 ** 31, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e308, 5e-324),
    interestingString(pools),
  );
  const { value } = fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', maxDepth: 3 },
      { arbitrary: scalar, weight: 6 },
      { arbitrary: fc.array(tie('value'), { maxLength: 4 }), weight: 1 },
      { arbitrary: fc.dictionary(junkKey(pools), tie('value'), { maxKeys: 4 }), weight: 1 },
    ),
  }));
  return fc.oneof(
    { arbitrary: value, weight: 12 },
    { arbitrary: hugeString, weight: 1 },
    {
      arbitrary: fc
        .tuple(fc.integer({ min: 1_000, max: 20_000 }), fc.constantFrom<unknown>(0, 'a', null, {}, []))
        .map(([length, item]) => Array.from({ length }, () => item)),
      weight: 1,
    },
    { arbitrary: deepNest, weight: 1 },
    { arbitrary: poisoned, weight: 1 },
  );
}

// --- JSON Schema → arbitrary -------------------------------------------------------------------------

/**
 * Cuts or pads a string to the schema's length bounds. Never a filter: a filter that rarely passes
 * (random text against `^\\d{6}$`) makes fast-check retry forever.
 */
function withinLength(schema: JsonSchema) {
  const min = schema.minLength ?? 0;
  const max = schema.maxLength ?? Number.POSITIVE_INFINITY;
  return (s: string) => (s.length > max ? s.slice(0, max) : s.length < min ? s.padEnd(min, 'a') : s);
}

/**
 * `fc.stringMatching` of a pattern, built once per pattern (undefined: fast-check cannot read it).
 * Building one costs tens of milliseconds (fast-check tokenizes its own hostile strings against the
 * pattern's characters), and the same few patterns (ids, printable text) recur in hundreds of fields:
 * built per field, they took seconds before the first request. An arbitrary holds no state, so a
 * shared one draws, from the same seed, exactly the values a new one would.
 */
const matchingByPattern = new Map<string, fc.Arbitrary<string> | undefined>();
function stringsMatching(pattern: string): fc.Arbitrary<string> | undefined {
  if (!matchingByPattern.has(pattern)) {
    let arbitrary: fc.Arbitrary<string> | undefined;
    try {
      arbitrary = fc.stringMatching(new RegExp(pattern, 'u'));
    } catch {
      arbitrary = undefined;
    }
    matchingByPattern.set(pattern, arbitrary);
  }
  return matchingByPattern.get(pattern);
}

/** A string for a field with a pattern: real ids for id fields, else strings the pattern matches. */
function patternString(schema: JsonSchema, pools: FuzzPools): fc.Arbitrary<string> {
  const pattern = schema.pattern!;
  const fit = withinLength(schema);
  const matching = (stringsMatching(pattern) ?? interestingString(pools)).map(fit);
  const id = ID_IN_PATTERN.exec(pattern);
  if (!id) {
    // Printable-text fields (`^[^\p{Cc}]+$`) take any unicode but control characters: give them some.
    if (!pattern.startsWith('^[^')) return matching;
    const unicode = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).map(fit);
    return fc.oneof({ arbitrary: matching, weight: 4 }, { arbitrary: unicode, weight: 1 });
  }
  const prefix = id[1]!;
  const wrongKind = () =>
    [...pools.own.entries(), ...pools.other.entries()]
      .filter(([p]) => p !== prefix)
      .flatMap(([, ids]) => ids);
  const real = pattern === `^${prefix}_[0-9A-HJKMNP-TV-Z]{26}$`;
  return fc.oneof(
    { arbitrary: pick(() => pools.own.get(prefix) ?? [], `${prefix}_`), weight: 9 },
    { arbitrary: pick(() => pools.other.get(prefix) ?? [], `${prefix}_`), weight: 5 },
    { arbitrary: real ? idShaped(prefix) : matching, weight: 4 },
    { arbitrary: pick(wrongKind, `${prefix}_`), weight: 1 },
  );
}

function stringFor(schema: JsonSchema, name: string, pools: FuzzPools): fc.Arbitrary<string> {
  const fit = withinLength(schema);
  let base: fc.Arbitrary<string>;
  if (schema.pattern) {
    base = patternString(schema, pools);
  } else {
    const max = Math.min(schema.maxLength ?? 200, 200);
    const min = Math.min(schema.minLength ?? 0, max);
    base = fc.oneof(
      { arbitrary: fc.string({ minLength: min, maxLength: max }), weight: 4 },
      { arbitrary: fc.string({ unit: 'grapheme', minLength: min, maxLength: max }), weight: 1 },
      { arbitrary: interestingString(pools).map(fit), weight: 3 },
    );
  }
  // Values that mean something to the server in a field of that name: they get past validation
  // into the handlers (a real service and action, a real token, the owner's current password).
  const hints: Array<fc.WeightedArbitrary<string>> = [];
  const hint = (values: () => readonly string[], weight: number) =>
    hints.push({ arbitrary: pick(values, '').map(fit), weight });
  if (pools.names[name]) hint(() => pools.names[name] ?? [], 8);
  if (/email/i.test(name)) hint(() => pools.emails, 6);
  if (/password/i.test(name)) hint(() => pools.passwords, 6);
  if (/token|ticket/i.test(name)) hint(() => pools.tokens, 8);
  if (/^(id|user)$/.test(name))
    hints.push({ arbitrary: patternString({ pattern: '^usr_[0-9A-HJKMNP-TV-Z]{26}$' }, pools), weight: 4 });
  if (/selector|labels/i.test(name)) hints.push({ arbitrary: selectorString, weight: 6 });
  return hints.length > 0 ? fc.oneof({ arbitrary: base, weight: 8 }, ...hints) : base;
}

/** Label-selector-ish text (`env=staging,!canary,tier!=db`): the selector parser's own language, bent. */
const selectorString = fc
  .array(
    fc.oneof(
      fc
        .tuple(
          charsOf('abcenvtier./-_', 0, 12),
          fc.constantFrom('=', '==', '!=', ' = ', ''),
          charsOf('abcxyz.-_', 0, 12),
        )
        .map(([k, op, v]) => `${k}${op}${v}`),
      fc.constantFrom('!canary', 'region', ' ', '', 'in (a)', 'a/b=c', 'x'.repeat(70)),
    ),
    { minLength: 0, maxLength: 20 },
  )
  .map((terms) => terms.join(','));

/** Values the schema accepts (mostly: patterns and lengths are honoured, refinements may not be). */
export function arbitraryOf(
  schema: JsonSchema,
  pools: FuzzPools,
  name = '',
  depth = 0,
): fc.Arbitrary<unknown> {
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...schema.enum);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) return fc.oneof(...alternatives.map((s) => arbitraryOf(s, pools, name, depth + 1)));
  if (schema.allOf?.length) return arbitraryOf(schema.allOf[0]!, pools, name, depth + 1);
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'string':
      return stringFor(schema, name, pools);
    case 'integer':
    case 'number': {
      const min = Math.max(schema.minimum ?? schema.exclusiveMinimum ?? -(2 ** 31), Number.MIN_SAFE_INTEGER);
      const max = Math.min(schema.maximum ?? schema.exclusiveMaximum ?? 2 ** 31, Number.MAX_SAFE_INTEGER);
      const whole = fc.oneof(fc.integer({ min, max }), fc.constantFrom(min, max, Math.min(min + 1, max)));
      return type === 'integer' ? whole : fc.oneof(whole, fc.double({ min, max, noNaN: true }));
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array': {
      const item = schema.items ? arbitraryOf(schema.items, pools, name, depth + 1) : junkValue(pools);
      const minLength = schema.minItems ?? 0;
      const maxLength = Math.max(minLength, Math.min(schema.maxItems ?? 6, 30));
      return fc.array(item, { minLength, maxLength });
    }
    case 'object':
      return objectOf(schema, pools, depth);
    default:
      // `{}`: anything goes (command params, passkey extension results).
      return depth > 4 ? fc.constant({}) : junkValue(pools);
  }
}

function objectOf(schema: JsonSchema, pools: FuzzPools, depth: number): fc.Arbitrary<unknown> {
  const properties = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [key, property] of Object.entries(properties))
    model[key] = arbitraryOf(property, pools, key, depth + 1);
  const fixed = fc.record(model, { requiredKeys: [...required].filter((key) => key in model) });
  const extra = schema.additionalProperties;
  if (extra && typeof extra === 'object') {
    const keys = schema.propertyNames
      ? arbitraryOf(schema.propertyNames, pools, 'key', depth + 1)
      : junkKey(pools);
    const values = arbitraryOf(extra, pools, 'value', depth + 1);
    return fc
      .tuple(fixed, fc.dictionary(keys as fc.Arbitrary<string>, values, { maxKeys: 6 }))
      .map(([known, more]) => ({ ...more, ...(known as object) }));
  }
  return fixed;
}

/** Values that mean something to the server in a field of that name, if the fuzzer has any. */
function hintsFor(name: string, pools: FuzzPools): (() => readonly string[]) | undefined {
  if (pools.names[name]) return () => pools.names[name] ?? [];
  // A role binding's subject: a user or a team.
  if (name === 'id') return () => [...(pools.own.get('usr') ?? []), ...(pools.own.get('tea') ?? [])];
  if (/email/i.test(name)) return () => pools.emails;
  if (/password/i.test(name)) return () => pools.passwords;
  if (/token|ticket/i.test(name)) return () => pools.tokens;
  return undefined;
}

const ALPHANUMERIC = 'abcdefghijklmnopqrstuvwxyz0123456789';

/**
 * The plainest value the schema accepts: required keys only, real ids of the caller's own
 * organization, meaningful values where the field's name has them, short plain text otherwise. These
 * get past validation into the handlers, so that what the other requests meet keeps changing (teams
 * created and renamed, commands queued and cancelled, agents disabled and enabled).
 */
export function tidyOf(schema: JsonSchema, pools: FuzzPools, name = ''): fc.Arbitrary<unknown> {
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...schema.enum);
  const alternatives = schema.anyOf ?? schema.oneOf ?? schema.allOf;
  if (alternatives?.length) return tidyOf(alternatives[0]!, pools, name);
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'string': {
      const fit = withinLength(schema);
      if (/email/i.test(name))
        return fc.oneof(
          pick(() => pools.emails, 'a@b'),
          charsOf(ALPHANUMERIC, 3, 12).map((local) => `${local}@example.test`),
        );
      const known = hintsFor(name, pools);
      if (known) return pick(known, 'x').map(fit);
      if (/selector|labels/i.test(name)) return fc.constantFrom('env=staging', 'env!=prod', 'region');
      const id = schema.pattern ? ID_IN_PATTERN.exec(schema.pattern) : null;
      if (id) {
        const prefix = id[1]!;
        return fc.oneof(
          pick(() => pools.own.get(prefix) ?? [], `${prefix}_`),
          idShaped(prefix),
        );
      }
      if (schema.pattern) return (stringsMatching(schema.pattern) ?? fc.constant('x')).map(fit);
      const min = Math.max(1, schema.minLength ?? 0);
      return charsOf(ALPHANUMERIC, min, Math.max(min, Math.min(schema.maxLength ?? 20, 20))).map(fit);
    }
    case 'integer':
    case 'number': {
      const min = Math.max(schema.minimum ?? 0, -1_000);
      return fc.integer({ min, max: Math.max(min, Math.min(schema.maximum ?? min + 100, min + 100)) });
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array': {
      const minLength = schema.minItems ?? 0;
      const maxLength = Math.max(minLength, Math.min(schema.maxItems ?? 2, 2));
      return fc.array(schema.items ? tidyOf(schema.items, pools, name) : fc.constant(''), {
        minLength,
        maxLength,
      });
    }
    case 'object': {
      const model: Record<string, fc.Arbitrary<unknown>> = {};
      for (const key of schema.required ?? []) {
        const property = schema.properties?.[key];
        if (property) model[key] = tidyOf(property, pools, key);
      }
      return fc.record(model);
    }
    default:
      return fc.constant({});
  }
}

// --- Bending valid input ------------------------------------------------------------------------------

type Mutation = 'drop' | 'extra' | 'retype' | 'huge' | 'unicode' | 'nest' | 'poison' | 'null';

function mutate(value: unknown, mutation: Mutation, index: number, junk: unknown, text: string): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return junk;
  const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  const keys = Object.keys(copy);
  const key = keys.length > 0 ? keys[index % keys.length]! : 'name';
  switch (mutation) {
    case 'drop':
      delete copy[key];
      return copy;
    case 'extra':
      copy[text.slice(0, 40) || 'extra'] = junk;
      return copy;
    case 'retype':
      copy[key] = junk;
      return copy;
    case 'huge':
      copy[key] = 'A'.repeat(70_000 + (index % 1000));
      return copy;
    case 'unicode':
      copy[key] = text;
      return copy;
    case 'nest':
      copy[key] = new DeepNest(1_000 + (index % 50_000), index % 2 === 0 ? 'array' : 'object');
      return copy;
    case 'poison': {
      const poisonedCopy: Record<string, unknown> = Object.create(null);
      Object.assign(poisonedCopy, copy);
      // An own key named __proto__, which JSON text carries as any other key.
      Object.defineProperty(poisonedCopy, '__proto__', { value: { role: 'owner' }, enumerable: true });
      return poisonedCopy;
    }
    case 'null':
      copy[key] = null;
      return copy;
  }
}

function bent(valid: fc.Arbitrary<unknown>, pools: FuzzPools): fc.Arbitrary<unknown> {
  return fc
    .tuple(
      valid,
      fc.constantFrom<Mutation>(
        'drop',
        'extra',
        'retype',
        'retype',
        'huge',
        'unicode',
        'nest',
        'poison',
        'null',
      ),
      fc.nat(),
      junkValue(pools),
      fc.oneof(unicodeString, fc.constantFrom(...HOSTILE_STRINGS), tokenShaped),
    )
    .map(([value, mutation, index, junk, text]) => mutate(value, mutation, index, junk, text));
}

/** JSON text of a value that may hold DeepNest markers (too deep for JSON.stringify's recursion). */
export function toJson(value: unknown): string {
  if (value instanceof DeepNest) {
    const [open, close] = value.kind === 'array' ? ['[', ']'] : ['{"a":', '}'];
    return `${open.repeat(value.depth)}1${close.repeat(value.depth)}`;
  }
  if (Array.isArray(value))
    return `[${value.map((item) => (item === undefined ? 'null' : toJson(item))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${toJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

// --- Routes and requests --------------------------------------------------------------------------

/** `scim`: the organization's SCIM token, the one credential the SCIM routes answer. */
export type Identity = 'owner' | 'apiKey' | 'scim' | 'anonymous';

export interface FuzzRoute {
  method: string;
  url: string;
  operationId: string;
  params?: JsonSchema;
  query?: JsonSchema;
  body?: JsonSchema;
  declaration: RouteDefinition;
}

/** Every route the server registered (HEAD twins included), with its request schemas as JSON Schema. */
export function fuzzRoutesOf(app: Parameters<typeof registeredRoutesOf>[0]): FuzzRoute[] {
  return registeredRoutesOf(app).map(({ method, url, declaration }) => ({
    method,
    url,
    operationId: declaration.operationId,
    params: toJsonSchema(declaration.params),
    query: toJsonSchema(declaration.query),
    body: toJsonSchema(declaration.body),
    declaration,
  }));
}

/** A body as sent: text, raw bytes (invalid UTF-8), or a large fill described rather than held. */
export type FuzzBody =
  | string
  | { base64: string }
  | { prefix: string; fill: string; count: number; suffix: string };

/** One request exactly as it goes on the wire, minus the caller's credentials (added when sent). */
export interface FuzzRequest {
  /** `METHOD /template (operationId)`: which route it was made for. */
  route: string;
  identity: Identity;
  /** For the owner: send the right CSRF token, none, or a wrong one. */
  csrf: 'valid' | 'missing' | 'wrong';
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: FuzzBody;
  /** Whether the params, query and body were all generated valid for their schemas. */
  schemaValid: boolean;
}

/** Percent-encodes the UTF-8 bytes of `s` (a lone surrogate becomes U+FFFD, as any client would send it). */
function encode(s: string): string {
  return [...Buffer.from(s, 'utf8')]
    .map((byte) =>
      /[A-Za-z0-9\-._~]/.test(String.fromCharCode(byte))
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
}

/** Path pieces sent verbatim: broken percent-encoding, dot segments, encoded slashes, NULs. */
const RAW_PATH_JUNK = [
  '%',
  '%ZZ',
  '%E0%A4%A',
  '%C0%AF',
  '%ED%A0%80',
  '..',
  '.',
  '%2e%2e',
  'a%2Fb',
  '%00',
  '%2F',
  'a;b',
  '%20',
  '~',
  "!$&'()*+,;=:@",
];

function paramValue(schema: JsonSchema | undefined, name: string, pools: FuzzPools): fc.Arbitrary<string> {
  const valid =
    name === 'org'
      ? fc.oneof(
          { arbitrary: fc.constant(pools.ownSlug), weight: 10 },
          { arbitrary: fc.constant(pools.otherSlug), weight: 4 },
          { arbitrary: schema?.pattern ? patternString(schema, pools) : fc.constant('nope'), weight: 2 },
        )
      : schema
        ? (arbitraryOf(schema, pools, name) as fc.Arbitrary<string>)
        : interestingString(pools);
  return fc.oneof(
    { arbitrary: valid.map((v) => encode(String(v))), weight: 16 },
    { arbitrary: interestingString(pools).map((s) => encode(s.slice(0, 300)) || 'x'), weight: 3 },
    { arbitrary: fc.constantFrom(...RAW_PATH_JUNK), weight: 1 },
  );
}

/** The console's wildcard: file names, traversal attempts, and paths that belong to the API. */
const consolePath = fc.oneof(
  fc.constantFrom(
    'index.html',
    'assets/',
    'assets/index.js',
    'assets/../../package.json',
    '..%2F..%2Fpackage.json',
    '%2e%2e/%2e%2e/etc/passwd',
    'favicon.svg',
    'api/orgs',
    'agent/v1/connect',
    'healthz/x',
    '.env',
    'commands/cmd_01',
  ),
  fc.array(charsOf('abc.-_%/', 1, 10), { maxLength: 5 }).map((parts) => parts.join('/')),
  fc.oneof(unicodeString, fc.constantFrom(...HOSTILE_STRINGS)).map(encode),
);

function serializeQuery(query: Record<string, unknown>): string {
  const pairs: string[] = [];
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    const values = Array.isArray(value) ? value : [value];
    for (const item of values) {
      const text = typeof item === 'object' && item !== null ? toJson(item) : String(item);
      pairs.push(`${encode(key)}=${encode(text.slice(0, 1_000))}`);
    }
  }
  return pairs.length > 0 ? `?${pairs.join('&')}` : '';
}

const RAW_QUERY_JUNK = [
  '?',
  '?&&&',
  '?=',
  '?a',
  '?limit=1&limit=2',
  '?limit[]=1',
  '?limit=%E0%A4%A',
  '?__proto__[isAdmin]=1',
  '?constructor=1',
  '?format=csv&format=json',
  '?after=-2',
  '?after=1e400',
  '?limit=0x10',
  '?ticket=bwt_',
  `?x=${'a'.repeat(6_000)}`,
];

function queryPart(route: FuzzRoute, pools: FuzzPools): fc.Arbitrary<{ text: string; valid: boolean }> {
  const junk = fc.oneof(
    fc.constantFrom(...RAW_QUERY_JUNK),
    fc.dictionary(junkKey(pools), junkValue(pools), { minKeys: 1, maxKeys: 4 }).map(serializeQuery),
  );
  if (!route.query) {
    return fc.oneof(
      { arbitrary: fc.constant({ text: '', valid: true }), weight: 8 },
      { arbitrary: junk.map((text) => ({ text, valid: false })), weight: 2 },
    );
  }
  const valid = arbitraryOf(route.query, pools) as fc.Arbitrary<Record<string, unknown>>;
  const tidy = tidyOf(route.query, pools) as fc.Arbitrary<Record<string, unknown>>;
  return fc.oneof(
    { arbitrary: tidy.map((q) => ({ text: serializeQuery(q), valid: true })), weight: 3 },
    { arbitrary: valid.map((q) => ({ text: serializeQuery(q), valid: true })), weight: 4 },
    {
      arbitrary: bent(valid, pools).map((q) => ({
        text: serializeQuery(q as Record<string, unknown>),
        valid: false,
      })),
      weight: 3,
    },
    { arbitrary: junk.map((text) => ({ text, valid: false })), weight: 1 },
  );
}

const JSON_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'Application/JSON',
  'application/json;charset=UTF-8',
];
const OTHER_TYPES = [
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=----x',
  'application/xml',
  'application/octet-stream',
  'application/json; charset=utf-16',
  'application/json; charset=latin1',
  'application/jsonp',
  'application/vnd.api+json',
  'application/json, text/plain',
  'text/html; charset=utf-8',
  '*/*',
  ';',
  'application/',
];
const MALFORMED_JSON = [
  '{',
  '}',
  '{"a":}',
  '{"a":1,}',
  "{'a':1}",
  '{"a":1}{"b":2}',
  '[1,2',
  'nul',
  'NaN',
  '{"a":NaN}',
  '{"a":Infinity}',
  '{"a":1e400}',
  '{"a":-}',
  '"unterminated',
  '{"\\ud800":1}',
  '{"a":"\\u00"}',
  '{"a":"\u0000"}',
  '\uFEFF{}',
  '{} trailing',
  ' ',
  '0',
  '""',
  'true',
  '[]',
  '{"__proto__":{"isAdmin":true}}',
  '{"constructor":{"prototype":{"isAdmin":true}}}',
  '{"a":{"__proto__":{"x":1}}}',
  '{"name":"a","name":"b"}',
];

interface BodyPart {
  body?: FuzzBody;
  headers: Record<string, string>;
  valid: boolean;
}

function bodyPart(route: FuzzRoute, pools: FuzzPools): fc.Arbitrary<BodyPart> {
  const json = (value: unknown, contentType = 'application/json'): BodyPart => ({
    body: toJson(value),
    headers: { 'content-type': contentType },
    valid: false,
  });
  const junk: Array<fc.WeightedArbitrary<BodyPart>> = [
    { arbitrary: junkValue(pools).map((v) => json(v)), weight: 60 },
    {
      arbitrary: fc.constantFrom(...MALFORMED_JSON).map((text) => ({
        body: text,
        headers: { 'content-type': 'application/json' },
        valid: false,
      })),
      weight: 60,
    },
    {
      arbitrary: fc
        .tuple(
          fc.constantFrom(...OTHER_TYPES),
          fc.oneof(junkValue(pools).map(toJson), fc.constantFrom('a=b&c=d', '<x/>', 'hello')),
        )
        .map(([type, text]) => ({ body: text, headers: { 'content-type': type }, valid: false })),
      weight: 40,
    },
    {
      // Invalid UTF-8 inside a JSON string: overlong, truncated and surrogate encodings.
      arbitrary: fc.constantFrom('c0af', 'ed a080', 'ff fe', 'e2 82', 'f4 90 80 80').map((hex) => ({
        body: {
          base64: Buffer.concat([
            Buffer.from('{"name":"'),
            Buffer.from(hex.replace(/ /g, ''), 'hex'),
            Buffer.from('"}'),
          ]).toString('base64'),
        },
        headers: { 'content-type': 'application/json' },
        valid: false,
      })),
      weight: 20,
    },
    {
      // Larger than the body limit: 413, whatever the route.
      arbitrary: fc.integer({ min: 1_100_000, max: 1_300_000 }).map((count) => ({
        body: { prefix: '{"name":"', fill: 'a', count, suffix: '"}' },
        headers: { 'content-type': 'application/json' },
        valid: false,
      })),
      weight: 1,
    },
    {
      arbitrary: fc.constant({ body: '', headers: { 'content-type': 'application/json' }, valid: false }),
      weight: 20,
    },
  ];
  if (!route.body) {
    return fc.oneof({ arbitrary: fc.constant<BodyPart>({ headers: {}, valid: true }), weight: 560 }, ...junk);
  }
  const valid = arbitraryOf(route.body, pools);
  const tidy = tidyOf(route.body, pools);
  // Fields that take any JSON (command params, passkey extension results) are where depth gets in:
  // a tidy body with one of them nested thousands of levels deep.
  const open = Object.entries(route.body.properties ?? {})
    .filter(
      ([, property]) => property.type === undefined || (property.type === 'object' && !property.properties),
    )
    .map(([key]) => key);
  const deep: Array<fc.WeightedArbitrary<BodyPart>> =
    open.length === 0
      ? []
      : [
          {
            arbitrary: fc
              .tuple(tidy, fc.constantFrom(...open), deepNest)
              .map(([body, key, nest]) =>
                json({ ...(body as object), [key]: new DeepNest(nest.depth, 'object') }),
              ),
            weight: 40,
          },
        ];
  return fc.oneof(
    ...deep,
    { arbitrary: tidy.map((v) => ({ ...json(v), valid: true })), weight: 240 },
    { arbitrary: valid.map((v) => ({ ...json(v), valid: true })), weight: 320 },
    {
      arbitrary: fc
        .tuple(valid, fc.constantFrom(...JSON_TYPES))
        .map(([v, type]) => ({ ...json(v, type), valid: true })),
      weight: 60,
    },
    { arbitrary: bent(valid, pools).map((v) => json(v)), weight: 240 },
    { arbitrary: fc.constant<BodyPart>({ headers: {}, valid: false }), weight: 40 },
    ...junk,
  );
}

/** Headers of no particular route: credentials that are not, odd encodings, idempotency keys, origins. */
function headerJunk(identity: Identity, pools: FuzzPools): fc.Arbitrary<Record<string, string>> {
  const latin1 = (s: string) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?');
  const credential: fc.Arbitrary<Record<string, string>> = fc.oneof(
    pick(() => pools.tokens, 'bwk_').map((t) => ({ authorization: `Bearer ${t}` })),
    tokenShaped.map((t) => ({ authorization: `Bearer ${t}` })),
    jwtShaped.map((t) => ({ authorization: `Bearer ${t}` })),
    fc
      .constantFrom(
        'Bearer',
        'Bearer ',
        'Bearer  x y',
        'bearer bwk_x',
        'Basic YWRtaW46YWRtaW4=',
        'Token x',
        '',
        ' ',
      )
      .map((authorization) => ({ authorization })),
    pick(() => pools.tokens, 'bws_').map((t) => ({ cookie: `${SESSION_COOKIE}=${t}` })),
    fc
      .constantFrom(
        `${SESSION_COOKIE}=`,
        `${SESSION_COOKIE}=%E0%A4%A`,
        `${SESSION_COOKIE}="bws_x`,
        ';;;=;',
        `a=b; ${SESSION_COOKIE}=x; ${SESSION_COOKIE}=y`,
        'bulwark_session=bws_x',
      )
      .map((cookie) => ({ cookie })),
  );
  const other: fc.Arbitrary<Record<string, string>> = fc.oneof(
    fc.constantFrom<Record<string, string>>(
      { origin: 'https://evil.example' },
      { origin: 'null' },
      { 'sec-fetch-site': 'cross-site' },
      { 'x-forwarded-for': '1.2.3.4, ::1, not-an-ip' },
      { 'x-forwarded-proto': 'https' },
      { 'accept-encoding': 'br;q=2, gzip;q=-1, *;q=nan' },
      { 'accept-encoding': 'x'.repeat(4000) },
      { accept: 'text/csv' },
      { 'x-request-id': '../../etc' },
      { 'content-encoding': 'gzip' },
      { 'x-csrf-token': '' },
      { 'x-http-method-override': 'DELETE' },
    ),
    fc
      .tuple(fc.constantFrom('idempotency-key', 'user-agent', 'x-csrf-token'), interestingString(pools))
      .map(([name, value]) => ({
        [name]: latin1(value.slice(0, 4_000)),
      })),
  );
  // Over Node's 16 KiB header limit: 431 before anything of ours runs.
  const oversized = fc.constant({ 'x-padding': 'p'.repeat(17_000) });
  const headers = (arbitrary: fc.Arbitrary<Record<string, string>>, weight: number) => ({
    arbitrary,
    weight,
  });
  return fc.oneof(
    headers(fc.constant({}), identity === 'anonymous' ? 60 : 240),
    headers(credential, identity === 'anonymous' ? 60 : 10),
    headers(other, 20),
    headers(oversized, 1),
  );
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

const identities = fc.oneof(
  { arbitrary: fc.constant<Identity>('owner'), weight: 40 },
  { arbitrary: fc.constant<Identity>('apiKey'), weight: 30 },
  { arbitrary: fc.constant<Identity>('scim'), weight: 10 },
  { arbitrary: fc.constant<Identity>('anonymous'), weight: 20 },
);

interface RequestParts {
  identity: Identity;
  csrf: FuzzRequest['csrf'];
  method: string;
  params: string[];
  wildcard: string;
  query: { text: string; valid: boolean };
  body: BodyPart;
  extra: Record<string, string>;
}

function requestFor(route: FuzzRoute, pools: FuzzPools): fc.Arbitrary<FuzzRequest> {
  const names = [...route.url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
  const schemaOf = (name: string) => route.params?.properties?.[name];
  // Anything goes: each part valid, bent or junk on its own.
  const wild = fc
    .record({
      identity: identities,
      csrf: fc.oneof(
        { arbitrary: fc.constant<FuzzRequest['csrf']>('valid'), weight: 46 },
        { arbitrary: fc.constantFrom<FuzzRequest['csrf']>('missing', 'wrong'), weight: 4 },
      ),
      method: fc.oneof(
        { arbitrary: fc.constant(route.method), weight: 38 },
        { arbitrary: fc.constantFrom(...METHODS), weight: 2 },
      ),
      params: fc.tuple(...names.map((name) => paramValue(schemaOf(name), name, pools))),
      wildcard: consolePath,
      query: queryPart(route, pools),
      body: bodyPart(route, pools),
    })
    .chain((parts) => headerJunk(parts.identity, pools).map((extra): RequestParts => ({ ...parts, extra })));
  // A request a well-behaved client would send, in the caller's own organization: it reaches the
  // handler, and changes what the wild requests meet.
  const tidy = fc
    .record({
      identity: identities,
      params: fc.tuple(
        ...names.map((name) =>
          name === 'org'
            ? fc.constant(pools.ownSlug)
            : tidyOf(schemaOf(name) ?? { type: 'string' }, pools, name).map((v) => encode(String(v))),
        ),
      ),
      wildcard: fc.constantFrom('', 'index.html', 'commands'),
      query: route.query
        ? tidyOf(route.query, pools).map((q) => ({
            text: serializeQuery(q as Record<string, unknown>),
            valid: true,
          }))
        : fc.constant({ text: '', valid: true }),
      body: route.body
        ? tidyOf(route.body, pools).map(
            (v): BodyPart => ({
              body: toJson(v),
              headers: { 'content-type': 'application/json' },
              valid: true,
            }),
          )
        : fc.constant<BodyPart>({ headers: {}, valid: true }),
    })
    .map((parts): RequestParts => ({ ...parts, csrf: 'valid', method: route.method, extra: {} }));
  return fc
    .oneof({ arbitrary: wild, weight: 3 }, { arbitrary: tidy, weight: 1 })
    .map(({ identity, csrf, method, params: values, wildcard, query, body, extra }) => {
      let index = 0;
      const filled = route.url.replace(/:([A-Za-z0-9_]+)/g, () => values[index++]!).replace(/\*$/, wildcard);
      return {
        route: `${route.method} ${route.url} (${route.operationId})`,
        identity,
        csrf,
        method,
        path: `${filled}${query.text}`,
        headers: { ...body.headers, ...extra },
        ...(body.body === undefined ? {} : { body: body.body }),
        schemaValid: method === route.method && query.valid && body.valid,
      };
    });
}

/** One arbitrary over every route, each equally likely. */
export function requestArbitrary(routes: FuzzRoute[], pools: FuzzPools): fc.Arbitrary<FuzzRequest> {
  return fc.oneof(...routes.map((route) => requestFor(route, pools)));
}

// --- The world the fuzzer runs in ----------------------------------------------------------------------

/** Rate limits raised so that the fuzzer reaches the handlers; exports keep a low limit, so 429s are exercised too. */
export const FUZZ_ENV: Record<string, string> = {
  BULWARK_RATE_LIMIT_READ_PER_MINUTE: '1000000',
  BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '1000000',
  BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000000',
  BULWARK_RATE_LIMIT_EXPORT_PER_MINUTE: '60',
  // The fuzzer signs in with the owner's password alone again and again (after it signs itself out);
  // wrong passwords it sends for the owner must not lock it out of that.
  BULWARK_LOGIN_ACCOUNT_FAILURES: '1000',
  BULWARK_LOGIN_IP_FAILURES: '100000',
  // Errors and warnings only: an access line per request would be most of the run's work.
  BULWARK_LOG_LEVEL: 'warn',
};

interface Fixtures {
  ids: Map<string, string[]>;
  tokens: string[];
  emails: string[];
  registrationToken: string;
  agent: string;
}

const add = (ids: Map<string, string[]>, id: string | undefined) => {
  if (!id) return;
  const prefix = id.slice(0, 3);
  ids.set(prefix, [...(ids.get(prefix) ?? []), id]);
};

/** Registers an agent that reports one service, `app`, with a low-risk and a high-risk action, then goes away. */
async function agentWithApp(base: string, token: string, name: string): Promise<string> {
  const agent = await registerAgent(base, token, name);
  const connection = await handshake(base, agent.agentId, agent.keys);
  await reportApp(connection, [
    {
      name: 'ping',
      description: 'ping',
      params: {
        type: 'object',
        properties: { note: { type: 'string', maxLength: 100 } },
        additionalProperties: false,
      },
      risk: 'low',
      timeoutSeconds: 10,
      secrets: [],
    },
    {
      name: 'migrate',
      description: 'migrate',
      params: { type: 'object', additionalProperties: false },
      risk: 'high',
      timeoutSeconds: 10,
      secrets: [],
    },
  ]);
  connection.socket.close();
  await connection.closed;
  return agent.agentId;
}

/**
 * Fills an organization with one of everything that has an id: a team, a role, a binding, a pending
 * invitation, a registration token and the agent it registered, that agent's service and a command,
 * a secret, an API key, an authenticator being enrolled; with `member`, an accepted member too.
 */
async function populate(owner: SessionClient, slug: string, member: boolean): Promise<Fixtures> {
  const ids = new Map<string, string[]>();
  const tokens: string[] = [];
  const emails = [`${slug}-pending@example.test`];
  const ok = async <T>(method: string, url: string, body?: unknown) => {
    const answer = await owner.json<T>(method, url, body);
    if (answer.status >= 300)
      throw new Error(`${method} ${url}: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  };
  const team = await ok<{ id: string }>('POST', `/api/orgs/${slug}/teams`, { name: `${slug}-team` });
  const role = await ok<{ id: string }>('POST', `/api/orgs/${slug}/roles`, {
    name: `${slug}-role`,
    permissions: ['audit:read'],
  });
  const binding = await ok<{ id: string }>('POST', `/api/orgs/${slug}/role-bindings`, {
    role: role.id,
    subject: { type: 'team', id: team.id },
    selector: 'env=staging',
  });
  const invited = await ok<{ token: string; invitation?: { id: string } }>(
    'POST',
    `/api/orgs/${slug}/invitations`,
    {
      email: `${slug}-pending@example.test`,
      role: 'viewer',
    },
  );
  tokens.push(invited.token);
  if (member) {
    const joining = await ok<{ token: string }>('POST', `/api/orgs/${slug}/invitations`, {
      email: `${slug}-member@example.test`,
      role: 'operator',
    });
    const joined = await new SessionClient(owner.base).json<{ user: { id: string } }>(
      'POST',
      '/api/invitations/accept',
      {
        token: joining.token,
        displayName: 'Member',
        password: MEMBER_PASSWORD,
      },
    );
    add(ids, joined.body.user.id);
    emails.push(`${slug}-member@example.test`);
  }
  const invitations = await ok<{ invitations: Array<{ id: string }> }>(
    'GET',
    `/api/orgs/${slug}/invitations`,
  );
  for (const invitation of invitations.invitations) add(ids, invitation.id);
  const registration = await ok<{ id: string; token: string }>(
    'POST',
    `/api/orgs/${slug}/agent-registration-tokens`,
    {
      uses: 1000,
      expiresInMinutes: 43200,
      labels: { env: 'staging' },
    },
  );
  tokens.push(registration.token);
  const agent = await agentWithApp(owner.base, registration.token, `${slug}-agent`);
  const command = await ok<{ id: string }>('POST', `/api/orgs/${slug}/commands`, {
    agent,
    service: 'app',
    action: 'ping',
  });
  const pending = await ok<{ id: string }>('POST', `/api/orgs/${slug}/commands`, {
    agent,
    service: 'app',
    action: 'migrate',
    confirm: true,
  });
  const secret = await ok<{ id: string }>('POST', `/api/orgs/${slug}/secrets`, {
    name: `${slug.toUpperCase()}_TOKEN`,
    value: `${slug}-fuzz-value`,
  });
  const apiKey = await ok<{ apiKey: { id: string }; token: string }>('POST', `/api/orgs/${slug}/api-keys`, {
    name: `${slug} fuzz fixture key`,
    permissions: ['agents:read'],
  });
  tokens.push(apiKey.token);
  const factor = await ok<{ factorId: string }>('POST', '/api/auth/mfa/totp', { name: 'fuzz' });
  const sessions = await ok<{ sessions: Array<{ id: string }> }>('GET', '/api/auth/sessions');
  for (const id of [
    team.id,
    role.id,
    binding.id,
    registration.id,
    agent,
    command.id,
    pending.id,
    secret.id,
    apiKey.apiKey.id,
    factor.factorId,
    ...sessions.sessions.map((s) => s.id),
  ])
    add(ids, id);
  return { ids, tokens, emails, registrationToken: registration.token, agent };
}

export interface FuzzWorld {
  world: OrgWorld;
  routes: FuzzRoute[];
  pools: FuzzPools;
  /** The credentials each caller sends now (they change when the fuzzer has ended them and they are renewed). */
  credentials(identity: Identity, csrf: FuzzRequest['csrf']): Record<string, string>;
  /** Puts the owner's session and the API key back when the fuzzer has signed out, revoked or locked them. */
  upkeep(): Promise<void>;
  upkeepLog: Record<string, number>;
  /** Takes ids and tokens out of a successful answer, for later requests to use. */
  harvest(body: unknown): void;
  /** Learns from a success what the fuzzer changed about its own callers (the owner's password). */
  noteSuccess(request: FuzzRequest): void;
  /** The owner's password now. */
  ownerPassword(): string;
  close(): Promise<void>;
}

const totpCrypto = new NodeCryptoPlugin();

/**
 * A server with two organizations: `acme`, the fuzzer's own (its owner signed in, and an API key
 * with every permission), and `beta`, created with `bulwark admin create-org`, whose real ids the
 * fuzzer puts in acme's URLs and bodies. Acme has no member besides its owner, so whatever role
 * changes the fuzzer makes, its owner stays its last owner.
 */
export async function startFuzzWorld(env: Record<string, string> = {}): Promise<FuzzWorld> {
  const world = await startOrgWorld({ ...FUZZ_ENV, ...env });
  const owner = world.owner;

  const created = await world.admin('create-user', '--email', 'boss@beta.test');
  if (created.code !== 0) throw new Error(`create-user: ${created.stderr}`);
  const oneTime = /password:\s+(\S+)/.exec(created.stdout)![1]!;
  const boss = new SessionClient(world.server.url);
  await boss.login('boss@beta.test', oneTime);
  await boss.json('POST', '/api/auth/password', { currentPassword: oneTime, newPassword: MEMBER_PASSWORD });
  const org = await world.admin(
    'create-org',
    '--name',
    'Beta',
    '--owner',
    'boss@beta.test',
    '--mfa-optional',
  );
  if (org.code !== 0) throw new Error(`create-org: ${org.stderr}`);
  const bossAccess = await boss.json<{ user: { id: string } }>('GET', '/api/auth/session');
  const beta = await populate(boss, 'beta', true);
  add(beta.ids, bossAccess.body.user.id);

  const acme = await populate(owner.client, 'acme', false);
  add(acme.ids, owner.id);

  let apiKey = '';
  let totpSecret: string | undefined;
  /** The fuzzer may change it (it tries the owner's password as the current one, and strong new ones). */
  let ownerPassword = OWNER.password;
  const upkeepLog: Record<string, number> = {};
  const note = (what: string) => {
    upkeepLog[what] = (upkeepLog[what] ?? 0) + 1;
  };
  /** A TOTP code for a new time step: the server accepts each step once. */
  const nextCode = async () => {
    world.clock.advance(31_000);
    return totpCode({ secret: totpSecret!, crypto: totpCrypto, epoch: Math.floor(world.clock.now() / 1000) });
  };

  async function createApiKey() {
    let answer = await owner.client.json<{ token: string; apiKey: { id: string } }>(
      'POST',
      '/api/orgs/acme/api-keys',
      {
        name: 'fuzz key',
        permissions: PERMISSION_NAMES,
        expiresInDays: 365,
      },
    );
    if (answer.status === 401 || answer.status === 403) {
      // The step-up window has passed (the fuzzer moves the clock for TOTP): sign in again, as a person would.
      await owner.client.json('POST', '/api/auth/reauth', {
        password: ownerPassword,
        ...(totpSecret ? { code: await nextCode() } : {}),
      });
      answer = await owner.client.json('POST', '/api/orgs/acme/api-keys', {
        name: 'fuzz key',
        permissions: PERMISSION_NAMES,
        expiresInDays: 365,
      });
    }
    if (answer.status !== 201)
      throw new Error(`cannot create the fuzz API key: ${answer.status} ${JSON.stringify(answer.body)}`);
    apiKey = answer.body.token;
    add(acme.ids, answer.body.apiKey.id);
  }
  await createApiKey();

  /** SCIM on (again) with a new token: the fuzzer turns it off and rotates it. */
  let scimToken = '';
  async function renewScimToken() {
    const renew = async () => {
      const on = await owner.client.json<{ token?: string }>('PUT', '/api/orgs/acme/scim', {
        defaultRole: 'viewer',
      });
      if (on.status !== 200 || on.body.token) return on;
      return owner.client.json<{ token?: string }>('POST', '/api/orgs/acme/scim/token');
    };
    let answer = await renew();
    if (answer.status === 401 || answer.status === 403) {
      await owner.client.json('POST', '/api/auth/reauth', {
        password: ownerPassword,
        ...(totpSecret ? { code: await nextCode() } : {}),
      });
      answer = await renew();
    }
    if (answer.status !== 200 || !answer.body.token) return `${answer.status} ${JSON.stringify(answer.body)}`;
    scimToken = answer.body.token;
    return undefined;
  }
  const scimProblem = await renewScimToken();
  if (scimProblem) throw new Error(`cannot turn SCIM on: ${scimProblem}`);

  const pools: FuzzPools = {
    ownSlug: 'acme',
    otherSlug: 'beta',
    own: acme.ids,
    other: beta.ids,
    tokens: [
      ...acme.tokens,
      ...beta.tokens,
      apiKey,
      `${owner.client.cookie}`,
      ...Object.values(TOKEN_PREFIXES).flatMap((prefix) => [generateToken(prefix), generateToken(prefix)]),
    ],
    emails: [
      OWNER.email,
      'boss@beta.test',
      ...acme.emails,
      ...beta.emails,
      'nobody@example.test',
      'OWNER@ACME.TEST',
    ],
    passwords: [OWNER.password, MEMBER_PASSWORD, 'password', 'Acme-Bulwark-2026', 'x'],
    names: {
      service: ['app'],
      action: ['ping', 'migrate'],
      permission: PERMISSION_NAMES,
      permissions: PERMISSION_NAMES,
      role: BUILT_IN_ROLE_NAMES,
      includes: BUILT_IN_ROLE_NAMES,
      // Real registration and invitation tokens, and real agent public keys: registration gets through.
      token: [acme.registrationToken, beta.registrationToken, ...acme.tokens, ...beta.tokens],
      signingKey: [rawPublicKey(agentKeys().signing.publicKey)],
      encryptionKey: [rawPublicKey(agentKeys().encryption.publicKey)],
      reason: ['fuzzing', ''],
    },
  };

  // Agents that report the `app` service and can take a command. The fuzzer revokes and disables
  // them (as it should be able to); when none is left, the upkeep registers another.
  let registrationToken = acme.registrationToken;
  const serviced = new Set([acme.agent]);
  const disabled = new Set<string>();
  async function provisionAgent() {
    const name = `acme-agent-${serviced.size + disabled.size + (upkeepLog['agent registered again'] ?? 0)}`;
    let id: string;
    try {
      id = await agentWithApp(world.server.url, registrationToken, name);
    } catch {
      // The fuzzer revoked the registration token too.
      const created = await owner.client.json<{ token: string }>(
        'POST',
        '/api/orgs/acme/agent-registration-tokens',
        {
          uses: 1000,
          expiresInMinutes: 43200,
        },
      );
      if (created.status !== 201) throw new Error(`cannot make a registration token: ${created.status}`);
      registrationToken = created.body.token;
      pools.names.token!.push(registrationToken);
      id = await agentWithApp(world.server.url, registrationToken, name);
    }
    serviced.add(id);
    add(acme.ids, id);
    note('agent registered again');
  }

  async function signIn() {
    const client = new SessionClient(world.server.url);
    const response = await client.login(OWNER.email, ownerPassword);
    const body = (await response.json()) as { secondFactorRequired?: boolean };
    if (response.status !== 200)
      throw new Error(`the owner cannot sign in again: ${response.status} ${JSON.stringify(body)}`);
    if (body.secondFactorRequired) {
      const verified = await client.json('POST', '/api/auth/mfa/verify', { code: await nextCode() });
      if (verified.status !== 200)
        throw new Error(`second factor refused: ${verified.status} ${JSON.stringify(verified.body)}`);
    }
    owner.client = client;
    note('owner signed in again');
  }

  async function enrol() {
    const started = await owner.client.json<{ factorId: string; secret: string }>(
      'POST',
      '/api/auth/mfa/totp',
      { name: 'fuzz upkeep' },
    );
    if (started.status !== 201)
      throw new Error(`cannot enrol: ${started.status} ${JSON.stringify(started.body)}`);
    totpSecret = started.body.secret;
    const confirmed = await owner.client.json('POST', `/api/auth/mfa/totp/${started.body.factorId}/confirm`, {
      code: await nextCode(),
    });
    if (confirmed.status !== 200)
      throw new Error(`cannot confirm: ${confirmed.status} ${JSON.stringify(confirmed.body)}`);
    note('owner enrolled an authenticator (the fuzzer required MFA)');
  }

  async function upkeep() {
    for (let attempt = 0; attempt < 4; attempt++) {
      const mine = await owner.client.json<{ error?: { code: string } }>('GET', '/api/orgs/acme/access/me');
      if (mine.status === 401) {
        await signIn();
        continue;
      }
      if (mine.status === 403 && mine.body.error?.code === 'mfa_enrolment_required') {
        await enrol();
        continue;
      }
      if (mine.status !== 200)
        throw new Error(`the owner is stuck: ${mine.status} ${JSON.stringify(mine.body)}`);
      const key = await fetch(`${world.server.url}/api/orgs/acme/access/me`, {
        headers: { authorization: `Bearer ${apiKey}` },
      });
      await key.arrayBuffer();
      if (key.status === 401) {
        await createApiKey();
        note('API key created again (the fuzzer revoked it)');
        pools.tokens.push(apiKey);
        continue;
      }
      if (key.status !== 200) throw new Error(`the API key is stuck: ${key.status}`);
      const scim = await fetch(`${world.server.url}/scim/v2/acme/ServiceProviderConfig`, {
        headers: { authorization: `Bearer ${scimToken}` },
      });
      await scim.arrayBuffer();
      if (scim.status === 401) {
        // The owner's session may have ended meanwhile: the next round restores it first.
        if (await renewScimToken()) continue;
        note('SCIM token made again (the fuzzer turned SCIM off or rotated it)');
        pools.tokens.push(scimToken);
        continue;
      }
      if ([...serviced].every((id) => disabled.has(id))) await provisionAgent();
      return;
    }
    throw new Error('upkeep could not restore the owner and the API key');
  }

  const ID_SHAPE = /^([a-z]{3})_[0-9A-HJKMNP-TV-Z]{26}$/;
  const TOKEN_SHAPE = /^(bw[a-z])_[A-Za-z0-9_-]{49}$/;
  function harvest(body: unknown) {
    const seen = (value: unknown, depth: number): void => {
      if (depth > 6) return;
      if (typeof value === 'string') {
        const id = ID_SHAPE.exec(value);
        // Not user ids: a harvested new member could be made an owner, then demote ours.
        if (id && id[1] !== 'usr' && id[1] !== 'req' && id[1] !== 'evt' && id[1] !== 'org') {
          const list = acme.ids.get(id[1]!) ?? [];
          if (!list.includes(value)) {
            list.push(value);
            if (list.length > HARVEST_PER_PREFIX * 2) list.splice(1, 1);
            acme.ids.set(id[1]!, list);
          }
        }
        // Not invitation tokens, for the same reason.
        const token = TOKEN_SHAPE.exec(value);
        if (token && token[1] !== 'bwi' && !pools.tokens.includes(value)) {
          pools.tokens.push(value);
          if (pools.tokens.length > 64) pools.tokens.splice(20, 1);
        }
        return;
      }
      if (Array.isArray(value)) {
        for (const item of value.slice(0, 50)) seen(item, depth + 1);
      } else if (value !== null && typeof value === 'object') {
        for (const item of Object.values(value)) seen(item, depth + 1);
      }
    };
    seen(body, 0);
  }

  return {
    world,
    routes: fuzzRoutesOf(world.server.server.app),
    pools,
    credentials(identity, csrf): Record<string, string> {
      if (identity === 'apiKey') return { authorization: `Bearer ${apiKey}` };
      if (identity === 'scim') return { authorization: `Bearer ${scimToken}` };
      if (identity === 'anonymous') return {};
      const client = owner.client;
      return {
        ...(client.cookie ? { cookie: `${SESSION_COOKIE}=${client.cookie}` } : {}),
        ...(csrf === 'valid' && client.csrf ? { 'x-csrf-token': client.csrf } : {}),
        ...(csrf === 'wrong' ? { 'x-csrf-token': generateToken('bws') } : {}),
        origin: world.server.url,
        'sec-fetch-site': 'same-origin',
      };
    },
    upkeep,
    upkeepLog,
    harvest,
    ownerPassword: () => ownerPassword,
    noteSuccess(request) {
      const operation = /\((\w+)\)$/.exec(request.route)?.[1];
      const agent = /\/agents\/(agt_[0-9A-Z]{26})\//.exec(request.path)?.[1] ?? '';
      if (operation === 'revokeAgent') serviced.delete(agent);
      if (operation === 'disableAgent') disabled.add(agent);
      if (operation === 'enableAgent') disabled.delete(agent);
      if (
        operation === 'changePassword' &&
        request.identity === 'owner' &&
        typeof request.body === 'string'
      ) {
        ownerPassword = (JSON.parse(request.body) as { newPassword: string }).newPassword;
        pools.passwords[0] = ownerPassword;
        note('owner password changed by the fuzzer');
      }
    },
    close: () => world.close(),
  };
}

// --- Sending and counting -------------------------------------------------------------------------------

export interface FuzzFailure {
  reason: string;
  request: FuzzRequest;
  sent: { method: string; url: string; headers: Record<string, string>; body?: FuzzBody };
  status?: number;
  answer?: string;
  /** What the server logged about it (found by the request id in the answer). */
  serverLog?: string;
}

export interface FuzzReport {
  seed: number;
  requests: number;
  seconds: number;
  byStatus: Record<string, number>;
  byIdentity: Record<Identity, Record<string, number>>;
  schemaValid: number;
  routes: number;
  /** Routes that answered a success at least once: the fuzzer got past validation and authorization there. */
  routesWithSuccess: number;
  /** The others, by name: where the fuzzer never got past validation or authorization. */
  routesWithoutSuccess: string[];
  failures: FuzzFailure[];
  upkeep: Record<string, number>;
}

interface Answer {
  status: number;
  contentType: string;
  text: string;
  /** The connection closed before the end of the body. */
  cut?: boolean;
}

function bodyBytes(body: FuzzBody | undefined): Buffer | undefined {
  if (body === undefined) return undefined;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if ('base64' in body) return Buffer.from(body.base64, 'base64');
  return Buffer.concat([
    Buffer.from(body.prefix),
    Buffer.alloc(body.count, body.fill),
    Buffer.from(body.suffix),
  ]);
}

/** Answers are read up to this much (a streamed export can be large); the rest is drained unread. */
const READ_LIMIT = 256 * 1024;
const ANSWER_TIMEOUT_MS = 60_000;

function send(
  agent: Agent,
  base: URL,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer | undefined,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const large = body !== undefined && body.length > 1_000_000;
    const request = httpRequest(
      {
        host: base.hostname,
        port: base.port,
        method,
        path,
        // A body past the limit is refused before it is read; the server may close the connection on it.
        agent: large ? false : agent,
        headers: {
          ...headers,
          ...(body === undefined ? {} : { 'content-length': String(body.length) }),
          ...(large ? { connection: 'close' } : {}),
        },
        timeout: ANSWER_TIMEOUT_MS,
      },
      (response) => {
        const contentType = String(response.headers['content-type'] ?? '');
        if (contentType.startsWith('text/event-stream') || method === 'HEAD') {
          // A live stream stays open while its command runs, and a HEAD answer has no body: the status
          // and headers are the answer. (What follows on the connection is not this request's.)
          response.destroy();
          resolve({ status: response.statusCode ?? 0, contentType, text: '' });
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          if (size < READ_LIMIT) chunks.push(chunk);
          size += chunk.length;
        });
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            contentType,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        response.on('error', reject);
        // An answer whose connection closes before its end (a stream that failed half-way) is cut off.
        response.on('close', () =>
          resolve({
            status: response.statusCode ?? 0,
            contentType,
            text: Buffer.concat(chunks).toString('utf8'),
            cut: !response.complete,
          }),
        );
      },
    );
    request.on('timeout', () => request.destroy(new Error(`no answer within ${ANSWER_TIMEOUT_MS} ms`)));
    request.on('error', reject);
    if (body !== undefined) request.write(body);
    request.end();
  });
}

/**
 * Sends `count` generated requests, `concurrency` at a time, and counts the answers. Never throws for
 * a bad answer: a 5xx, a dropped connection or a wrong error shape becomes a failure in the report.
 */
export async function runRouteFuzz(
  fuzz: FuzzWorld,
  options: {
    seed: number;
    count: number;
    concurrency?: number;
    batchSize?: number;
    progress?: (line: string) => void;
  },
): Promise<FuzzReport> {
  const { seed, count, concurrency = 8, batchSize = 200, progress } = options;
  const base = new URL(fuzz.world.server.url);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const arbitrary = requestArbitrary(fuzz.routes, fuzz.pools);
  const report: FuzzReport = {
    seed,
    requests: 0,
    seconds: 0,
    byStatus: {},
    byIdentity: { owner: {}, apiKey: {}, scim: {}, anonymous: {} },
    schemaValid: 0,
    routes: fuzz.routes.length,
    routesWithSuccess: 0,
    routesWithoutSuccess: [],
    failures: [],
    upkeep: fuzz.upkeepLog,
  };
  const succeeded = new Set<string>();
  const started = Date.now();
  const count1 = (map: Record<string, number>, key: string) => {
    map[key] = (map[key] ?? 0) + 1;
  };

  // The fuzzer signs its owner out and revokes its key now and then (that is part of what it tests):
  // the first request to find out puts them back, and the others wait for that instead of all failing.
  let upkeeping: Promise<void> | undefined;
  const upkeepNow = () => {
    upkeeping ??= fuzz.upkeep().finally(() => {
      upkeeping = undefined;
    });
    return upkeeping;
  };

  async function one(request: FuzzRequest) {
    if (upkeeping) await upkeeping;
    const headers = { ...fuzz.credentials(request.identity, request.csrf), ...request.headers };
    const body = bodyBytes(request.body);
    const sent = {
      method: request.method,
      url: `${base.origin}${request.path}`,
      headers,
      ...(request.body === undefined ? {} : { body: request.body }),
    };
    let answer: Answer | undefined;
    let transportError: unknown;
    // A keep-alive connection the server has just closed can fail a request before it is sent; a
    // second try on a new connection tells that race from a server that stopped answering.
    for (let attempt = 0; attempt < 2 && !answer; attempt++) {
      try {
        answer = await send(
          attempt === 0 ? agent : new Agent(),
          base,
          request.method,
          request.path,
          headers,
          body,
        );
      } catch (error) {
        transportError = error;
      }
    }
    report.requests++;
    if (request.schemaValid) report.schemaValid++;
    // A body past the limit goes on a connection of its own, closed after the answer. When the
    // answer comes before the body is read (a refusal, or a GET that never reads it), the server
    // closes with data unread, and the TCP reset that sends can overtake the answer on its way to the
    // client. That is the transport, not the server: it is counted apart, and the server must still
    // answer everything after it (the health checks at the end too).
    const overLimit = typeof request.body === 'object' && 'count' in request.body;
    const status = answer ? String(answer.status) : overLimit ? 'reset (body over the limit)' : 'no answer';
    count1(report.byStatus, status);
    count1(report.byIdentity[request.identity], status);
    if (!answer && overLimit) return;
    if (!answer) {
      report.failures.push({ reason: `no answer: ${String(transportError)}`, request, sent });
      return;
    }
    if (answer.cut) {
      report.failures.push({
        reason: `answered ${answer.status}, then cut the answer off`,
        request,
        sent,
        status: answer.status,
        answer: answer.text.slice(0, 2_000),
      });
      return;
    }
    if (answer.status >= 500) {
      report.failures.push({
        reason: `answered ${answer.status}`,
        request,
        sent,
        status: answer.status,
        answer: answer.text.slice(0, 2_000),
      });
      return;
    }
    const ownCredential = !('authorization' in request.headers) && !('cookie' in request.headers);
    if (
      request.identity !== 'anonymous' &&
      ownCredential &&
      answer.status === 401 &&
      (answer.text.includes('"code":"unauthenticated"') || request.identity === 'scim')
    )
      await upkeepNow();
    if (answer.status >= 200 && answer.status < 300) {
      succeeded.add(request.route);
      fuzz.noteSuccess(request);
      if (
        request.identity !== 'anonymous' &&
        answer.contentType.startsWith('application/json') &&
        answer.text.length < READ_LIMIT
      ) {
        try {
          fuzz.harvest(JSON.parse(answer.text));
        } catch {
          // Not JSON after all (HEAD, or a cut-off export): nothing to take.
        }
      }
    } else if (answer.status >= 400 && request.method !== 'HEAD') {
      // Every refusal has the one error shape with a stable code (DESIGN.md, errors).
      // SCIM's endpoints answer in SCIM's error shape (RFC 7644 §3.12), which identity providers read.
      // Headers too large are refused by the HTTP parser before any route is known: the one shape.
      const shaped =
        request.path.startsWith('/scim/') && answer.status !== 431
          ? /^\{"schemas":\["urn:ietf:params:scim:api:messages:2\.0:Error"\],"status":"\d{3}",/.test(
              answer.text,
            )
          : /^\{"error":\{"code":"[a-z_]+","message":/.test(answer.text);
      if (!shaped)
        report.failures.push({
          reason: `a ${answer.status} without the error shape`,
          request,
          sent,
          status: answer.status,
          answer: answer.text.slice(0, 2_000),
        });
    }
  }

  // What the server logged about each failure: the stack trace behind a 500 is where the fix starts.
  const logFor = (answer: string | undefined) => {
    const id = /"requestId":"(req_[0-9A-Z]+)"/.exec(answer ?? '')?.[1];
    return id ? fuzz.world.server.logs.text.split('\n').find((line) => line.includes(id)) : undefined;
  };
  const attachLogs = () => {
    for (const failure of report.failures) failure.serverLog ??= logFor(failure.answer);
  };

  for (let batch = 0; report.requests < count; batch++) {
    const size = Math.min(batchSize, count - report.requests);
    const requests = fc.sample(arbitrary, { seed: seed + batch, numRuns: size });
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < requests.length) await one(requests[next++]!);
      }),
    );
    await upkeepNow();
    if (progress && batch % 25 === 24)
      progress(
        `route fuzz: ${report.requests}/${count} requests, ${report.failures.length} failures, ${Math.round((Date.now() - started) / 1000)} s`,
      );
  }
  agent.destroy();
  attachLogs();
  report.seconds = (Date.now() - started) / 1000;
  report.routesWithSuccess = succeeded.size;
  report.routesWithoutSuccess = fuzz.routes
    .map((route) => `${route.method} ${route.url} (${route.operationId})`)
    .filter((route) => !succeeded.has(route));
  return report;
}

/** The report as people read it: totals, answers by status (overall and per caller), and each failure in full. */
export function formatReport(report: FuzzReport): string {
  const histogram = (counts: Record<string, number>) =>
    Object.entries(counts)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([status, n]) => `${status}: ${n}`)
      .join(', ');
  const lines = [
    `route fuzz: seed ${report.seed}, ${report.requests} requests in ${report.seconds.toFixed(1)} s (${Math.round(report.requests / report.seconds)}/s)`,
    `  answers by status: ${histogram(report.byStatus)}`,
    ...(['owner', 'apiKey', 'scim', 'anonymous'] as const).map(
      (identity) => `  ${identity}: ${histogram(report.byIdentity[identity])}`,
    ),
    `  schema-valid requests: ${report.schemaValid}; routes ${report.routes}, of which ${report.routesWithSuccess} answered a success at least once`,
    `  never a success: ${report.routesWithoutSuccess.join(', ') || 'none'}`,
    `  upkeep: ${histogram(report.upkeep) || 'none needed'}`,
    `  failures: ${report.failures.length}`,
  ];
  for (const failure of report.failures.slice(0, 20)) {
    lines.push(`  - ${failure.reason} on ${failure.request.route} as ${failure.request.identity}`);
    lines.push(
      `    request: ${JSON.stringify(failure.sent, (_, v) => (typeof v === 'string' && v.length > 2_000 ? `${v.slice(0, 2_000)}… (${v.length} chars)` : v))}`,
    );
    if (failure.answer !== undefined) lines.push(`    answer: ${failure.answer.slice(0, 500)}`);
    if (failure.serverLog !== undefined) lines.push(`    server log: ${failure.serverLog.slice(0, 1_500)}`);
  }
  return lines.join('\n');
}

/** Writes every failure in full (bodies uncut) where the test run keeps its output, and returns the file. */
export function writeFailures(
  report: FuzzReport,
  directory = process.env.BULWARK_TEST_OUTPUT ?? '.',
): string {
  const file = path.join(directory, `route-fuzz-failures-${report.seed}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      report.failures.map(({ reason, request, sent, status, answer, serverLog }) => ({
        reason,
        route: request.route,
        identity: request.identity,
        sent,
        status,
        answer,
        serverLog,
      })),
      null,
      2,
    ),
  );
  return file;
}
