/**
 * bench/fleet on several instances: PostgreSQL + Redis, the instances as processes of their own
 * (`bulwark serve`), the fleet in several simulator processes reaching the instances
 * through a simulated load balancer (fleet.balancer.ts). fleet.bench.ts describes the method.
 *
 * The open-files limit of a process bounds every figure here: an instance holds at most that many
 * connections, a simulator process too. The fleet is the one asked for or the most the instances can
 * hold. The reconnect storm needs the survivors to hold the killed instance's agents on top of their
 * own, so when the whole fleet would not fit on them, agents are stopped for good first, evenly,
 * until it does; the storm line says how many.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { dispatchAcrossInstances, percentile, spread } from './cluster-dispatch.js';
import {
  backingProcesses,
  claimRedis,
  createBenchDatabase,
  type InstanceSettings,
  type SimulatorGroup,
  startInstance,
  startSimulators,
  within,
} from './cluster-support.js';
import { handshakeOutcomes, type ServerProcess, stopProcess } from './fleet-support.js';
import { fmt, machine, OWNER, registrationTokens, signIn } from './http-support.js';
import {
  connectionsPerProcess,
  cpuSeconds,
  kib,
  machineLoad,
  mib,
  openFilesLimit,
  percent,
  rssBytes,
  watchMachine,
} from './process-stats.js';

export interface ClusterFleetOptions {
  /** The fleet wanted; fewer if the instances cannot hold it under the open-files limit. */
  agents: number;
  instances: number;
  steadySeconds: number;
  /** Commands of each kind (across instances, same instance) in the dispatch measurement. */
  dispatchCommands: number;
  /** Commands per second, both kinds together. */
  dispatchRate: number;
}

const SETTLE_SECONDS = 5;
/** Agents per simulator process at most: well under the open-files limit, and the work spread out. */
const SIMULATOR_SHARE = 12_500;
/** What a survivor of the storm may be given, as a share of what one process can hold: a balancer
 * splits the killed instance's agents nearly, not exactly, evenly. */
const SURVIVOR_HEADROOM = 0.95;
const STORM_GOAL_SECONDS = 60;
/** A phase that has not ended by then will not: the run stops (and cleans up) rather than hang. */
const DEADLINE_SECONDS = 600;

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');

/** Handshake outcomes of several instances, added up. */
const sumOutcomes = (all: Array<Record<string, number>>) => {
  const total: Record<string, number> = {};
  for (const outcomes of all) {
    for (const [outcome, n] of Object.entries(outcomes)) total[outcome] = (total[outcome] ?? 0) + n;
  }
  return total;
};

/** A process's CPU seconds, or undefined once it is gone (a pooled database connection may close). */
const cpuSecondsIfAlive = (pid: number) => {
  try {
    return cpuSeconds(pid);
  } catch {
    return undefined;
  }
};

/** The share of one core `pids` used over `seconds`, counting those alive at both ends. */
const cpuSharesSince = (pids: number[], before: Map<number, number | undefined>, seconds: number) =>
  pids.reduce((sum, pid) => {
    const start = before.get(pid);
    const end = cpuSecondsIfAlive(pid);
    return start === undefined || end === undefined ? sum : sum + (end - start) / seconds;
  }, 0);

/** `total` split into `parts` consecutive ranges, as even as can be. */
const split = (total: number, parts: number) =>
  Array.from({ length: parts }, (_, i) => {
    const first = Math.floor((total * i) / parts);
    return { first, count: Math.floor((total * (i + 1)) / parts) - first };
  });

