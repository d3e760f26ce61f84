import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from '../test-support/temp.js';
import { loadMasterKeys, MasterKeyError, writeMasterKeyFile } from './master-key.js';

describe('master key', () => {
  let dir: { path: string; remove(): Promise<void> };
  beforeEach(async () => {
    dir = await tempDir('master-key');
  });
  afterEach(() => dir.remove());

  it('creates a 32-byte key file with mode 0600 on first start and reads the same key after', () => {
    const file = path.join(dir.path, 'data', 'master.key');
    const first = loadMasterKeys({ fromEnv: undefined, file });
    expect(first.origin).toBe('generated');
    expect(first.keys.current).toHaveLength(32);
    expect(first.keys.previous).toEqual([]);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    const again = loadMasterKeys({ fromEnv: undefined, file });
    expect(again).toEqual({ keys: first.keys, origin: 'file' });
  });

  it('refuses a key file that group or others can read', () => {
    // Attack: any local user reading a 0644 key file could decrypt every secret in the database.
    const file = path.join(dir.path, 'master.key');
    writeFileSync(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    chmodSync(file, 0o644);
    expect(() => loadMasterKeys({ fromEnv: undefined, file })).toThrow(MasterKeyError);
    expect(() => loadMasterKeys({ fromEnv: undefined, file })).toThrow(`(mode 0644); run: chmod 600 ${file}`);
    chmodSync(file, 0o640);
    expect(() => loadMasterKeys({ fromEnv: undefined, file })).toThrow(MasterKeyError);
  });

  it('refuses a key file owned by another user, whatever its mode', () => {
    // Attack: another local account plants its own 0600 key file where the server will look for one.
    const file = path.join(dir.path, 'master.key');
    writeFileSync(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    chownSync(file, 65534, 65534);
    expect(() => loadMasterKeys({ fromEnv: undefined, file })).toThrow(
      'is owned by another user (uid 65534)',
    );
  });

  it('refuses a key file that does not hold 32 bytes', () => {
    const file = path.join(dir.path, 'master.key');
    writeFileSync(file, 'c2hvcnQ=\n', { mode: 0o600 });
    expect(() => loadMasterKeys({ fromEnv: undefined, file })).toThrow(
      'must hold one or more lines of 32 base64-encoded bytes',
    );
  });

  it('uses BULWARK_MASTER_KEY when given and creates no file', () => {
    const file = path.join(dir.path, 'master.key');
    const key = randomBytes(32);
    expect(loadMasterKeys({ fromEnv: key, file })).toEqual({
      keys: { current: key, previous: [] },
      origin: 'env',
    });
    expect(() => readFileSync(file)).toThrow();
  });

  it('keeps previous keys after the current one, and replaces the file whole with mode 0600', () => {
    const file = path.join(dir.path, 'master.key');
    const older = randomBytes(32);
    const old = randomBytes(32);
    const current = randomBytes(32);
    writeFileSync(file, `${old.toString('base64')}\n`, { mode: 0o600 });
    writeMasterKeyFile(file, { current, previous: [old, older] });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadMasterKeys({ fromEnv: undefined, file }).keys).toEqual({ current, previous: [old, older] });
    expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(3);
  });
});
