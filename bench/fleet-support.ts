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
 * Starts `bulwark serve` on SQLite in `dataDir`, on `port` (0: any), logging at info into a pipe
 * that is drained. Every simulated agent comes from 127.0.0.1: the per-address limits on agent
 * connections, sign-in/registration and writes are raised so that they never see one client.
 */
export async function startServerProcess(dataDir: string, port: string): Promise<ServerProcess> {
  // BENCH_SERVER_PROFILE=<dir>: a CPU profile of the server process, written when it exits.
  const profile = process.env.BENCH_SERVER_PROFILE;
  const flags = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [];
  const child = spawn(process.execPath, [...flags, CLI, 'serve'], {
    env: {
      PATH: process.env.PATH ?? '',
      BULWARK_DATA_DIR: dataDir,
      BULWARK_PORT: port,
      BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
      BULWARK_BOOTSTRAP_MFA_REQUIRED: 'false',
      BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
      BULWARK_AGENT_CONNECTS_PER_MINUTE: '1000000',
      BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000000',
      BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '1000000',
      BULWARK_RATE_LIMIT_READ_PER_MINUTE: '1000000',
      BULWARK_METRICS_TOKEN: METRICS_TOKEN,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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

export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  await once(child, 'exit');
}

export interface Simulator {
  send(command: SimulatorCommand): void;
  /** Resolves with the first report (the latest one included) that satisfies `predicate`. */
  until(predicate: (report: SimulatorReport) => boolean): Promise<SimulatorReport>;
  latest(): SimulatorReport;
  /** Forgets the latest report, so that `until` waits for a new one. */
  reset(): void;
  stop(): void;
}

/** Forks the fleet simulator; an error it reports ends the benchmark. */
export function startSimulator(): Simulator {
  const child = fork(here('./fleet.simulator.ts'), [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  const initial: SimulatorReport = { type: 'online', count: 0, failures: 0 };
  let latest: SimulatorReport = initial;
  const waiters = new Set<() => void>();
  child.on('message', (message: SimulatorReport) => {
    if (message.type === 'error') {
      process.stderr.write(`simulator: ${message.message}\n`);
      process.exit(1);
    }
    latest = message;
    for (const waiter of waiters) waiter();
  });
  return {
    send: (command) => child.send(command),
    until: (predicate) =>
      new Promise((resolve) => {
        const check = () => {
          if (!predicate(latest)) return;
          waiters.delete(check);
          resolve(latest);
        };
        waiters.add(check);
        check();
      }),
    latest: () => latest,
    reset: () => {
      latest = initial;
    },
    stop: () => {
      if (child.connected) child.send({ cmd: 'disconnect' } satisfies SimulatorCommand);
      child.disconnect();
      child.kill();
    },
  };
}

export const onlineCount = (report: SimulatorReport) => (report.type === 'online' ? report.count : -1);
