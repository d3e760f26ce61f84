/**
 * Recognizing secrets by their name or their shape, for the places that must never hold one: audit
 * details (AUD-2) and the configuration agents report about their services (AGT-5).
 */

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

export function keyNamesASecret(key: string): boolean {
  const normalized = key.toLowerCase().replace(/[^a-z0-9]/g, '');
  if (SECRET_KEYS.has(normalized)) return true;
  return SECRET_STEMS.some((stem) => normalized.includes(stem)) && !METADATA_SUFFIXES.test(normalized);
}

/**
 * Value shapes of known credentials: ours (prefix + 43 base62 chars + checksum) and common foreign ones.
 *
 * Each shape is linear in its input: a start is never followed by a run that could be re-scanned from
 * every later start (a JWT is anchored on what precedes `eyJ`, not on a word boundary a `-` satisfies),
 * since audit details and command params carry attacker-chosen text of up to a megabyte.
 */
const SECRET_SHAPES: Array<[RegExp, string]> = [
  // No word boundary before it: a token inside URL-encoded text (`%3Dbwk_…`) has none.
  [/bw[a-z]_[A-Za-z0-9_-]{20,}/, 'a Bulwark token'],
  [/(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\./, 'a JSON Web Token'],
  [/-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----/, 'a PEM private key'],
  [/\b(AKIA|ASIA)[0-9A-Z]{16}\b/, 'an AWS access key id'],
  [/\bgh[pousr]_[A-Za-z0-9]{36,}/, 'a GitHub token'],
  [/\bxox[abprs]-[A-Za-z0-9-]{10,}/, 'a Slack token'],
  [/\b(sk|rk)_live_[A-Za-z0-9]{16,}/, 'a Stripe secret key'],
  [/\bBearer\s+[A-Za-z0-9._~+/-]{16,}/i, 'a bearer credential'],
  [/\bBasic\s+[A-Za-z0-9+/]{12,}={0,2}/i, 'a basic-auth credential'],
  // The user may be empty (`redis://:password@host`).
  [/:\/\/[^/\s:@]*:[^/\s@]+@/, 'a URL with a password'],
];

/** What known kind of credential `value` contains, if any. */
export function credentialShapeOf(value: string): string | undefined {
  for (const [shape, name] of SECRET_SHAPES) if (shape.test(value)) return name;
  return undefined;
}

const GLOBAL_SHAPES: Array<[RegExp, string]> = SECRET_SHAPES.map(([shape, name]) => [
  new RegExp(shape.source, `${shape.flags}g`),
  name,
]);
// A PEM block is cut from its header to its footer (or the end): the key material follows the header.
const PEM_BLOCK =
  /-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY( BLOCK)?-----|$)/g;

/**
 * `value` with every credential it contains replaced by a marker naming its kind, and the kinds found.
 * Only the credential is cut, so the text around it (a user agent, a note) stays readable.
 */
export function redactCredentials(value: string): { text: string; shapes: string[] } {
  if (credentialShapeOf(value) === undefined) return { text: value, shapes: [] };
  const shapes: string[] = [];
  let text = value.replace(PEM_BLOCK, () => {
    shapes.push('a PEM private key');
    return '[redacted: a PEM private key]';
  });
  for (const [shape, name] of GLOBAL_SHAPES) {
    text = text.replace(shape, () => {
      shapes.push(name);
      return `[redacted: ${name}]`;
    });
  }
  // Overlapping shapes could leave a piece that still reads as a credential: then nothing is kept.
  if (credentialShapeOf(text) !== undefined) return { text: '[redacted]', shapes };
  return { text, shapes };
}

/** Shannon entropy in bits per character. */
function entropy(value: string): number {
  const counts = new Map<string, number>();
  for (const char of value) counts.set(char, (counts.get(char) ?? 0) + 1);
  let bits = 0;
  for (const count of counts.values()) {
    const p = count / value.length;
    bits -= p * Math.log2(p);
  }
  return bits;
}

/**
 * Whether a configuration value looks like a secret: a known credential shape, or a long unbroken
 * random-looking string (a generated password, a key, a hash). A false positive costs only the
 * display of a value ("configured" instead), so the bar is low.
 */
export function valueLooksSecret(value: string): boolean {
  if (credentialShapeOf(value) !== undefined) return true;
  const compact = value.trim();
  // Paths and URLs (a URL with a password is a credential shape above) are what configuration is
  // mostly made of; generated secrets mix letters and digits.
  if (compact.startsWith('/') || compact.startsWith('./') || compact.includes('://')) return false;
  if (!/[A-Za-z]/.test(compact) || !/[0-9]/.test(compact)) return false;
  return compact.length >= 24 && !/\s/.test(compact) && entropy(compact) >= 3.5;
}
