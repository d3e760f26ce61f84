import { canonicalJson, type JsonValue } from '@bulwark/protocol';
import { credentialShapeOf, keyNamesASecret } from '../secrets/secret-detection.js';

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

export const MAX_DETAILS_BYTES = 16 * 1024;

function inspect(value: JsonValue, path: string): void {
  if (typeof value === 'string') {
    const shape = credentialShapeOf(value);
    if (shape) throw new AuditDetailsRejectedError(path, `value looks like ${shape}`);
    return;
  }
  if (Array.isArray(value)) {
    for (const [index, item] of value.entries()) inspect(item, `${path}[${index}]`);
    return;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      const childPath = `${path}.${key}`;
      if (keyNamesASecret(key) && child !== null && typeof child !== 'boolean') {
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
