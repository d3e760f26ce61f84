import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { createBackingTls, postgresTls } from '../net/backing-tls.js';
import type { LeaseMetrics } from './metrics.js';

/**
 * Job leases (PLAT-6, HA-1): the one place that decides which instance runs a cluster-wide job, so
 * that instances sharing a PostgreSQL database run each such job on exactly one of them, and another
 * takes over when that one dies. docs/maintenance.md ("Jobs and leases").
 *
 * On PostgreSQL a lease is a session-level advisory lock (`pg_try_advisory_lock`) held on one
 * connection of its own, outside the pool: a pooled connection is shared by requests and handed back
 * after each, while a session lock lives exactly as long as its connection. A dead instance's
 * connection is closed by its kernel (or, for a silent host, by TCP keepalive), PostgreSQL then ends
 * its session and every lock it held is free for the others at once; nothing waits for a timeout
 * chosen here. A lease is taken lazily, when a pass of its job asks, and kept while held; if the
 * connection errors or ends, every lease is marked lost at once and the next pass connects again and
 * competes like any other instance.
 *
 * On SQLite one process serves the file, so that process always holds every lease.
 */

/**
 * Every lease, one per cluster-wide job (each its own, so the jobs may settle on different instances
 * and share the work). The per-instance loops (an instance's own agent connections, its audit group
 * commit) need none; main.ts lists both kinds.
 */
export const LEASES = [
  'maintenance',
  'api-key-expiry-notices',
  'command-deadlines',
  'bulk-runs',
  'audit-checkpoint',
  'audit-retention',
  'audit-sinks',
  'email-outbox',
] as const;
export type LeaseName = (typeof LEASES)[number];

/**
 * The advisory-lock key of a lease: the first 8 bytes of SHA-256("bulwark.lease:" + name), as a
 * signed 64-bit integer. Derived, not a table of ids, so a new lease needs no registry; computed here,
 * not with PostgreSQL's `hashtext` (32 bits, an internal function whose results are not promised to
 * stay the same across major versions), so every instance and version agrees on it. The prefix keeps
 * it apart from the keys other software on the same database may use (Kysely's migration lock is one).
 * In `pg_locks` a key shows as `classid` (high 32 bits) and `objid` (low 32 bits), with `objsubid` 1.
 */
export function leaseKey(name: LeaseName): bigint {
  const digest = createHash('sha256').update(`bulwark.lease:${name}`).digest();
  return digest.readBigInt64BE(0);
}

export interface Leases {
  /** Whether this instance holds the lease now; false from the moment its connection is lost. */
  holds(name: LeaseName): boolean;
  /**
   * Takes the lease if no instance holds it, or confirms the connection still holds it; answers
   * whether this instance holds it now. Never throws: a database it cannot reach means "not held".
   */
  acquire(name: LeaseName): Promise<boolean>;
  /** Runs one pass of a cluster-wide job if this instance holds (or can take) its lease; true if it ran. */
  runIfLeader(name: LeaseName, pass: () => Promise<unknown>): Promise<boolean>;
  /** Ends the lease connection, which frees every lease for the other instances at once. */
  close(): Promise<void>;
}

/** How long the lease connection may take to connect or to answer before it is treated as lost. */
const LEASE_CONNECTION_TIMEOUT_MS = 5000;

