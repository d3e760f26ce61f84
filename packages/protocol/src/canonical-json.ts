/**
 * Canonical JSON (RFC 8785, JSON Canonicalization Scheme) for the values Bulwark hashes and signs:
 * object keys sorted by UTF-16 code units, no whitespace, numbers in ECMAScript shortest form.
 * Two parties that hold the same value always produce the same bytes, which is what a hash chain or
 * a signature needs. Values JSON cannot carry (functions, NaN, Infinity, bigint, a bare undefined)
 * are refused rather than silently dropped, so a signature never covers less than the caller thinks;
 * an object member whose value is undefined is absent, as in JSON.stringify.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
      // ECMAScript Number-to-String is exactly the RFC 8785 number form.
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record)
        .filter((key) => record[key] !== undefined)
        .sort();
      return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
    }
    default:
      throw new TypeError(`canonicalJson: cannot encode a ${typeof value}`);
  }
}
