/**
 * bench/fleet's dispatch across instances: commands created through one instance's HTTP API for
 * agents whose connection another instance holds, beside commands created through the instance that
 * holds the agent (the same run's baseline). Latency comes from the server's own timestamps, as in
 * bench/dispatch: created (by the instance that took the request) to running (recorded by the
 * instance holding the agent, when the agent says it started), in whole milliseconds. The instances
 * run on one machine and share its clock.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type Session, send } from './http-support.js';

interface CommandView {
  id: string;
  status: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface DispatchRun {
  /** Created on another instance than the agent's: create -> running, ms. */
  cross: number[];
  /** Created on the agent's own instance (the baseline): create -> running, ms. */
  same: number[];
  /** Commands that ended other than succeeded. */
  notSucceeded: number;
}

export const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
};

export const spread = (values: number[]): string =>
  `p50 ${percentile(values, 50)} ms, p99 ${percentile(values, 99)} ms, max ${Math.max(...values)} ms`;

/**
 * `count` commands of each kind, interleaved, `rate` per second in all. `heldBy[i]` are ids of agents
 * online on `urls[i]`; a cross-instance command for them is created on the next instance in the list.
 */
export async function dispatchAcrossInstances(options: {
  urls: string[];
  session: Session;
  heldBy: string[][];
  count: number;
  rate: number;
}): Promise<DispatchRun> {
  const { urls, session, heldBy, count, rate } = options;
  const created: Array<Promise<{ id: string; cross: boolean }>> = [];
  const started = performance.now();
  for (let n = 0; n < 2 * count; n++) {
    const due = started + (n * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const cross = n % 2 === 0;
    const holder = Math.floor(n / 2) % urls.length;
    const agents = heldBy[holder]!;
    const agent = agents[Math.floor(n / (2 * urls.length)) % agents.length]!;
    const api = urls[cross ? (holder + 1) % urls.length : holder]!;
    created.push(
      send<CommandView>(api, session, 'POST', '/api/orgs/default/commands', {
        agent,
        service: 'app',
        action: 'restart',
        confirm: true,
      }).then((view) => ({ id: view.id, cross })),
    );
  }
  const run: DispatchRun = { cross: [], same: [], notSucceeded: 0 };
  for (const { id, cross } of await Promise.all(created)) {
    const view = await finished(urls[0]!, session, id);
    if (view.status !== 'succeeded' || !view.startedAt) run.notSucceeded++;
    else (cross ? run.cross : run.same).push(Date.parse(view.startedAt) - Date.parse(view.createdAt));
  }
  return run;
}

const FINISH_DEADLINE_MS = 120_000;

/** The command once it has finished, read through any instance. */
async function finished(url: string, session: Session, id: string): Promise<CommandView> {
  const deadline = Date.now() + FINISH_DEADLINE_MS;
  while (Date.now() < deadline) {
    const response = await fetch(`${url}/api/orgs/default/commands/${id}`, {
      headers: { cookie: session.cookie },
    });
    const view = (await response.json()) as CommandView;
    if (view.finishedAt) return view;
    await sleep(20);
  }
  throw new Error(`command ${id} had not finished ${FINISH_DEADLINE_MS / 1000} s after the last was created`);
}
