/**
 * api-read: throughput of authenticated, authorized list requests (session cookie) against the real
 * server, beside a bare Fastify hello-world measured in the same run with the same autocannon
 * settings. The Bulwark requests go through everything a console read does: security headers,
 * request id, JSON logs, metrics, the read rate limit, the session lookup, the organization's access
 * snapshot and the decision, the queries, and the response re-parsed through its schema.
 *
 * Three lists: the members (21, in two teams); the first page of agents (50) with 100 agents
 * registered; the same page with 10,000 registered (issue #4: a list must not slow down as the
 * fleet grows). Each is measured bare, Bulwark, Bulwark, bare, so that drift of the machine weighs on
 * both sides alike; each ratio is over the pooled requests of its own pairs. Each also prints its
 * ceiling: the request's database reads alone, through the same stores, plus bare's own time. That
 * is the ceiling of a request that reads the database; on SQLite, Bulwark reuses those reads while
 * nothing has been written (db/read-cache.ts), so in the steady state measured here it is above it.
 *
 * Goal (issues #3, #4): Bulwark >= 40% of the bare throughput.
 */

import { fork } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { type ListRead, listReadFloor } from './api-read.floor.js';
import type { SimulatorCommand, SimulatorReport } from './fleet.simulator.js';
import {
  addMember,
  fmt,
  type Measured,
  machine,
  measure,
  OWNER,
  registrationTokens,
  type Session,
  send,
  signIn,
  startBulwark,
  statusCount,
} from './http-support.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP_SECONDS = 3;
const CONNECTIONS = 10;
const MEMBERS = 20; // invited viewers, beside the owner
const FLEETS = [100, 10_000];
const GOAL = 0.4;
const autocannonVersion = (createRequire(import.meta.url)('autocannon/package.json') as { version: string })
  .version;

const bulwark = await startBulwark({
  // The most the setting allows (per client per minute): the limiter still runs, but never refuses here.
  BULWARK_RATE_LIMIT_READ_PER_MINUTE: '1000000',
  // Only for the setup below (invitations, their acceptance, agent registrations), not the measured path.
  BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '10000',
  BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000000',
});
const bare = Fastify({ logger: false });
bare.get('/', async () => ({ hello: 'world' }));
await bare.listen({ host: '127.0.0.1', port: 0 });
const bareTarget = { url: `http://127.0.0.1:${(bare.server.address() as AddressInfo).port}/` };
const settings = { connections: CONNECTIONS, pipelining: 1 };

/** Measures one Bulwark list against bare, in the order bare, Bulwark, Bulwark, bare; returns its lines. */
async function compare(
  name: string,
  url: string,
  cookie: string,
  floor: { queries: number; microseconds: number },
) {
  const target = { url, headers: { cookie } };
  await measure({ ...bareTarget, ...settings, duration: WARMUP_SECONDS });
  await measure({ ...target, ...settings, duration: WARMUP_SECONDS });
  const runs: Array<{ side: 'bare' | 'bulwark'; measured: Measured }> = [];
  for (const side of ['bare', 'bulwark', 'bulwark', 'bare'] as const) {
    const measured = await measure({
      ...(side === 'bare' ? bareTarget : target),
      ...settings,
      duration: SECONDS,
    });
    const { result } = measured;
    // A refused, failed or timed-out request would make the figure meaningless, not just lower.
    if (result.errors > 0 || result.timeouts > 0 || result.non2xx > 0) {
      throw new Error(
        `${side} run is not clean: ${result.errors} errors, ${result.timeouts} timeouts, non-2xx ${JSON.stringify(result.statusCodeStats)}`,
      );
    }
    runs.push({ side, measured });
  }
  const line = (label: string, side: 'bare' | 'bulwark') => {
    const mine = runs.filter((run) => run.side === side);
    const requests = mine.reduce((sum, run) => sum + statusCount(run.measured.result, 200), 0);
    const seconds = mine.reduce((sum, run) => sum + run.measured.result.duration, 0);
    const perRun = mine
      .map(
        ({ measured: { result, serverLoopBusy } }) =>
          `${fmt(statusCount(result, 200) / result.duration)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, server loop ${Math.round(serverLoopBusy * 100)}% busy`,
      )
      .join('; ');
    return {
      rate: requests / seconds,
      text: `${label.padEnd(28)}${fmt(requests / seconds).padStart(7)} req/s  (runs: ${perRun})`,
    };
  };
  const bareLine = line('  bare Fastify hello-world:', 'bare');
  const bulwarkLine = line(`  Bulwark ${name}:`, 'bulwark');
  const ratio = bulwarkLine.rate / bareLine.rate;
  const ceiling = 1 / (1 / bareLine.rate + floor.microseconds / 1e6);
  return {
    ratio,
    lines: [
      bareLine.text,
      bulwarkLine.text,
      `  ratio Bulwark/bare:        ${ratio.toFixed(2)}   (goal >= ${GOAL.toFixed(2)}: ${ratio >= GOAL ? 'PASS' : 'MISS'})`,
      `  the request's database reads alone (${floor.queries} queries, same stores, same file, no HTTP): ${floor.microseconds.toFixed(0)} us;`,
      `  with everything else free, a request that reads them peaks at ${fmt(ceiling)} req/s = ${(ceiling / bareLine.rate).toFixed(2)} of bare (Bulwark reuses them until a write)`,
    ],
  };
}

