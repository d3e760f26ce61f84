import { canonicalJson, type JsonValue } from '@bulwark/protocol';

/**
 * AUD-2: audit details never hold a secret. The audit log is exported, streamed to SIEMs and read by
 * auditors, so a secret written here would leak to all of them. This guard runs on every event and
 * refuses (throws) rather than redacts: a caller passing a secret is a bug that must surface in tests,
 * not a value to be silently altered.
 */

export class AuditDetailsRejectedError extends Error {
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`audit details rejected at ${path}: ${reason}`);
    this.name = 'AuditDetailsRejectedError';
  }
}

/** Keys whose value is a secret by name, compared with case and separators removed. */
const SECRET_KEYS = new Set(['sessionid', 'otp', 'totp', 'code']);

/**
 * Words that make a key name a secret wherever they appear in it (`newPassword`, `sessionToken`,
 * `privateKeyPem`), unless the key ends in a suffix that names metadata about the secret instead
 * (`tokenId`, `secretName`, `passwordChangedAt`).
 */
const SECRET_STEMS = [
  'password',
  'passwd',
  'passphrase',
  'secret',
  'token',
  'apikey',
  'privatekey',
  'masterkey',
  'credential',
  'cookie',
  'authorization',
  'recoverycode',
];
const METADATA_SUFFIXES =
  /(id|ids|name|names|count|version|prefix|hint|set|configured|present|at|type|kind|length|fingerprint|policy|changed|scope|scopes|label|labels)$/;

function namesASecret(key: string): boolean {
  const normalized = key.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (SECRET_KEYS.has(normalized)) return true;
  return SECRET_STEMS.some((stem) => normalized.includes(stem)) && !METADATA_SUFFIXES.test(normalized);
}

/** Value shapes of known credentials: ours (prefix + 43 base62 chars + checksum) and common foreign ones. */
const SECRET_SHAPES: Array<[RegExp, string]> = [
  [/\bbw[a-z]_[A-Za-z0-9_-]{20,}/, 'a Bulwark token'],
  [/\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\./, 'a JSON Web Token'],
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'a PEM private key'],
  [/\b(AKIA|ASIA)[0-9A-Z]{16}\b/, 'an AWS access key id'],
  [/\bgh[pousr]_[A-Za-z0-9]{36,}/, 'a GitHub token'],
  [/\bxox[abprs]-[A-Za-z0-9-]{10,}/, 'a Slack token'],
  [/\b(sk|rk)_live_[A-Za-z0-9]{16,}/, 'a Stripe secret key'],
  [/\bBearer\s+[A-Za-z0-9._~+/-]{16,}/i, 'a bearer credential'],
  [/\bBasic\s+[A-Za-z0-9+/]{12,}={0,2}/, 'a basic-auth credential'],
  [/:\/\/[^/\s:@]+:[^/\s@]+@/, 'a URL with a password'],
];

export const MAX_DETAILS_BYTES = 16 * 1024;

function inspect(value: JsonValue, path: string): void {
  if (typeof value === 'string') {
    for (const [shape, name] of SECRET_SHAPES) {
      if (shape.test(value)) throw new AuditDetailsRejectedError(path, `value looks like ${name}`);
    }
    return;
  }
  if (Array.isArray(value)) {
    for (const [index, item] of value.entries()) inspect(item, `${path}[${index}]`);
    return;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      const childPath = `${path}.${key}`;
      if (namesASecret(key) && child !== null && typeof child !== 'boolean') {
        throw new AuditDetailsRejectedError(
          childPath,
          'key names a secret; record whether it was set, not its value',
        );
      }
      inspect(child, childPath);
    }
  }
}

/** Returns the details as canonical JSON, or throws when they hold a secret or are too large. */
export function guardDetails(details: { [key: string]: JsonValue } | undefined): string {
  const value = details ?? {};
  inspect(value, 'details');
  const text = canonicalJson(value);
  if (Buffer.byteLength(text) > MAX_DETAILS_BYTES) {
    throw new AuditDetailsRejectedError('details', `larger than ${MAX_DETAILS_BYTES} bytes`);
  }
  return text;
}
