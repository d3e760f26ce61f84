/**
 * bench/fleet on one instance: `bulwark serve` on SQLite, the fleet in one simulator process, a bare
 * `ws` server as the baseline (fleet.bench.ts describes the method).
 *
 * With `extrapolateTo`, the fleet is the most one process can hold here (its open-files limit) and
 * the figures are also carried to the larger fleet: memory as the steady resident set plus the
 * measured growth per agent for every further agent, CPU in proportion to the agents (heartbeats are
 * the steady work; the idle process's own share is scaled too, which overstates it slightly).
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
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
import { cpuSeconds, kib, machineLoad, mib, percent, rssBytes, watchMachine } from './process-stats.js';

export interface SingleFleetOptions {
  agents: number;
  steadySeconds: number;
  /** The fleet the goals are set for, when it is larger than `agents`: figures are extrapolated to it. */
  extrapolateTo?: { agents: number; rssBytes: number; cpuShare: number; why: string };
}

const SETTLE_SECONDS = 5; // after the last connection, before memory is read: in-flight work ends
const GOALS = { rssBytes: 1024 ** 3, perConnectionRatio: 2.5, cpuShare: 0.15, storm: 60 };

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');

export async function runSingleFleet(options: SingleFleetOptions): Promise<void> {
  const { agents: AGENTS, steadySeconds: STEADY_SECONDS, extrapolateTo } = options;
  const simulator = startSimulator();
  const command = simulator.send;
  const until = simulator.until;

  const dataDir = mkdtempSync(path.join(tmpdir(), 'bulwark-fleet-'));
  const lines: string[] = [`load before the run: ${machineLoad()}`];
  const machineDuringRun = watchMachine();
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
    const machineSteady = watchMachine();
    await sleep(STEADY_SECONDS * 1000);
    const cpuShare = (cpuSeconds(bulwark.child.pid!) - cpuBefore) / STEADY_SECONDS;
    const steadyMachine = machineSteady.read();
    const steadyRss = rssBytes(bulwark.child.pid!);
    if (onlineCount(simulator.latest()) !== AGENTS)
      throw new Error(`agents dropped during the steady state: ${JSON.stringify(simulator.latest())}`);
    lines.push(
      `steady state over ${STEADY_SECONDS} s: ${percent(cpuShare)} of one core, RSS ${mib(steadyRss)} (whole machine ${percent(steadyMachine.busyShare)} busy)`,
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
      `reconnect storm: SIGKILL with ${fmt(AGENTS)} online; restarted in ${((listening - restarted) / 1000).toFixed(1)} s; all online again ${stormSeconds.toFixed(1)} s after it listened (${((allBack - killed) / 1000).toFixed(1)} s after the kill); handshakes on the new server: ${JSON.stringify(outcomes)}; failed attempts ${fmt(simulator.progress().failures)}`,
    );

    const ratio = perConnection / barePerConnection;
    const whole = machineDuringRun.read();
    process.stdout.write(
      [
        `machine: ${machine()}`,
        `${fmt(AGENTS)} agents in one simulator process over loopback; heartbeat every 15 s (the default)`,
        ...lines,
        `load after the run: ${machineLoad()}; whole machine ${percent(whole.busyShare)} busy over the run`,
        `goal RSS under 1 GiB with ${fmt(AGENTS)} agents:      ${mib(Math.max(after, steadyRss))}  ${verdict(Math.max(after, steadyRss) < GOALS.rssBytes)}`,
        perConnection > 0 && barePerConnection > 0
          ? `goal per-connection memory <= 2.5x bare ws:  ${ratio.toFixed(2)}x  ${verdict(ratio <= GOALS.perConnectionRatio)}`
          : 'goal per-connection memory <= 2.5x bare ws:  not measurable (growth within the noise at this fleet size)',
        `goal steady state under 15% of one core:     ${percent(cpuShare)}  ${verdict(cpuShare < GOALS.cpuShare)}`,
        `goal all back online within 60 s:            ${stormSeconds.toFixed(1)} s  ${verdict(stormSeconds <= GOALS.storm)}`,
        ...(extrapolateTo
          ? extrapolation(extrapolateTo, AGENTS, Math.max(after, steadyRss), perConnection, cpuShare)
          : []),
        '',
      ].join('\n'),
    );
  } finally {
    simulator.stop();
    if (bulwark) await stopProcess(bulwark.child, 'SIGTERM');
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The measured fleet's figures carried to the goal's fleet, said to be extrapolated on every line. */
function extrapolation(
  goal: NonNullable<SingleFleetOptions['extrapolateTo']>,
  measured: number,
  rss: number,
  perAgent: number,
  cpuShare: number,
): string[] {
  const rssAtGoal = rss + perAgent * (goal.agents - measured);
  const cpuAtGoal = (cpuShare * goal.agents) / measured;
  return [
    `extrapolated from ${fmt(measured)} to ${fmt(goal.agents)} agents (${goal.why}):`,
    `  RSS ${mib(rss)} + ${kib(perAgent)} x ${fmt(goal.agents - measured)} more agents = ${mib(rssAtGoal)}; CPU ${percent(cpuShare)} x ${fmt(goal.agents)}/${fmt(measured)} = ${percent(cpuAtGoal)} of one core`,
    `goal ${fmt(goal.agents)} agents under ${mib(goal.rssBytes)} RSS (extrapolated):         ${mib(rssAtGoal)}  ${verdict(rssAtGoal < goal.rssBytes)} (extrapolated)`,
    `goal ${fmt(goal.agents)} agents under ${percent(goal.cpuShare)} of one core (extrapolated): ${percent(cpuAtGoal)}  ${verdict(cpuAtGoal < goal.cpuShare)} (extrapolated)`,
  ];
}
