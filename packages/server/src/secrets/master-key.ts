import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export class MasterKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MasterKeyError';
  }
}

const KEY_BYTES = 32;

/** Refuses a key file that anyone but its owner can read: whoever reads it can decrypt every secret. */
export function assertPrivateFile(file: string, what: string): void {
  const stat = statSync(file);
  // A file planted by another account is not ours to trust, whatever its mode.
  if (typeof process.getuid === 'function' && stat.uid !== process.getuid()) {
    throw new MasterKeyError(
      `${what} ${file} is owned by another user (uid ${stat.uid}); it must belong to the user running Bulwark`,
    );
  }
  const mode = stat.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new MasterKeyError(
      `${what} ${file} is readable or writable by group or others (mode ${mode.toString(8).padStart(4, '0')}); run: chmod 600 ${file}`,
    );
  }
}

function readKeyFile(file: string): Buffer {
  assertPrivateFile(file, 'master key file');
  const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
  if (key.length !== KEY_BYTES) {
    throw new MasterKeyError(`master key file ${file} does not hold ${KEY_BYTES} base64-encoded bytes`);
  }
  return key;
}

export interface MasterKeySource {
  key: Buffer;
  /** Where the key came from, for the start-up log (never the key itself). */
  origin: 'env' | 'file' | 'generated';
}

/**
 * The master key from BULWARK_MASTER_KEY when given; otherwise the key file, created on first start
 * with 32 random bytes and mode 0600 (`wx`: two processes starting together cannot both create it).
 */
export function loadMasterKey(options: { fromEnv: Buffer | undefined; file: string }): MasterKeySource {
  if (options.fromEnv) return { key: options.fromEnv, origin: 'env' };
  try {
    return { key: readKeyFile(options.file), origin: 'file' };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  mkdirSync(path.dirname(options.file), { recursive: true, mode: 0o700 });
  try {
    writeFileSync(options.file, `${randomBytes(KEY_BYTES).toString('base64')}\n`, {
      mode: 0o600,
      flag: 'wx',
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { key: readKeyFile(options.file), origin: 'file' };
  }
  return { key: readKeyFile(options.file), origin: 'generated' };
}
