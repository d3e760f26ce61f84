import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
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

/**
 * The key file: one base64 key per line, the current one first, then the previous ones that data
 * keys may still be wrapped with (`bulwark keys rotate` adds a line at the top).
 */
function readKeyFile(file: string): MasterKeys {
  assertPrivateFile(file, 'master key file');
  const keys = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => Buffer.from(line, 'base64'));
  const [current, ...previous] = keys;
  if (!current || keys.some((key) => key.length !== KEY_BYTES)) {
    throw new MasterKeyError(
      `master key file ${file} must hold one or more lines of ${KEY_BYTES} base64-encoded bytes`,
    );
  }
  return { current, previous };
}

export interface MasterKeys {
  current: Buffer;
  previous: Buffer[];
}

export interface MasterKeySource {
  keys: MasterKeys;
  /** Where the keys came from, for the start-up log (never the keys themselves). */
  origin: 'env' | 'file' | 'generated';
}

export const generateMasterKey = (): Buffer => randomBytes(KEY_BYTES);

/**
 * The master key from BULWARK_MASTER_KEY when given; otherwise the key file, created on first start
 * with 32 random bytes and mode 0600 (`wx`: two processes starting together cannot both create it).
 */
export function loadMasterKeys(options: { fromEnv: Buffer | undefined; file: string }): MasterKeySource {
  if (options.fromEnv) return { keys: { current: options.fromEnv, previous: [] }, origin: 'env' };
  try {
    return { keys: readKeyFile(options.file), origin: 'file' };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  mkdirSync(path.dirname(options.file), { recursive: true, mode: 0o700 });
  try {
    writeFileSync(options.file, `${generateMasterKey().toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { keys: readKeyFile(options.file), origin: 'file' };
  }
  return { keys: readKeyFile(options.file), origin: 'generated' };
}

/** Re-reads the key file (a rotation may have added a key since start), or the keys from the environment. */
export function reloadMasterKeys(options: { fromEnv: Buffer | undefined; file: string }): MasterKeys {
  return options.fromEnv ? { current: options.fromEnv, previous: [] } : readKeyFile(options.file);
}

/**
 * Replaces the key file with `keys` in one step: written to a 0600 file beside it, flushed, then
 * renamed over it, so a crash leaves either the old file or the new one, never half of one.
 */
export function writeMasterKeyFile(file: string, keys: MasterKeys): void {
  const next = `${file}.next`;
  rmSync(next, { force: true });
  const fd = openSync(next, 'wx', 0o600);
  try {
    writeSync(fd, [keys.current, ...keys.previous].map((key) => `${key.toString('base64')}\n`).join(''));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(next, file);
}
