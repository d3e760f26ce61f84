/**
 * What bench/fleet's cluster run stands on: a fresh PostgreSQL database (dropped after), a Redis
 * database of its own with the cluster's own prefix (its keys deleted after), the instances as
 * processes, and several fleet simulators driven as one.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { SimulatorCommand, SimulatorReport } from './fleet.simulator.js';
import {
  benchServerEnv,
  type ServerProcess,
  type Simulator,
  spawnServer,
  startSimulator,
} from './fleet-support.js';

const CLI = fileURLToPath(new URL('../packages/server/dist/cli.js', import.meta.url));

/** A database of its own on the machine's PostgreSQL (BENCH_POSTGRES_URL names the server). */
export async function createBenchDatabase(): Promise<{
  url: string;
  version: string;
  drop(): Promise<void>;
}> {
  const adminUrl = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const name = `bulwark_bench_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  let version = '';
  try {
    version = (await admin.query<{ server_version: string }>('show server_version')).rows[0]!.server_version;
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    version,
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

/**
 * The Redis database the cluster uses (BENCH_REDIS_URL, database 7 by default), which must be empty,
 * and the cluster's own BULWARK_REDIS_KEY_PREFIX: channels are shared by every database of a Redis.
 * `clean` deletes the keys the run made (never a flush).
 */
export async function claimRedis(): Promise<{ url: string; prefix: string; clean(): Promise<void> }> {
  const url = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/7';
  const prefix = `bulwark-bench:${randomBytes(6).toString('hex')}`;
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  try {
    const keys = await redis.dbsize();
    if (keys > 0)
      throw new Error(
        `the Redis database at ${url} holds ${keys} keys; name an empty one in BENCH_REDIS_URL`,
      );
  } finally {
    redis.disconnect();
  }
  return {
    url,
    prefix,
    async clean() {
      const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
      await client.connect();
      try {
        for (const pattern of [`${prefix}:*`]) {
          for await (const keys of client.scanStream({ match: pattern, count: 1000 }) as AsyncIterable<
            string[]
          >) {
            if (keys.length > 0) await client.del(...keys);
          }
        }
      } finally {
        client.disconnect();
      }
    },
  };
}

/**
 * The processes serving the cluster's backing services, for their CPU time: the PostgreSQL backends
 * connected to the benchmark's database now, and the Redis server (which other users may share).
 */
export async function backingProcesses(
  databaseUrl: string,
  redisUrl: string,
): Promise<{ postgres: number[]; redis: number }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  try {
    const { rows } = await client.query<{ pid: number }>(
      'select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()',
    );
    const info = await redis.info('server');
    return { postgres: rows.map((row) => row.pid), redis: Number(/^process_id:(\d+)/m.exec(info)?.[1]) };
  } finally {
    await client.end();
    redis.disconnect();
  }
}

export interface InstanceSettings {
  dataDir: string;
  /** '0' for any free port; an instance restarted keeps its port, as behind a balancer. */
  port: string;
  databaseUrl: string;
  redisUrl: string;
  prefix: string;
  masterKey: string;
}

/** One instance of the cluster (`bulwark serve`): its own data directory, the shared database, Redis and master key. */
export function startInstance(settings: InstanceSettings): Promise<ServerProcess> {
  return spawnServer([CLI, 'serve'], {
    ...benchServerEnv(),
    BULWARK_DATA_DIR: settings.dataDir,
    BULWARK_PORT: settings.port,
    BULWARK_DATABASE_URL: settings.databaseUrl,
    BULWARK_REDIS_URL: settings.redisUrl,
    BULWARK_MASTER_KEY: settings.masterKey,
    BULWARK_REDIS_KEY_PREFIX: settings.prefix,
  });
}

type Progress = Extract<SimulatorReport, { type: 'online' }>;

/** Several simulator processes seen as one fleet: their progress summed. */
export interface SimulatorGroup {
  readonly members: Simulator[];
  /** Sends each member its own command. */
  each(command: (member: number) => SimulatorCommand): void;
  /** Each member's answer of `type` to the command sent next (sent by `send`). */
  ask<T extends SimulatorReport['type']>(
    type: T,
    command: (member: number) => SimulatorCommand,
  ): Promise<Array<Extract<SimulatorReport, { type: T }>>>;
  /** The fleet's progress: agents online (in all and per address), failed and passed-on attempts. */
  progress(): Progress;
  /** Resolves once the fleet's progress satisfies `predicate`. */
  until(predicate: (progress: Progress) => boolean): Promise<Progress>;
  stop(): void;
}

export function startSimulators(count: number): SimulatorGroup {
  const members = Array.from({ length: count }, () => startSimulator());
  const progress = (): Progress => {
    const total: Progress = { type: 'online', count: 0, failures: 0, byUrl: {}, passedOn: 0 };
    for (const member of members) {
      const own = member.progress();
      total.count += own.count;
      total.failures += own.failures;
      total.passedOn += own.passedOn;
      for (const [url, n] of Object.entries(own.byUrl)) total.byUrl[url] = (total.byUrl[url] ?? 0) + n;
    }
    return total;
  };
  return {
    members,
    each: (command) => {
      for (const [i, member] of members.entries()) member.send(command(i));
    },
    async ask(type, command) {
      const answers = members.map((member) => {
        member.reset();
        return member.until((report) => report.type === type);
      });
      for (const [i, member] of members.entries()) member.send(command(i));
      return (await Promise.all(answers)) as never;
    },
    progress,
    until: (predicate) =>
      new Promise((resolve, reject) => {
        const unsubscribers: Array<() => void> = [];
        const check = () => {
          const failed = members.find((member) => member.latest().type === 'error');
          const total = progress();
          if (!failed && !predicate(total)) return;
          for (const unsubscribe of unsubscribers) unsubscribe();
          if (failed) reject(new Error(`a simulator failed: ${JSON.stringify(failed.latest())}`));
          else resolve(total);
        };
        for (const member of members) unsubscribers.push(member.onReport(check));
        check();
      }),
    stop: () => {
      for (const member of members) member.stop();
    },
  };
}

/** `promise`, or a failure naming `what` once `seconds` have passed. */
export async function within<T>(promise: Promise<T>, seconds: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not end within ${seconds} s`)), seconds * 1000);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
