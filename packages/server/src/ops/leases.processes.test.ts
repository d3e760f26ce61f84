import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createPostgresDatabase, postgresUrl } from '../test-support/databases.js';
import { type ServerProcess, startServerProcess } from '../test-support/processes.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';

/**
 * Two real server processes on one PostgreSQL database (HA-1, PLAT-6): exactly one runs the
 * maintenance job, as `/metrics` shows; when that process is killed (SIGKILL: no shutdown, no
 * goodbye to PostgreSQL but the closed socket), the other takes the lease and deletes an expired row
 * that only became expired after the kill.
 */

const OWNER = { email: 'owner@leases.test', password: 'Quiet-Harbor-Lantern-93' };
const METRICS_TOKEN = randomBytes(32).toString('hex');
const DEADLINE = { timeout: 15_000, interval: 100 };

/** The value a server's `/metrics` shows for `bulwark_lease_held{lease}`, if it shows one. */
async function leaseHeld(server: ServerProcess, lease: string): Promise<number | undefined> {
  const response = await fetch(`${server.url}/metrics`, {
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  expect(response.status).toBe(200);
  const line = (await response.text())
    .split('\n')
    .find((text) => text.startsWith(`bulwark_lease_held{lease="${lease}"} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

describe.skipIf(!postgresUrl())('job leases across server processes', () => {
  const servers: ServerProcess[] = [];
  const cleanups: Array<() => Promise<unknown>> = [];

  afterEach(async () => {
    for (const server of servers.splice(0)) await server.stop('SIGKILL');
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('runs maintenance on exactly one instance, and on the other once the holder is killed', async () => {
    const database = await createPostgresDatabase(postgresUrl()!);
    cleanups.push(() => database.drop());
    const dir = await tempDir('leases');
    cleanups.push(() => dir.remove());
    const reader = new pg.Client({ connectionString: database.url });
    await reader.connect();
    cleanups.push(() => reader.end());

    // Two instances: their own data directories, one database and one master key.
    const masterKey = randomBytes(32).toString('base64');
    const start = async (name: string) => {
      const server = await startServerProcess({
        cwd: dir.path,
        env: {
          BULWARK_DATA_DIR: path.join(dir.path, name),
          BULWARK_DATABASE_URL: database.url,
          BULWARK_MASTER_KEY: masterKey,
          BULWARK_METRICS_TOKEN: METRICS_TOKEN,
          BULWARK_MAINTENANCE_INTERVAL_SECONDS: '1',
          BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
          BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
        },
      });
      servers.push(server);
      return server;
    };
    // One after the other: the first migrates and creates the first owner, the second finds them.
    const first = await start('first');
    const second = await start('second');

    // Each instance's first maintenance pass (within a second) competes for the lease.
    let held: Array<number | undefined> = [];
    await vi.waitFor(async () => {
      held = await Promise.all([leaseHeld(first, 'maintenance'), leaseHeld(second, 'maintenance')]);
      expect(held).toContain(1);
    }, DEADLINE);
    expect(held.sort()).toEqual([0, 1]);
    // Every instance reports every lease; the per-second command deadline sweep is led by one too.
    await vi.waitFor(async () => {
      const deadlines = await Promise.all([
        leaseHeld(first, 'command-deadlines'),
        leaseHeld(second, 'command-deadlines'),
      ]);
      expect(deadlines).toContain(1);
      expect(deadlines.sort()).toEqual([0, 1]);
    }, DEADLINE);

    const holder = (await leaseHeld(first, 'maintenance')) === 1 ? first : second;
    const survivor = holder === first ? second : first;
    expect(await leaseHeld(holder, 'maintenance')).toBe(1);
    expect(await leaseHeld(survivor, 'maintenance')).toBe(0);

    // A registration token made through the survivor, live for now.
    const owner = new SessionClient(survivor.url);
    expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
    const token = await owner.json<{ id: string }>('POST', '/api/orgs/default/agent-registration-tokens', {});
    expect(token.status).toBe(201);

    expect(await holder.stop('SIGKILL')).toBeNull();
    // Expired only now, when the holder is dead: whatever deletes it is the survivor's maintenance.
    await reader.query('update registration_tokens set expires_at = 1 where id = $1', [token.body.id]);

    await vi.waitFor(async () => {
      expect(await leaseHeld(survivor, 'maintenance')).toBe(1);
    }, DEADLINE);
    await vi.waitFor(async () => {
      const { rowCount } = await reader.query('select 1 from registration_tokens where id = $1', [
        token.body.id,
      ]);
      expect(rowCount).toBe(0);
    }, DEADLINE);
  }, 40_000);
});
