/**
 * Shared by the benchmarks that need agents: the real server as a process of its own (`bulwark
 * serve` from the build), and the fleet simulator (fleet.simulator.ts) driven over IPC.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { SimulatorCommand, SimulatorReport } from './fleet.simulator.js';
import { OWNER } from './http-support.js';

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const CLI = here('../packages/server/dist/cli.js');

/** Only for reading the benchmark's own server's metrics. */
const METRICS_TOKEN = randomBytes(32).toString('hex');

/** The server's agent handshake outcomes so far, from its Prometheus metrics. */
export async function handshakeOutcomes(url: string): Promise<Record<string, number>> {
  const text = await (
    await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
  ).text();
  const outcomes: Record<string, number> = {};
  for (const match of text.matchAll(/^bulwark_agent_handshakes_total\{outcome="(\w+)"\} (\d+)/gm)) {
    outcomes[match[1]!] = Number(match[2]);
  }
  return outcomes;
}

export interface ServerProcess {
  child: ChildProcess;
  url: string;
}

/**
 * What every benchmark server gets: the bootstrap owner, a token for its metrics, and the
 * per-address limits raised. Every simulated agent comes from 127.0.0.1, so the limits on agent
 * connections, sign-in/registration and writes are raised so that they never see one client.
 */
export const benchServerEnv = (): Record<string, string> => ({
  PATH: process.env.PATH ?? '',
  BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
  BULWARK_BOOTSTRAP_MFA_REQUIRED: 'false',
  BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
  BULWARK_AGENT_CONNECTS_PER_MINUTE: '1000000',
  BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000000',
  BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '1000000',
  BULWARK_RATE_LIMIT_READ_PER_MINUTE: '1000000',
  BULWARK_METRICS_TOKEN: METRICS_TOKEN,
});

/**
 * Runs a server entry point (`script` and its arguments) with exactly `env`, logging at info into a
 * pipe that is drained, and resolves once it logs that it listens.
 */
export async function spawnServer(args: string[], env: Record<string, string>): Promise<ServerProcess> {
  // BENCH_SERVER_PROFILE=<dir>: a CPU profile of the server process, written when it exits.
  const profile = process.env.BENCH_SERVER_PROFILE;
  const flags = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [];
  const child = spawn(process.execPath, [...flags, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr.resume();
  const url = await new Promise<string>((resolve, reject) => {
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        if (line.includes('bulwark is listening')) resolve((JSON.parse(line) as { url: string }).url);
      }
    });
    child.once('exit', (code) => reject(new Error(`bulwark exited with ${code} before listening`)));
  });
  return { child, url };
}

/** Starts `bulwark serve` on SQLite in `dataDir`, on `port` (0: any). */
export function startServerProcess(dataDir: string, port: string): Promise<ServerProcess> {
  return spawnServer([CLI, 'serve'], { ...benchServerEnv(), BULWARK_DATA_DIR: dataDir, BULWARK_PORT: port });
}

export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  await once(child, 'exit');
}

export interface Simulator {
  send(command: SimulatorCommand): void;
  /**
   * Resolves with the first report (the latest one included) that satisfies `predicate`; rejects if
   * the simulator reports an error (the benchmark then ends through its cleanup).
   */
  until(predicate: (report: SimulatorReport) => boolean): Promise<SimulatorReport>;
  latest(): SimulatorReport;
  /** The latest progress report (agents online), whatever came after it. */
  progress(): Extract<SimulatorReport, { type: 'online' }>;
  /** Calls `listener` after every report; returns the unsubscribe. */
  onReport(listener: () => void): () => void;
  /** Forgets the latest report (not the progress), so that `until` waits for a new one. */
  reset(): void;
  /** The simulator process's id, for its CPU time. */
  readonly pid: number;
  stop(): void;
}

/** Forks the fleet simulator; an error it reports fails every wait on it. */
export function startSimulator(): Simulator {
  const child = fork(here('./fleet.simulator.ts'), [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  const initial: SimulatorReport = { type: 'online', count: 0, failures: 0, byUrl: {}, passedOn: 0 };
  let latest: SimulatorReport = initial;
  let progress = initial;
  let failure: Error | undefined;
  const waiters = new Set<() => void>();
  const listeners = new Set<() => void>();
  child.on('message', (message: SimulatorReport) => {
    if (message.type === 'error') {
      process.stderr.write(`simulator: ${message.message}\n`);
      failure = new Error(`the simulator failed: ${message.message}`);
    }
    latest = message;
    if (message.type === 'online') progress = message;
    for (const waiter of waiters) waiter();
    for (const listener of listeners) listener();
  });
  return {
    send: (command) => child.send(command),
    until: (predicate) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (failure) {
            waiters.delete(check);
            reject(failure);
            return;
          }
          if (!predicate(latest)) return;
          waiters.delete(check);
          resolve(latest);
        };
        waiters.add(check);
        check();
      }),
    latest: () => latest,
    progress: () => progress as Extract<SimulatorReport, { type: 'online' }>,
    onReport: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    reset: () => {
      latest = initial;
    },
    pid: child.pid!,
    stop: () => {
      if (child.connected) child.send({ cmd: 'disconnect' } satisfies SimulatorCommand);
      child.disconnect();
      child.kill();
    },
  };
}

export const onlineCount = (report: SimulatorReport) => (report.type === 'online' ? report.count : -1);
