/**
 * dispatch: how fast a command reaches its agent and comes back (issue #5).
 *
 * The server runs as `bulwark serve` (build output, SQLite, logs at info). The agents are the fleet
 * simulator's (fleet.simulator.ts): real registrations and handshakes. A simulated agent checks
 * every command as the agent does (signature against the pinned key, target, expiry), then reports
 * it started and succeeded at once. That is the trivial action: what is measured is the control
 * plane's path, including:
 * - the validation and authorization of the request;
 * - the command row, the audit events and the signature;
 * - the delivery over the agent's WebSocket;
 * - the agent's two reports, each a guarded transition and an audit event.
 *
 * Latency is taken from the server's own timestamps (created_at, started_at, finished_at; whole
 * milliseconds). The client sends a steady 100 commands per second to 10 agents through the HTTP
 * API, as an operator's scripts would. The baseline, in the same run, is a bare `ws` echo round
 * trip at the same rate: the least a message to an agent and back can cost here.
 *
 * The fan-out: 1,000 connected agents, one command each, created as fast as the API takes them; the
 * time from the first request to the last agent running.
 *
 * The bulk run (CMD-8): the same 1,000 agents picked by a label selector in one request, run with a
 * concurrency of 100% and then of 10%. Timed from the request to the run's end (every target
 * succeeded, the run closed); the fan-out above is its same-run baseline.
 *
 * Goals: p99 create→running < 25 ms; 1,000 agents all running within 2 s.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import {
  onlineCount,
  type ServerProcess,
  startServerProcess,
  startSimulator,
  stopProcess,
} from './fleet-support.js';
import { fmt, machine, OWNER, registrationTokens, type Session, send, signIn } from './http-support.js';

const RATE = 100;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const STEADY_AGENTS = 10;
const FANOUT_AGENTS = 1000;
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 50);
const GOALS = { runningP99Ms: 25, fanoutMs: 2000 };

interface CommandView {
  id: string;
  agentId: string;
  status: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
};
const spread = (values: number[]) =>
  `p50 ${percentile(values, 50).toFixed(1)} ms, p99 ${percentile(values, 99).toFixed(1)} ms, max ${Math.max(...values).toFixed(1)} ms`;

/** The agent ids the server lists, up to `count`, in id order. */
async function agentIds(url: string, session: Session, count: number): Promise<string[]> {
  const ids: string[] = [];
  let after: string | null = null;
  while (ids.length < count) {
    const query: string = `limit=200${after ? `&after=${after}` : ''}`;
    const page = (await (
      await fetch(`${url}/api/orgs/default/agents?${query}`, { headers: { cookie: session.cookie } })
    ).json()) as { agents: Array<{ id: string; status: string }>; next: string | null };
    ids.push(...page.agents.filter((a) => a.status === 'online').map((a) => a.id));
    if (!page.next) break;
    after = page.next;
  }
  return ids.slice(0, count);
}

const create = (url: string, session: Session, agent: string) =>
  send<CommandView>(url, session, 'POST', '/api/orgs/default/commands', {
    agent,
    service: 'app',
    action: 'restart',
    confirm: true,
  });

interface BulkRunView {
  id: string;
  status: string;
  counts: Record<string, number>;
  createdAt: string;
  finishedAt: string | null;
}

/** One bulk run over the whole fleet; its duration from the request to the run's end. */
async function bulkRun(url: string, session: Session, maxConcurrency: string) {
  const started = Date.now();
  let run = await send<BulkRunView>(url, session, 'POST', '/api/orgs/default/bulk-runs', {
    selector: 'fleet=bench',
    service: 'app',
    action: 'restart',
    confirm: true,
    maxConcurrency,
    maxErrors: '0',
  });
  while (!run.finishedAt) {
    await sleep(20);
    run = (await (
      await fetch(`${url}/api/orgs/default/bulk-runs/${run.id}`, { headers: { cookie: session.cookie } })
    ).json()) as BulkRunView;
  }
  return { run, ms: Date.parse(run.finishedAt) - started };
}

async function finalViews(url: string, session: Session, ids: string[]): Promise<CommandView[]> {
  const views: CommandView[] = [];
  for (const id of ids) {
    for (;;) {
      const view = (await (
        await fetch(`${url}/api/orgs/default/commands/${id}`, { headers: { cookie: session.cookie } })
      ).json()) as CommandView;
      if (view.finishedAt) {
        views.push(view);
        break;
      }
      await sleep(20);
    }
  }
  return views;
}

