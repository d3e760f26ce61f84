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
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  handshakeOutcomes,
  onlineCount,
  type ServerProcess,
  startServerProcess,
  startSimulator,
  stopProcess,
} from './fleet-support.js';
import { fmt, machine, OWNER, registrationTokens, signIn } from './http-support.js';

const AGENTS = Number(process.env.BENCH_AGENTS ?? 10_000);
const STEADY_SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const SETTLE_SECONDS = 5; // after the last connection, before memory is read: in-flight work ends
const GOALS = { rssBytes: 1024 ** 3, perConnectionRatio: 2.5, cpuShare: 0.15, storm: 60 };

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
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

const simulator = startSimulator();
const command = simulator.send;
const until = simulator.until;

const dataDir = mkdtempSync(path.join(tmpdir(), 'bulwark-fleet-'));
const lines: string[] = [];
let bulwark: ServerProcess | undefined;
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
  bulwark = await startServerProcess(dataDir, '0');
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
  await stopProcess(bulwark.child, 'SIGTERM');
  bulwark = await startServerProcess(dataDir, registeredPort);
  await sleep(SETTLE_SECONDS * 1000);
  const before = rssBytes(bulwark.child.pid!);
  const connectStarted = performance.now();
  simulator.reset();
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
  if (onlineCount(simulator.latest()) !== AGENTS)
    throw new Error(`agents dropped during the steady state: ${JSON.stringify(simulator.latest())}`);
  lines.push(
    `steady state over ${STEADY_SECONDS} s: ${(cpuShare * 100).toFixed(1)}% of one core, RSS ${mib(steadyRss)}`,
  );

  // 4. The reconnect storm.
  const port = new URL(bulwark.url).port;
  const killed = performance.now();
  await stopProcess(bulwark.child, 'SIGKILL');
  await until((r) => onlineCount(r) === 0);
  const restarted = performance.now();
  bulwark = await startServerProcess(dataDir, port);
  const listening = performance.now();
  await until((r) => onlineCount(r) === AGENTS);
  const allBack = performance.now();
  const outcomes = await handshakeOutcomes(bulwark.url);
  const stormSeconds = (allBack - listening) / 1000;
  lines.push(
    `reconnect storm: SIGKILL with ${fmt(AGENTS)} online; restarted in ${((listening - restarted) / 1000).toFixed(1)} s; all online again ${stormSeconds.toFixed(1)} s after it listened (${((allBack - killed) / 1000).toFixed(1)} s after the kill); handshakes on the new server: ${JSON.stringify(outcomes)}; failed attempts ${(() => {
      const last = simulator.latest();
      return last.type === 'online' ? fmt(last.failures) : '?';
    })()}`,
  );

  const ratio = perConnection / barePerConnection;
  const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');
  process.stdout.write(
    [
      `machine: ${machine()}`,
      `${fmt(AGENTS)} agents in one simulator process over loopback; heartbeat every 15 s (the default)`,
      ...lines,
      `goal RSS under 1 GiB with ${fmt(AGENTS)} agents:      ${mib(Math.max(after, steadyRss))}  ${verdict(Math.max(after, steadyRss) < GOALS.rssBytes)}`,
      perConnection > 0 && barePerConnection > 0
        ? `goal per-connection memory <= 2.5x bare ws:  ${ratio.toFixed(2)}x  ${verdict(ratio <= GOALS.perConnectionRatio)}`
        : 'goal per-connection memory <= 2.5x bare ws:  not measurable (growth within the noise at this fleet size)',
      `goal steady state under 15% of one core:     ${(cpuShare * 100).toFixed(1)}%  ${verdict(cpuShare < GOALS.cpuShare)}`,
      `goal all back online within 60 s:            ${stormSeconds.toFixed(1)} s  ${verdict(stormSeconds <= GOALS.storm)}`,
      '',
    ].join('\n'),
  );
} finally {
  simulator.stop();
  if (bulwark) await stopProcess(bulwark.child, 'SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}
