import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, chown, copyFile, mkdtemp, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * A PostgreSQL server of a test's own, in a temporary directory, that the test may stop and start
 * (the machine's shared PostgreSQL serves other suites at the same time and must never be stopped).
 * Debian's binaries; initdb refuses to run as root, so as root everything runs as the `postgres`
 * user.
 */

const run = promisify(execFile);
const DEBIAN_POSTGRES = '/usr/lib/postgresql';
const runningAsRoot = process.getuid?.() === 0;

function binDir(): string | null {
  if (!existsSync(DEBIAN_POSTGRES)) return null;
  const versions = readdirSync(DEBIAN_POSTGRES)
    .filter((name) => existsSync(path.join(DEBIAN_POSTGRES, name, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(DEBIAN_POSTGRES, versions[0], 'bin') : null;
}

function postgresUser(): { uid: number; gid: number } | null {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('postgres:'));
  if (!line) return null;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** Why this machine cannot run a private PostgreSQL, or null when it can. */
export function privateClusterUnavailable(): string | null {
  if (!binDir()) return `no PostgreSQL binaries under ${DEBIAN_POSTGRES}/<version>/bin`;
  if (runningAsRoot && !postgresUser())
    return 'running as root and there is no postgres user to run initdb as';
  return null;
}

/**
 * A free loopback port below the kernel's ephemeral range. Inside that range, while the server is
 * stopped, an outgoing connection could take the port as its local port, and a client connecting to
 * the stopped port could even be connected to itself (TCP simultaneous open).
 */
async function portOutsideEphemeralRange(): Promise<number> {
  const [low = 32768] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
    .trim()
    .split(/\s+/)
    .map(Number);
  const floor = 10_000;
  const span = Math.max(1, low - floor);
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = floor + Math.floor(Math.random() * span);
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below the ephemeral range');
}

export type StopMode = 'immediate' | 'fast';

export interface PostgresCluster {
  /** A superuser URL (trust authentication) for the cluster's `postgres` database. */
  url: string;
  /**
   * Stops the server and resolves once it is gone. `immediate` is a crash: every backend is killed,
   * open transactions are lost, and the next start recovers from the WAL. `fast` aborts open
   * transactions, disconnects everyone and shuts down cleanly.
   */
  stop(mode: StopMode): Promise<void>;
  /** Starts the server again on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  running(): boolean;
  /** The server's own log, for a failing test's message. */
  log(): Promise<string>;
  /** Stops the server if it runs and deletes its files. */
  close(): Promise<void>;
}

export interface PostgresClusterOptions {
  /** Serve TLS (`ssl = on`) with this certificate and key (copied into the cluster's directory). */
  ssl?: { certFile: string; keyFile: string };
}

export async function startPostgresCluster(options: PostgresClusterOptions = {}): Promise<PostgresCluster> {
  const unavailable = privateClusterUnavailable();
  if (unavailable) throw new Error(`cannot run a private PostgreSQL: ${unavailable}`);
  const bin = binDir()!;
  const dir = await mkdtemp(path.join(tmpdir(), 'bulwark-pgcluster-'));
  const data = path.join(dir, 'data');
  const logFile = path.join(dir, 'postgres.log');
  if (runningAsRoot) {
    const user = postgresUser()!;
    await chown(dir, user.uid, user.gid);
  }
  const asOwner = (tool: string, args: string[]) =>
    runningAsRoot
      ? (['runuser', ['-u', 'postgres', '--', path.join(bin, tool), ...args]] as const)
      : ([path.join(bin, tool), args] as const);
  const pg = async (tool: string, args: string[]) => {
    const [file, argv] = asOwner(tool, args);
    await run(file, [...argv], { cwd: dir });
  };

  let running = false;
  // A worker that dies mid-test must not leave a server running and its files behind.
  const onExit = () => {
    if (running) {
      const [file, argv] = asOwner('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w']);
      try {
        execFileSync(file, [...argv], { cwd: dir, stdio: 'ignore' });
      } catch {
        // Already gone.
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', onExit);

  let port = 0;
  const startOn = (chosen: number) =>
    pg('pg_ctl', [
      'start',
      '-D',
      data,
      '-l',
      logFile,
      '-w',
      '-t',
      '120',
      '-o',
      // fsync=off loses nothing when only the server crashes (the kernel still holds what it wrote);
      // synchronous_commit stays on, or an immediate stop would lose transactions already acknowledged.
      [
        `-p ${chosen}`,
        '-c listen_addresses=127.0.0.1',
        `-c unix_socket_directories=${dir}`,
        '-c fsync=off',
        '-c full_page_writes=off',
        '-c shared_buffers=16MB',
        '-c max_connections=50',
        ...(options.ssl
          ? ['-c ssl=on', `-c ssl_cert_file=${dir}/server.crt`, `-c ssl_key_file=${dir}/server.key`]
          : []),
      ].join(' '),
    ]);

  try {
    await pg('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '-N']);
    if (options.ssl) {
      // PostgreSQL refuses a key file that others can read or that its user does not own.
      await copyFile(options.ssl.certFile, path.join(dir, 'server.crt'));
      await copyFile(options.ssl.keyFile, path.join(dir, 'server.key'));
      await chmod(path.join(dir, 'server.key'), 0o600);
      if (runningAsRoot) {
        const user = postgresUser()!;
        for (const file of ['server.crt', 'server.key'])
          await chown(path.join(dir, file), user.uid, user.gid);
      }
    }
    // Another process may take the chosen port before the server binds it: choose again.
    for (let attempt = 1; ; attempt++) {
      port = await portOutsideEphemeralRange();
      try {
        await startOn(port);
        break;
      } catch (error) {
        if (attempt >= 3) throw error;
      }
    }
    running = true;
  } catch (error) {
    const log = await readFile(logFile, 'utf8').catch(() => '');
    onExit();
    process.off('exit', onExit);
    throw new Error(`the private PostgreSQL did not start: ${(error as Error).message}\n${log}`);
  }

  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop(mode) {
      await pg('pg_ctl', ['stop', '-D', data, '-m', mode, '-w', '-t', '120']);
      running = false;
    },
    async start() {
      await startOn(port);
      running = true;
    },
    running: () => running,
    log: () => readFile(logFile, 'utf8').catch(() => ''),
    async close() {
      try {
        if (running) await pg('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w', '-t', '120']);
        running = false;
      } finally {
        onExit();
        process.off('exit', onExit);
      }
    },
  };
}