/** The baseline: a bare ws echo server in its own process, pinged at the same steady rate. */
async function bareRoundTrips(count: number): Promise<number[]> {
  const bare = fork(fileURLToPath(new URL('./dispatch.bare-echo.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    stdio: 'inherit',
  });
  const [{ port }] = (await once(bare, 'message')) as [{ port: number }];
  const socket = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await once(socket, 'open');
  const sentAt = new Map<number, number>();
  const trips: number[] = [];
  const done = new Promise<void>((resolve) => {
    socket.on('message', (data) => {
      const { n } = JSON.parse(data.toString()) as { n: number };
      trips.push(performance.now() - sentAt.get(n)!);
      if (trips.length === count) resolve();
    });
  });
  for (let n = 0; n < count; n++) {
    sentAt.set(n, performance.now());
    socket.send(JSON.stringify({ n, type: 'command', padding: 'x'.repeat(600) }));
    await sleep(1000 / RATE);
  }
  await done;
  socket.close();
  bare.kill();
  return trips;
}

const dataDir = mkdtempSync(path.join(tmpdir(), 'bulwark-dispatch-'));
const simulator = startSimulator();
let server: ServerProcess | undefined;
try {
  const bare = await bareRoundTrips(RATE * SECONDS);

  server = await startServerProcess(dataDir, '0');
  const owner = await signIn(server.url, OWNER.email, OWNER.password);
  const tokens = await registrationTokens(server.url, owner, FANOUT_AGENTS);
  simulator.send({ cmd: 'register', url: server.url, tokens, count: FANOUT_AGENTS });
  await simulator.until((r) => r.type === 'registered');
  simulator.reset();
  simulator.send({ cmd: 'connect', url: server.url, mode: 'bulwark', count: FANOUT_AGENTS });
  await simulator.until((r) => onlineCount(r) === FANOUT_AGENTS);
  await sleep(2000); // the agents' first reports reach the server before any command names them
  const agents = await agentIds(server.url, owner, FANOUT_AGENTS);
  if (agents.length !== FANOUT_AGENTS) throw new Error(`only ${agents.length} agents are listed online`);

  // 1. A steady 100 commands per second to 10 agents.
  const steadyIds: string[] = [];
  const pending: Array<Promise<void>> = [];
  const started = performance.now();
  for (let n = 0; n < RATE * SECONDS; n++) {
    const due = started + (n * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    pending.push(
      create(server.url, owner, agents[n % STEADY_AGENTS]!).then((view) => void steadyIds.push(view.id)),
    );
  }
  await Promise.all(pending);
  const steady = await finalViews(server.url, owner, steadyIds);
  const toRunning = steady.map((v) => Date.parse(v.startedAt!) - Date.parse(v.createdAt));
  const toDone = steady.map((v) => Date.parse(v.finishedAt!) - Date.parse(v.createdAt));
  const failed = steady.filter((v) => v.status !== 'succeeded').length;

  // 2. One command to each of 1,000 agents, as fast as the API takes them.
  const fanoutStarted = Date.now();
  const fanoutIds: string[] = [];
  const queue = [...agents];
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      for (let agent = queue.shift(); agent; agent = queue.shift())
        fanoutIds.push((await create(server!.url, owner, agent)).id);
    }),
  );
  const fanout = await finalViews(server.url, owner, fanoutIds);
  const lastRunning = Math.max(...fanout.map((v) => Date.parse(v.startedAt!)));
  const fanoutMs = lastRunning - fanoutStarted;

  // 3. The same fleet in one bulk run, all at once and then a tenth at a time.
  const bulkAll = await bulkRun(server.url, owner, '100%');
  const bulkTenth = await bulkRun(server.url, owner, '10%');
  const bulkLine = (label: string, result: Awaited<ReturnType<typeof bulkRun>>) =>
    `bulk run, ${label}: ${result.run.status}, ${fmt(result.run.counts.succeeded ?? 0)} of ${fmt(FANOUT_AGENTS)} targets succeeded, ended ${fmt(result.ms)} ms after the request`;

  const p99 = percentile(toRunning, 99);
  const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');
  process.stdout.write(
    [
      `machine: ${machine()}`,
      `${fmt(RATE)} commands/s for ${SECONDS} s to ${STEADY_AGENTS} agents (${FANOUT_AGENTS} connected); server timestamps in whole ms`,
      `bare ws echo round trip:    ${spread(bare)}  (${fmt(bare.length)} trips at the same rate)`,
      `Bulwark create -> running:  ${spread(toRunning)}`,
      `Bulwark create -> succeeded: ${spread(toDone)}  (${fmt(steady.length)} commands, ${failed} not succeeded)`,
      `fan-out: ${fmt(FANOUT_AGENTS)} commands (one per agent, ${IN_FLIGHT} requests in flight): all running ${fmt(fanoutMs)} ms after the first request`,
      bulkLine('maxConcurrency 100%', bulkAll),
      bulkLine('maxConcurrency 10% (100 at a time)', bulkTenth),
      `goal p99 create -> running < ${GOALS.runningP99Ms} ms: ${p99} ms  ${verdict(p99 < GOALS.runningP99Ms)}`,
      `goal ${fmt(FANOUT_AGENTS)} agents all running within 2 s: ${fmt(fanoutMs)} ms  ${verdict(fanoutMs <= GOALS.fanoutMs)}`,
      '',
    ].join('\n'),
  );
} finally {
  simulator.stop();
  if (server) await stopProcess(server.child, 'SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}