export function createLeases(deps: {
  config: Pick<Config, 'database' | 'backingTls'>;
  metrics: LeaseMetrics;
  logger: Logger;
}): Leases {
  const { config, metrics, logger } = deps;
  if (config.database.kind === 'sqlite') {
    for (const name of LEASES) metrics.held.set({ lease: name }, 1);
    return {
      holds: () => true,
      acquire: async () => true,
      async runIfLeader(_name, pass) {
        await pass();
        return true;
      },
      async close() {},
    };
  }
  const { connectionString, ssl } = postgresTls(config.database.url, createBackingTls(config.backingTls));

  interface Session {
    client: pg.Client;
    held: Set<LeaseName>;
    /** The last query asked of the connection: jobs ask at once, and one connection runs one at a time. */
    last: Promise<unknown>;
  }

  /** Runs `text` on the session's connection after the queries asked before it. */
  function queryOn<R extends pg.QueryResultRow>(
    on: Session,
    text: string,
    values: unknown[] = [],
  ): Promise<pg.QueryResult<R>> {
    const run = on.last.then(() => on.client.query<R>(text, values));
    on.last = run.catch(() => {});
    return run;
  }
  let session: Session | undefined;
  let connecting: Promise<Session> | undefined;
  let closed = false;
  /** Connection failures are logged once until a connection succeeds, not on every pass of every job. */
  let unreachableReported = false;

  /** The one answer to "does this instance hold it": what runs a pass and what the gauge shows. */
  const holds = (name: LeaseName): boolean => session?.held.has(name) ?? false;
  const report = (): void => {
    for (const name of LEASES) metrics.held.set({ lease: name }, holds(name) ? 1 : 0);
  };
  report();

  /** Forgets a session and every lease it held, at once; the locks die with its connection. */
  function lose(lost: Session, error?: unknown): Promise<void> {
    if (session !== lost) return Promise.resolve();
    session = undefined;
    if (lost.held.size > 0 && !closed) {
      logger.warn(
        { err: error, leases: [...lost.held] },
        'lost the lease connection; its jobs stop here until a lease is taken again',
      );
    }
    lost.held.clear();
    report();
    return lost.client.end().catch(() => {});
  }

  async function connect(): Promise<Session> {
    const client = new pg.Client({
      connectionString,
      ssl,
      // Seen in pg_stat_activity apart from the pool's `bulwark` connections.
      application_name: 'bulwark-leases',
      // A peer that vanished without closing (a host powered off, a cable cut) is noticed within
      // about 25 s on both ends: here by the socket's keepalive, and by PostgreSQL through the
      // session's own keepalive settings, which end the dead instance's session and free its locks.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      options: '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3',
      connectionTimeoutMillis: LEASE_CONNECTION_TIMEOUT_MS,
      query_timeout: LEASE_CONNECTION_TIMEOUT_MS,
    });
    const opened: Session = { client, held: new Set(), last: Promise.resolve() };
    // Without a listener, a connection dropping while idle would be an uncaught exception.
    client.on('error', (error) => void lose(opened, error));
    client.on('end', () => void lose(opened));
    try {
      await client.connect();
    } catch (error) {
      client.end().catch(() => {});
      throw error;
    }
    if (closed) {
      await client.end().catch(() => {});
      throw new Error('leases are closed');
    }
    session = opened;
    return opened;
  }

  async function sessionNow(): Promise<Session | undefined> {
    if (session) return session;
    connecting ??= connect().finally(() => {
      connecting = undefined;
    });
    try {
      const opened = await connecting;
      unreachableReported = false;
      return opened;
    } catch (error) {
      if (!closed && !unreachableReported) {
        unreachableReported = true;
        logger.warn({ err: error }, 'could not connect to take job leases; cluster-wide jobs wait here');
      }
      return undefined;
    }
  }

  async function acquire(name: LeaseName): Promise<boolean> {
    if (closed) return false;
    const current = await sessionNow();
    if (!current) return false;
    try {
      if (current.held.has(name)) {
        // A round trip proves the session (and so its lock) is still there, even if the notice
        // that it ended has not arrived.
        await queryOn(current, 'select 1');
      } else {
        // Two passes asking at once may both take it: a session lock taken twice is still one
        // lock, and it is only ever released by ending the connection.
        const { rows } = await queryOn<{ taken: boolean }>(
          current,
          'select pg_try_advisory_lock($1::bigint) as taken',
          [leaseKey(name).toString()],
        );
        if (rows[0]?.taken === true && session === current && !current.held.has(name)) {
          current.held.add(name);
          report();
          logger.info({ lease: name }, 'took a job lease');
        }
      }
    } catch (error) {
      void lose(current, error);
    }
    return holds(name);
  }

  return {
    holds,
    acquire,
    async runIfLeader(name, pass) {
      await acquire(name);
      if (!holds(name)) return false;
      await pass();
      return true;
    },
    async close() {
      closed = true;
      const current = session ?? (await connecting?.catch(() => undefined));
      if (!current) return;
      await lose(current);
    },
  };
}
