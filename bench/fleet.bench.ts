/**
 * fleet: a simulated fleet of agents against the real server, over loopback.
 *
 * `npm run bench -- fleet` (one instance, 10,000 agents), `npm run bench -- fleet --single-max` (one
 * instance, as many agents as one process may hold, up to 50,000) and `npm run bench -- fleet
 * --cluster` (three instances, 50,000 agents). BENCH_AGENTS and BENCH_SECONDS change the fleet and
 * the steady-state window.
 *
 * One instance (fleet-single.ts): `bulwark serve` from the build output, SQLite in a temporary
 * directory, logs at info into a pipe this process drains. The fleet runs in another process
 * (fleet.simulator.ts): real registrations, real handshakes (both proofs), one service report each,
 * heartbeats at the server's interval (15 s by default), and the agent's own backoff. The baseline
 * is a bare `ws` server in a third process holding the same number of idle connections from the
 * same simulator.
 *
 * Memory is the resident set of the server process (/proc/<pid>/status), CPU its user+system time
 * (/proc/<pid>/stat) over a steady-state window. Per-connection memory is the growth of the resident
 * set from before the connections to after them, divided by their number, for both servers.
 *
 * The reconnect storm kills the server (SIGKILL) with the whole fleet online, starts it again on the
 * same data and port, and times until every agent is online again.
 *
 * Goals: 10,000 agents under 1 GiB RSS; per-connection memory <= 2.5x bare ws; steady state under 15%
 * of one core; all back online within 60 s of the restart. With --single-max: 50,000 agents under
 * 1 GiB and 25% of one core, extrapolated from the fleet one process can hold when that is fewer.
 *
 * Several instances (fleet-cluster.ts, --cluster): the same server on PostgreSQL + Redis, three
 * instances sharing one database and one master key, the fleet in several simulator processes
 * reaching them through a simulated round-robin balancer. It measures the time to bring the fleet
 * online, each instance's memory and steady-state CPU, dispatch from one instance's API to agents
 * held by another beside dispatch on the agent's own instance, and the reconnect storm after one
 * instance is killed, its agents reconnecting to the others.
 */
import { runClusterFleet } from './fleet-cluster.js';
import { runSingleFleet } from './fleet-single.js';
import { connectionsPerProcess } from './process-stats.js';

const GOAL_AGENTS = 50_000;
const mode = process.argv.slice(2);
const steadySeconds = Number(process.env.BENCH_SECONDS ?? 30);
const askedAgents = process.env.BENCH_AGENTS ? Number(process.env.BENCH_AGENTS) : undefined;

if (mode.includes('--cluster')) {
  await runClusterFleet({
    agents: askedAgents ?? GOAL_AGENTS,
    instances: 3,
    steadySeconds,
    dispatchCommands: 300,
    dispatchRate: 20,
  });
} else if (mode.includes('--single-max')) {
  // One process holds one socket per agent: the most it can hold here is set by its open-files limit.
  const agents = askedAgents ?? Math.min(GOAL_AGENTS, connectionsPerProcess());
  await runSingleFleet({
    agents,
    steadySeconds,
    ...(agents < GOAL_AGENTS
      ? {
          extrapolateTo: {
            agents: GOAL_AGENTS,
            rssBytes: 1024 ** 3,
            cpuShare: 0.25,
            why: 'the open-files limit stops one process short of it',
          },
        }
      : {}),
  });
} else if (mode.length > 0) {
  process.stderr.write(`fleet: unknown option(s) ${mode.join(' ')}; use --single-max or --cluster\n`);
  process.exit(2);
} else {
  await runSingleFleet({ agents: askedAgents ?? 10_000, steadySeconds });
}
