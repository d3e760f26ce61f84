import pg from 'pg';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Config } from '../config.js';
import { createPostgresDatabase, postgresUrl } from '../test-support/databases.js';
import { createLeases, LEASES, type LeaseName, type Leases, leaseKey } from './leases.js';
import { createMetrics } from './metrics.js';

/**
 * Job leases (PLAT-6): of two instances on one PostgreSQL database exactly one holds each lease, and
 * when the holder's session ends (what a dead instance looks like to PostgreSQL) it knows it lost
 * every lease at once and the other instance takes them at its next attempt.
 */

const NO_TLS: Config['backingTls'] = { caFile: undefined, insecureSkipVerify: [] };
const quiet = pino({ level: 'silent' });

interface Instance {
  leases: Leases;
  gauge(name: LeaseName): Promise<number | undefined>;
}

function instance(database: Config['database']): Instance {
  const metrics = createMetrics();
  const leases = createLeases({
    config: { database, backingTls: NO_TLS },
    metrics: metrics.leases,
    logger: quiet,
  });
  return {
    leases,
    async gauge(name) {
      const { values } = await metrics.leases.held.get();
      return values.find((value) => value.labels.lease === name)?.value;
    },
  };
}

describe('job leases on SQLite', () => {
  it('are all held by the one process that serves the file', async () => {
    const one = instance({ kind: 'sqlite', file: '/nonexistent/bulwark.db' });
    for (const name of LEASES) {
      expect(await one.leases.acquire(name)).toBe(true);
      expect(one.leases.holds(name)).toBe(true);
      expect(await one.gauge(name)).toBe(1);
    }
    let ran = false;
    expect(
      await one.leases.runIfLeader('maintenance', async () => {
        ran = true;
      }),
    ).toBe(true);
    expect(ran).toBe(true);
    await one.leases.close();
  });
});

describe.skipIf(!postgresUrl())('job leases on PostgreSQL', () => {
  let database: { url: string; drop(): Promise<void> };
  let admin: pg.Client;
  const instances: Instance[] = [];
  const start = () => {
    const made = instance({ kind: 'postgres', url: database.url });
    instances.push(made);
    return made;
  };

  beforeEach(async () => {
    database = await createPostgresDatabase(postgresUrl()!);
    admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
  });
  afterEach(async () => {
    for (const made of instances.splice(0)) await made.leases.close();
    await admin.end();
    await database.drop();
  });

  /**
   * The backends PostgreSQL itself shows holding a lease's advisory lock in this test's database
   * (advisory locks are per database; pg_locks shows every database's).
   */
  async function lockHolders(name: LeaseName): Promise<number[]> {
    const key = BigInt.asUintN(64, leaseKey(name));
    const { rows } = await admin.query<{ pid: number }>(
      `select pid from pg_locks
        where locktype = 'advisory' and granted and objsubid = 1
          and database = (select oid from pg_database where datname = current_database())
          and classid::bigint = $1 and objid::bigint = $2`,
      [(key >> 32n).toString(), (key & 0xffffffffn).toString()],
    );
    return rows.map((row) => row.pid);
  }

  it('lets exactly one of two instances hold each lease, and keeps it there while its holder lives', async () => {
    const a = start();
    const b = start();
    for (const name of LEASES) {
      // Both ask at once, as two instances' passes would.
      const taken = await Promise.all([a.leases.acquire(name), b.leases.acquire(name)]);
      expect(taken.filter(Boolean), name).toHaveLength(1);
      expect([a.leases.holds(name), b.leases.holds(name)].filter(Boolean), name).toHaveLength(1);
      expect([await a.gauge(name), await b.gauge(name)].sort(), name).toEqual([0, 1]);
      expect(await lockHolders(name), name).toHaveLength(1);
    }
    // Later attempts change nothing: the holder keeps each lease, the other still cannot take it.
    for (const name of LEASES) {
      const before = a.leases.holds(name);
      expect(await b.leases.acquire(name)).toBe(!before);
      expect(await a.leases.acquire(name)).toBe(before);
    }
    // Only the holder runs a pass.
    const ran: string[] = [];
    await Promise.all(
      [a, b].map((made, i) => made.leases.runIfLeader('maintenance', async () => void ran.push(`${i}`))),
    );
    expect(ran).toHaveLength(1);
  });

  it('moves every lease to the other instance when the holder’s session is terminated, and the holder knows it lost them', async () => {
    const a = start();
    const b = start();
    for (const name of LEASES) expect(await a.leases.acquire(name)).toBe(true);
    for (const name of LEASES) expect(await b.leases.acquire(name)).toBe(false);
    // Every lease on the one dedicated connection of the instance.
    const pids = new Set<number>();
    for (const name of LEASES) for (const pid of await lockHolders(name)) pids.add(pid);
    expect(pids.size).toBe(1);
    const [holderPid] = [...pids];

    // What PostgreSQL sees of an instance that died: its session ends. With a timeout, the call
    // returns once the backend is gone, and its locks with it.
    const { rows } = await admin.query<{ ended: boolean }>(
      'select pg_terminate_backend($1, 10000) as ended',
      [holderPid],
    );
    expect(rows[0]?.ended).toBe(true);

    // The holder learns it from its connection alone, before any new attempt: every lease lost at once.
    await vi.waitFor(
      async () => {
        for (const name of LEASES) {
          expect(a.leases.holds(name), name).toBe(false);
          expect(await a.gauge(name), name).toBe(0);
        }
      },
      { timeout: 15_000, interval: 50 },
    );
    // The other instance takes each at its next attempt.
    for (const name of LEASES) {
      expect(await b.leases.acquire(name), name).toBe(true);
      expect(await b.gauge(name), name).toBe(1);
    }
    // The old holder connects again and competes, and finds them taken.
    for (const name of LEASES) expect(await a.leases.acquire(name), name).toBe(false);
    expect((await lockHolders('maintenance'))[0]).not.toBe(holderPid);

    // A clean shutdown frees them at once: the first instance's next attempt takes them back.
    await b.leases.close();
    for (const name of LEASES) {
      expect(b.leases.holds(name)).toBe(false);
      expect(await a.leases.acquire(name), name).toBe(true);
    }
  });
});
