/**
 * fleet: a simulated fleet of agents against the real server, over loopback (issue #4).
 *
 * The server runs as `bulwark serve` (the build output, SQLite in a temporary directory, logs at
 * info into a pipe this process drains). The fleet runs in another process (fleet.simulator.ts):
 * real registrations, real handshakes (both proofs), one service report each, heartbeats at the
 * server's interval (15 s by default), and the agent's own backoff. The baseline is a bare `ws`
 * server in a third process holding the same number of idle connections from the same simulator.
 *
 * Memory is the resident set of the server process (/proc/<pid>/status), CPU its user+system time
 * (/proc/<pid>/stat) over a steady-state window. Per-connection memory is the growth of the resident
 * set from before the connections to after them, divided by their number, for both servers.
 *
 * The reconnect storm kills the server (SIGKILL) with the whole fleet online, starts it again on the
 * same data and port, and times until every agent is online again.
 *
 * Goals: 10,000 agents under 1 GiB RSS; per-connection memory <= 2.5x bare ws; steady state under 15%
 * of one core; all back online within 60 s of the restart.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { SimulatorCommand, SimulatorReport } from './fleet.simulator.js';
import { fmt, machine, OWNER, registrationTokens, signIn } from './http-support.js';

const AGENTS = Number(process.env.BENCH_AGENTS ?? 10_000);
const STEADY_SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const SETTLE_SECONDS = 5; // after the last connection, before memory is read: in-flight work ends
const GOALS = { rssBytes: 1024 ** 3, perConnectionRatio: 2.5, cpuShare: 0.15, storm: 60 };

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const CLI = here('../packages/server/dist/cli.js');
const CLOCK_TICKS = 100; // USER_HZ on Linux

function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? Number.NaN) * 1024;
}

/** User + system CPU seconds the process has used. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

// --- the simulator -----------------------------------------------------------------------------

const simulator = fork(here('./fleet.simulator.ts'), [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
let latest: SimulatorReport = { type: 'online', count: 0, failures: 0 };
const waiters = new Set<() => void>();
simulator.on('message', (message: SimulatorReport) => {
  if (message.type === 'error') {
    process.stderr.write(`simulator: ${message.message}\n`);
    process.exit(1);
  }
  latest = message;
  for (const waiter of waiters) waiter();
});
const command = (message: SimulatorCommand) => simulator.send(message);
function until(predicate: (report: SimulatorReport) => boolean): Promise<SimulatorReport> {
  return new Promise((resolve) => {
    const check = () => {
      if (!predicate(latest)) return;
      waiters.delete(check);
      resolve(latest);
    };
    waiters.add(check);
    check();
  });
}
const onlineCount = (report: SimulatorReport) => (report.type === 'online' ? report.count : -1);

// --- the servers -----------------------------------------------------------------------------

interface Served {
  child: ChildProcess;
  url: string;
}

async function startBulwark(dataDir: string, port: string): Promise<Served> {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: {
      PATH: process.env.PATH ?? '',
      BULWARK_DATA_DIR: dataDir,
      BULWARK_PORT: port,
      BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
      BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
      // Every simulated agent comes from 127.0.0.1: the per-address limits would otherwise see one client.
      BULWARK_AGENT_CONNECTS_PER_MINUTE: '1000000',
      BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000000',
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
        if (!line.includes('bulwark is listening')) continue;
        resolve((JSON.parse(line) as { url: string }).url);
      }
    });
    child.once('exit', (code) => reject(new Error(`bulwark exited with ${code} before listening`)));
  });
  return { child, url };
}

async function stop(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  await once(child, 'exit');
}

const dataDir = mkdtempSync(path.join(tmpdir(), 'bulwark-fleet-'));
const lines: string[] = [];
let bulwark: Served | undefined;
try {
  // 1. The baseline: a bare ws server and the same number of idle connections.
  const bare = fork(here('./fleet.bare-ws.ts'), [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  const [{ port: barePort }] = (await once(bare, 'message')) as [{ port: number }];
  await sleep(1000);
  const bareBefore = rssBytes(bare.pid!);
  command({ cmd: 'connect', url: `ws://127.0.0.1:${barePort}`, mode: 'bare', count: AGENTS });
  await until((r) => onlineCount(r) === AGENTS);
  await sleep(SETTLE_SECONDS * 1000);
  const bareAfter = rssBytes(bare.pid!);
  const barePerConnection = (bareAfter - bareBefore) / AGENTS;
  bare.send('close');
  await once(bare, 'exit');
  command({ cmd: 'disconnect' });
  await until((r) => r.type === 'disconnected');
  lines.push(
    `bare ws:  ${fmt(AGENTS)} idle connections: RSS ${mib(bareBefore)} -> ${mib(bareAfter)}, ${kib(barePerConnection)} per connection`,
  );

  // 2. Bulwark: register the fleet, then connect it.
  bulwark = await startBulwark(dataDir, '0');
  const owner = await signIn(bulwark.url, OWNER.email, OWNER.password);
  const tokens = await registrationTokens(bulwark.url, owner, AGENTS);
  command({ cmd: 'register', url: bulwark.url, tokens, count: AGENTS });
  const registered = await until((r) => r.type === 'registered');
  if (registered.type === 'registered') {
    lines.push(
      `registered ${fmt(registered.count)} agents in ${registered.seconds.toFixed(1)} s (${fmt(registered.count / registered.seconds)}/s)`,
    );
  }
  // A fresh server process for the memory figures, as the baseline is: the garbage of 10,000
  // registrations would otherwise leave room in the heap that the connections then seem not to need.
  const registeredPort = new URL(bulwark.url).port;
  await stop(bulwark.child, 'SIGTERM');
  bulwark = await startBulwark(dataDir, registeredPort);
  await sleep(SETTLE_SECONDS * 1000);
  const before = rssBytes(bulwark.child.pid!);
  const connectStarted = performance.now();
  latest = { type: 'online', count: 0, failures: 0 };
  command({ cmd: 'connect', url: bulwark.url, mode: 'bulwark', count: AGENTS });
  await until((r) => onlineCount(r) === AGENTS);
  const connectSeconds = (performance.now() - connectStarted) / 1000;
  await sleep(SETTLE_SECONDS * 1000);
  const after = rssBytes(bulwark.child.pid!);
  const perConnection = (after - before) / AGENTS;
  lines.push(
    `Bulwark:  ${fmt(AGENTS)} agents online in ${connectSeconds.toFixed(1)} s (handshake, proof, report each): RSS ${mib(before)} -> ${mib(after)}, ${kib(perConnection)} per connection`,
  );

  // 3. Steady state: heartbeats only.
  const cpuBefore = cpuSeconds(bulwark.child.pid!);
  await sleep(STEADY_SECONDS * 1000);
  const cpuShare = (cpuSeconds(bulwark.child.pid!) - cpuBefore) / STEADY_SECONDS;
  const steadyRss = rssBytes(bulwark.child.pid!);
  if (onlineCount(latest) !== AGENTS)
    throw new Error(`agents dropped during the steady state: ${JSON.stringify(latest)}`);
  lines.push(
    `steady state over ${STEADY_SECONDS} s: ${(cpuShare * 100).toFixed(1)}% of one core, RSS ${mib(steadyRss)}`,
  );

  // 4. The reconnect storm.
  const port = new URL(bulwark.url).port;
  const killed = performance.now();
  await stop(bulwark.child, 'SIGKILL');
  await until((r) => onlineCount(r) === 0);
  const restarted = performance.now();
  bulwark = await startBulwark(dataDir, port);
  const listening = performance.now();
  await until((r) => onlineCount(r) === AGENTS);
  const allBack = performance.now();
  const stormSeconds = (allBack - listening) / 1000;
  lines.push(
    `reconnect storm: SIGKILL with ${fmt(AGENTS)} online; restarted in ${((listening - restarted) / 1000).toFixed(1)} s; all online again ${stormSeconds.toFixed(1)} s after it listened (${((allBack - killed) / 1000).toFixed(1)} s after the kill); failed attempts ${latest.type === 'online' ? fmt(latest.failures) : '?'}`,
  );

  const ratio = perConnection / barePerConnection;
  const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');
  process.stdout.write(
    [
      `machine: ${machine()}`,
      `${fmt(AGENTS)} agents in one simulator process over loopback; heartbeat every 15 s (the default)`,
      ...lines,
      `goal RSS under 1 GiB with ${fmt(AGENTS)} agents:      ${mib(Math.max(after, steadyRss))}  ${verdict(Math.max(after, steadyRss) < GOALS.rssBytes)}`,
      `goal per-connection memory <= 2.5x bare ws:  ${ratio.toFixed(2)}x  ${verdict(ratio <= GOALS.perConnectionRatio)}`,
      `goal steady state under 15% of one core:     ${(cpuShare * 100).toFixed(1)}%  ${verdict(cpuShare < GOALS.cpuShare)}`,
      `goal all back online within 60 s:            ${stormSeconds.toFixed(1)} s  ${verdict(stormSeconds <= GOALS.storm)}`,
      '',
    ].join('\n'),
  );
} finally {
  command({ cmd: 'disconnect' });
  simulator.disconnect();
  simulator.kill();
  if (bulwark) await stop(bulwark.child, 'SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}
