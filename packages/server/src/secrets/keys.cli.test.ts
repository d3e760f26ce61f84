import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createPostgresDatabase, postgresUrl } from '../test-support/databases.js';
import { BACKENDS } from '../test-support/org-world.js';
import { runCli, type ServerProcess, startServerProcess } from '../test-support/processes.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';

/**
 * `bulwark keys` against a running `bulwark serve` on the same data directory (SEC-2): the master key
 * is rotated twice and the data keys once while the server serves, and after a restart everything
 * sealed before still opens (the server's signing keys, so the audit chain still verifies).
 */

const OWNER = { email: 'owner@keys.test', password: 'Tr4vel-Quietly-Over-Mountains' };
let dir: { path: string; remove(): Promise<void> };
let server: ServerProcess | undefined;
/** The PostgreSQL database of a test on that backend; the data directory still holds the key file. */
let postgres: { url: string; drop(): Promise<void> } | undefined;

beforeEach(async () => {
  dir = await tempDir('keys-cli');
});
afterEach(async () => {
  await server?.stop('SIGKILL');
  server = undefined;
  await dir.remove();
  await postgres?.drop();
  postgres = undefined;
});

const env = () => ({
  BULWARK_DATA_DIR: path.join(dir.path, 'data'),
  BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
  BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
  ...(postgres ? { BULWARK_DATABASE_URL: postgres.url } : {}),
});
const keys = async (...args: string[]) => {
  const result = await runCli(['keys', ...args], { cwd: dir.path, env: env() });
  expect(result.code, result.stderr).toBe(0);
  return result.stdout;
};
/** `bulwark keys status` as rows: scope, id, status, master key. */
const status = async () => {
  const [head, ...rows] = (await keys('status')).trim().split('\n');
  return {
    masterKey: /^master key: (\w+) \(local\)$/.exec(head!)?.[1],
    dataKeys: rows.map((row) => {
      const [scope, id, state, , , masterKey] = row.trim().split(/\s+/);
      return { scope, id, state, masterKey };
    }),
  };
};
const signIn = async (url: string) =>
  (await new SessionClient(url).login(OWNER.email, OWNER.password)).status;

describe.each(BACKENDS)('bulwark keys on %s', (backend) => {
  it('rotates the master key twice and the data keys while the server runs; a restart opens everything', async () => {
    if (backend === 'postgresql') postgres = await createPostgresDatabase(postgresUrl()!);
    server = await startServerProcess({ cwd: dir.path, env: env() });
    const keyFile = path.join(dir.path, 'data', 'master.key');
    const before = await status();
    expect(before.dataKeys).toEqual([
      { scope: 'instance', id: expect.stringMatching(/^dek_/), state: 'active', masterKey: before.masterKey },
    ]);

    expect(await keys('rotate')).toMatch(/^new master key \w+; 1 data keys re-wrapped with it$/m);
    expect(await keys('rotate-data', '--all')).toMatch(
      /^instance: new data key dek_\w+\norg:org_\w+: new data key dek_\w+$/m,
    );
    expect(await signIn(server.url)).toBe(200);
    expect(await keys('rotate')).toMatch(/^new master key \w+; 3 data keys re-wrapped with it$/m);

    const after = await status();
    expect(after.masterKey).not.toBe(before.masterKey);
    expect(after.dataKeys.map((k) => [k.scope?.replace(/org_\w+/, 'org_…'), k.state])).toEqual([
      ['instance', 'retired'],
      ['instance', 'active'],
      ['org:org_…', 'active'],
    ]);
    expect(after.dataKeys.every((k) => k.masterKey === after.masterKey)).toBe(true);
    // The key file: the newest key first, both earlier ones kept below it, still 0600.
    expect(readFileSync(keyFile, 'utf8').trim().split('\n')).toHaveLength(3);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);

    // The server ran through all of it, and starts again on what the rotations left.
    expect(await signIn(server.url)).toBe(200);
    expect(await server.stop('SIGTERM')).toBe(0);
    server = await startServerProcess({ cwd: dir.path, env: env() });
    expect(await signIn(server.url)).toBe(200);
    await server.stop('SIGTERM');
    server = undefined;
    const verify = await runCli(['audit', 'verify'], { cwd: dir.path, env: env() });
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const exported = await runCli(['audit', 'export', '--org', 'instance'], { cwd: dir.path, env: env() });
    const rewraps = exported.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { action: string; details: Record<string, number> })
      .filter((event) => event.action === 'keys.data_keys_rewrapped');
    // Each rotation: one event for the data keys, then one per batch of people's PII keys it moved.
    expect(rewraps.filter((event) => 'alreadyCurrent' in event.details)).toHaveLength(2);
    expect(
      rewraps.every((event) => 'alreadyCurrent' in event.details || event.details.piiKeysRewrapped! > 0),
    ).toBe(true);
    // Two server starts and nine CLI processes: on a loaded machine each start alone can take seconds.
  }, 180_000);
});

// Decided from the configuration before any data is read: the same on every backend.
describe('bulwark keys with the master key in the environment', () => {
  it('refuses to rotate a master key that comes from BULWARK_MASTER_KEY, and says what to do', async () => {
    const fromEnv = { ...env(), BULWARK_MASTER_KEY: randomBytes(32).toString('base64') };
    server = await startServerProcess({ cwd: dir.path, env: fromEnv });
    await server.stop('SIGTERM');
    server = undefined;
    const result = await runCli(['keys', 'rotate'], { cwd: dir.path, env: fromEnv });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('the master key comes from BULWARK_MASTER_KEY');
  }, 120_000);
});