/** The memory baseline: a bare ws server holding `count` idle connections from one simulator. */
async function bareBaseline(
  simulators: SimulatorGroup,
  count: number,
): Promise<{ line: string; perConnection: number }> {
  const simulator = simulators.members[0]!;
  const bare = fork(here('./fleet.bare-ws.ts'), [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  const [{ port }] = (await once(bare, 'message')) as [{ port: number }];
  await sleep(1000);
  const before = rssBytes(bare.pid!);
  simulator.send({ cmd: 'connect', url: `ws://127.0.0.1:${port}`, mode: 'bare', count });
  await simulator.until((r) => r.type === 'online' && r.count === count);
  await sleep(SETTLE_SECONDS * 1000);
  const after = rssBytes(bare.pid!);
  bare.send('close');
  await once(bare, 'exit');
  simulator.send({ cmd: 'disconnect' });
  await simulator.until((r) => r.type === 'disconnected');
  const perConnection = (after - before) / count;
  return {
    line: `bare ws:  ${fmt(count)} idle connections (one instance's share): RSS ${mib(before)} -> ${mib(after)}, ${kib(perConnection)} per connection`,
    perConnection,
  };
}

export async function runClusterFleet(options: ClusterFleetOptions): Promise<void> {
  const perProcess = connectionsPerProcess();
  const agents = Math.min(options.agents, perProcess * options.instances);
  const perInstance = Math.ceil(agents / options.instances);
  const simulatorCount = Math.ceil(agents / Math.min(perProcess, SIMULATOR_SHARE));
  const shares = split(agents, simulatorCount);
  const survivorCapacity = Math.floor((perProcess * SURVIVOR_HEADROOM) / 1000) * 1000;
  const keepPerUrl = Math.floor(
    (survivorCapacity * (options.instances - 1)) / options.instances / simulatorCount,
  );
  const stormFleet = Math.min(agents, keepPerUrl * options.instances * simulatorCount);
  const limit = openFilesLimit();

  const redis = await claimRedis();
  const database = await createBenchDatabase();
  const dir = mkdtempSync(path.join(tmpdir(), 'bulwark-fleet-cluster-'));
  const masterKey = randomBytes(32).toString('base64');
  const simulators = startSimulators(simulatorCount);
  const instances: Array<ServerProcess | undefined> = [];
  const ports: string[] = [];
  const settings = (i: number): InstanceSettings => ({
    dataDir: path.join(dir, `instance-${i + 1}`),
    port: ports[i] ?? '0',
    databaseUrl: database.url,
    redisUrl: redis.url,
    prefix: redis.prefix,
    masterKey,
  });
  const pidOf = (i: number) => instances[i]!.child.pid!;
  const name = (i: number) => `instance ${i + 1}`;
  const lines: string[] = [
    `open files per process: ${limit.soft} (soft), ${limit.hard} (hard): at most ${fmt(perProcess)} connections per process`,
    `${fmt(agents)} agents in ${simulatorCount} simulator processes, ${options.instances} instances on PostgreSQL ${database.version} + Redis (${redis.url}, prefix ${redis.prefix}); each agent reaches the instances through a round-robin balancer; heartbeat every 15 s (the default)`,
    `load before the run: ${machineLoad()}`,
  ];
  const machineDuringRun = watchMachine();
  try {
    // 1. The baseline: a bare ws server holding one instance's share of idle connections.
    const bare = await bareBaseline(simulators, perInstance);
    lines.push(bare.line);

    // 2. The instances: the first migrates and creates the owner, the others find them.
    for (let i = 0; i < options.instances; i++) {
      instances[i] = await startInstance(settings(i));
      ports[i] = new URL(instances[i]!.url).port;
    }
    const urls = instances.map((instance) => instance!.url);
    const owner = await signIn(urls[0]!, OWNER.email, OWNER.password);
    const tokens = await registrationTokens(urls[0]!, owner, agents);
    const registerStarted = performance.now();
    await simulators.ask('registered', (m) => ({
      cmd: 'register',
      url: urls[m % urls.length]!,
      tokens,
      count: shares[m]!.count,
      first: shares[m]!.first,
    }));
    const registerSeconds = (performance.now() - registerStarted) / 1000;
    lines.push(
      `registered ${fmt(agents)} agents in ${registerSeconds.toFixed(1)} s (${fmt(agents / registerSeconds)}/s), through all instances`,
    );

    // 3. Fresh instances for the memory figures (the garbage of the registrations left behind), then
    // the whole fleet at once, each agent through the balancer.
    for (let i = 0; i < options.instances; i++) await stopProcess(instances[i]!.child, 'SIGTERM');
    for (let i = 0; i < options.instances; i++) instances[i] = await startInstance(settings(i));
    await sleep(SETTLE_SECONDS * 1000);
    const before = urls.map((_, i) => rssBytes(pidOf(i)));
    const connectStarted = performance.now();
    simulators.each((m) => ({ cmd: 'connect', url: urls, mode: 'bulwark', count: shares[m]!.count }));
    await within(
      simulators.until((fleet) => fleet.count === agents),
      DEADLINE_SECONDS,
      'the fleet coming online',
    );
    const connectSeconds = (performance.now() - connectStarted) / 1000;
    await sleep(SETTLE_SECONDS * 1000);
    const after = urls.map((_, i) => rssBytes(pidOf(i)));
    const held = urls.map((url) => simulators.progress().byUrl[url] ?? 0);
    const connectOutcomes = sumOutcomes(await Promise.all(urls.map((url) => handshakeOutcomes(url))));
    lines.push(
      `all ${fmt(agents)} online in ${connectSeconds.toFixed(1)} s (${fmt(agents / connectSeconds)}/s; handshake, proof, report each), ${fmt(simulators.progress().failures)} failed attempts; handshakes ${JSON.stringify(connectOutcomes)}; held ${held.map(fmt).join(' / ')}`,
    );
    urls.forEach((_, i) => {
      const perConnection = (after[i]! - before[i]!) / held[i]!;
      lines.push(
        `  ${name(i)}: RSS ${mib(before[i]!)} -> ${mib(after[i]!)}, ${kib(perConnection)} per connection (${(perConnection / bare.perConnection).toFixed(2)}x bare ws)`,
      );
    });

    // 4. Steady state: heartbeats only.
    const cpuBefore = urls.map((_, i) => cpuSeconds(pidOf(i)));
    const simulatorCpuBefore = simulators.members.map((member) => cpuSeconds(member.pid));
    const backing = await backingProcesses(database.url, redis.url);
    const backingPids = [...backing.postgres, backing.redis];
    const backingCpuBefore = new Map(backingPids.map((pid) => [pid, cpuSecondsIfAlive(pid)]));
    const machineSteady = watchMachine();
    await sleep(options.steadySeconds * 1000);
    const cpuShares = urls.map((_, i) => (cpuSeconds(pidOf(i)) - cpuBefore[i]!) / options.steadySeconds);
    const simulatorCpu =
      simulators.members.reduce(
        (sum, member, m) => sum + cpuSeconds(member.pid) - simulatorCpuBefore[m]!,
        0,
      ) / options.steadySeconds;
    const postgresCpu = cpuSharesSince(backing.postgres, backingCpuBefore, options.steadySeconds);
    const redisCpu = cpuSharesSince([backing.redis], backingCpuBefore, options.steadySeconds);
    const steadyMachine = machineSteady.read();
    const steadyRss = urls.map((_, i) => rssBytes(pidOf(i)));
    if (simulators.progress().count !== agents)
      throw new Error(`agents dropped during the steady state: ${JSON.stringify(simulators.progress())}`);
    lines.push(`steady state over ${options.steadySeconds} s:`);
    for (let i = 0; i < urls.length; i++) {
      lines.push(
        `  ${name(i)}: ${percent(cpuShares[i]!)} of one core, RSS ${mib(steadyRss[i]!)} (${fmt(held[i]!)} agents)`,
      );
    }
    lines.push(
      `  all instances: ${percent(cpuShares.reduce((a, b) => a + b, 0))} of one core, RSS ${mib(steadyRss.reduce((a, b) => a + b, 0))}; PostgreSQL (the ${backing.postgres.length} backends of this database) ${percent(postgresCpu)}; Redis (the whole server) ${percent(redisCpu)}; the simulators ${percent(simulatorCpu)}; whole machine ${percent(steadyMachine.busyShare)} of its cores busy (load ${steadyMachine.load})`,
    );

    // 5. Dispatch across instances, beside dispatch on the agent's own instance.
    const samples = await simulators.ask('sample', () => ({ cmd: 'sample', perUrl: 50 }));
    const heldBy = urls.map((url) => samples.flatMap((sample) => sample.byUrl[url] ?? []));
    const dispatch = await dispatchAcrossInstances({
      urls,
      session: owner,
      heldBy,
      count: options.dispatchCommands,
      rate: options.dispatchRate,
    });
    lines.push(
      `dispatch, ${options.dispatchRate} commands/s with ${fmt(agents)} agents online, server timestamps in whole ms (${dispatch.notSucceeded} not succeeded):`,
      `  created on another instance than the agent's: create -> running ${spread(dispatch.cross)} (${dispatch.cross.length} commands)`,
      `  created on the agent's own instance (baseline): create -> running ${spread(dispatch.same)} (${dispatch.same.length} commands)`,
    );

    // 6. The reconnect storm: kill one instance; its agents go to the others through the balancer.
    let retiredNote = '';
    if (stormFleet < agents) {
      const retired = await simulators.ask('retired', () => ({ cmd: 'retire', keepPerUrl }));
      await simulators.until((fleet) => fleet.count === stormFleet);
      await sleep(SETTLE_SECONDS * 1000);
      retiredNote = `${fmt(retired.reduce((sum, r) => sum + r.count, 0))} agents stopped first, so that ${options.instances - 1} instances can hold the rest (${fmt(survivorCapacity)} each at most here); `;
    }
    const victim = options.instances - 1;
    const victimUrl = urls[victim]!;
    const survivors = urls.filter((url) => url !== victimUrl);
    const outcomesBefore = sumOutcomes(await Promise.all(survivors.map((url) => handshakeOutcomes(url))));
    const start = simulators.progress();
    const victimHeld = start.byUrl[victimUrl] ?? 0;
    const killed = performance.now();
    const machineStorm = watchMachine();
    await stopProcess(instances[victim]!.child, 'SIGKILL');
    instances[victim] = undefined;
    const back = await within(
      simulators.until((fleet) => fleet.count === stormFleet && !fleet.byUrl[victimUrl]),
      DEADLINE_SECONDS,
      'the reconnect storm',
    );
    const stormSeconds = (performance.now() - killed) / 1000;
    const stormMachine = machineStorm.read();
    const outcomesAfter = sumOutcomes(await Promise.all(survivors.map((url) => handshakeOutcomes(url))));
    const stormOutcomes = Object.fromEntries(
      Object.entries(outcomesAfter).map(([outcome, n]) => [outcome, n - (outcomesBefore[outcome] ?? 0)]),
    );
    lines.push(
      `reconnect storm: ${retiredNote}SIGKILL ${name(victim)} holding ${fmt(victimHeld)} of ${fmt(stormFleet)} online; all ${fmt(stormFleet)} online again ${stormSeconds.toFixed(1)} s after the kill, held ${survivors.map((url) => fmt(back.byUrl[url] ?? 0)).join(' / ')}; failed attempts ${fmt(back.failures - start.failures)}; refused by the killed instance and passed on by the balancer ${fmt(back.passedOn - start.passedOn)}; whole machine ${percent(stormMachine.busyShare)} busy meanwhile`,
      `  handshakes on the survivors during the storm: ${JSON.stringify(stormOutcomes)}`,
    );

    const whole = machineDuringRun.read();
    const crossP99 = percentile(dispatch.cross, 99);
    process.stdout.write(
      [
        `machine: ${machine()}`,
        ...lines,
        `load after the run: ${machineLoad()}; whole machine ${percent(whole.busyShare)} busy over the run`,
        `dispatch p99 across instances / same instance: ${crossP99} ms / ${percentile(dispatch.same, 99)} ms`,
        `goal all back online within ${STORM_GOAL_SECONDS} s (the goal set for one instance): ${stormSeconds.toFixed(1)} s  ${verdict(stormSeconds <= STORM_GOAL_SECONDS)}`,
        '',
      ].join('\n'),
    );
  } finally {
    simulators.stop();
    for (const instance of instances) if (instance) await stopProcess(instance.child, 'SIGTERM');
    await database.drop();
    await redis.clean();
    rmSync(dir, { recursive: true, force: true });
  }
}