/** Registers `count` agents through the real registration API, from the fleet simulator's process. */
async function registerFleet(owner: Session, count: number): Promise<void> {
  const simulator = fork(fileURLToPath(new URL('./fleet.simulator.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    stdio: 'inherit',
  });
  try {
    const tokens = await registrationTokens(bulwark.url, owner, count);
    simulator.send({ cmd: 'register', url: bulwark.url, tokens, count } satisfies SimulatorCommand);
    const [report] = (await once(simulator, 'message')) as [SimulatorReport];
    if (report.type !== 'registered')
      throw new Error(`registering the fleet failed: ${JSON.stringify(report)}`);
  } finally {
    simulator.kill();
  }
}

try {
  // A realistic members list: the owner and 20 viewers, in two teams.
  const slug = 'default';
  const owner = await signIn(bulwark.url, OWNER.email, OWNER.password);
  const teams = await Promise.all(
    ['Platform', 'Payments'].map((name) =>
      send<{ id: string }>(bulwark.url, owner, 'POST', `/api/orgs/${slug}/teams`, { name }),
    ),
  );
  for (let i = 0; i < MEMBERS; i++) {
    const userId = await addMember(
      bulwark.url,
      owner,
      slug,
      `member${String(i).padStart(2, '0')}@bench.test`,
    );
    const team = teams[i % teams.length]!;
    await send(bulwark.url, owner, 'PUT', `/api/orgs/${slug}/teams/${team.id}/members/${userId}`);
  }
  // A fresh session of the owner for the measured requests.
  const session = await signIn(bulwark.url, OWNER.email, OWNER.password);
  const sessionToken = session.cookie.slice(session.cookie.indexOf('=') + 1);
  const { user } = (await (
    await fetch(`${bulwark.url}/api/auth/session`, { headers: { cookie: session.cookie } })
  ).json()) as { user: { id: string } };
  const read: ListRead = { databaseFile: bulwark.databaseFile, sessionToken, userId: user.id, slug };

  /** The list's size and JSON size, checked before it is measured. */
  async function check(url: string, key: 'members' | 'agents', expected: number) {
    const response = await fetch(url, { headers: { cookie: session.cookie } });
    const text = await response.text();
    const count = (JSON.parse(text) as Record<string, unknown[] | undefined>)[key]?.length;
    if (response.status !== 200 || count !== expected)
      throw new Error(`${url} answered ${response.status} with ${count} ${key}`);
    return `${count} ${key}, ${fmt(Buffer.byteLength(text))} bytes of JSON`;
  }

  const sections: string[] = [];
  const ratios: number[] = [];
  const membersUrl = `${bulwark.url}/api/orgs/${slug}/members`;
  const membersShape = await check(membersUrl, 'members', MEMBERS + 1);
  const members = await compare(
    'GET members',
    membersUrl,
    session.cookie,
    await listReadFloor(read, 'members'),
  );
  sections.push(`members list (${membersShape} in ${teams.length} teams):`, ...members.lines);
  ratios.push(members.ratio);

  let registered = 0;
  for (const fleet of FLEETS) {
    await registerFleet(owner, fleet - registered);
    registered = fleet;
    const agentsUrl = `${bulwark.url}/api/orgs/${slug}/agents`;
    const shape = await check(agentsUrl, 'agents', 50);
    const agents = await compare(
      'GET agents',
      agentsUrl,
      session.cookie,
      await listReadFloor(read, 'agents'),
    );
    sections.push(`first page of agents with ${fmt(fleet)} registered (${shape}):`, ...agents.lines);
    ratios.push(agents.ratio);
  }

  process.stdout.write(
    [
      `machine: ${machine()}`,
      `autocannon ${autocannonVersion} on its own thread: ${CONNECTIONS} connections, pipelining 1, ${SECONDS} s per run after a ${WARMUP_SECONDS} s warm-up each; order bare, Bulwark, Bulwark, bare for each list`,
      `Bulwark logs at info (${fmt(bulwark.logLines())} lines written)`,
      ...sections,
      `goal: every list >= ${GOAL.toFixed(2)} of bare: ${ratios.every((r) => r >= GOAL) ? 'PASS' : 'MISS'} (worst ${Math.min(...ratios).toFixed(2)})`,
      '',
    ].join('\n'),
  );
} finally {
  await bare.close();
  await bulwark.close();
}
