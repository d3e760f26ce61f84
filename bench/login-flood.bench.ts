/**
 * login-flood: latency of the liveness probe `/healthz` while a distributed sign-in flood runs. Each
 * attempt comes from a fresh client address (X-Forwarded-For through the trusted proxy 127.0.0.1) for
 * an unknown email with a wrong password, so no per-address or per-account limit applies and every
 * attempt costs a real argon2id verification (an unknown account costs what a known one does). What
 * protects the rest of the server is the bounded hashing pool: a few hashes at once, 64 waiting, and
 * 503 `auth_busy` beyond that.
 *
 * Two floods: 50 connections (below the pool's queue bound: every attempt waits its turn and gets
 * 401) and 200 connections (beyond it: the surplus is refused with 503 at once). Each flood runs a
 * few seconds before the probe opens its connections, so the probe sees the flood in full, the way a
 * monitor that connects during an attack does. `/healthz` alone is measured first in the same run,
 * with the same probe settings.
 *
 * Goal (issue #3): `/healthz` p99 under the flood < 50 ms.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type autocannon from 'autocannon';
import { fmt, type Measured, machine, measure, startBulwark, statusCount } from './http-support.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const PROBE_CONNECTIONS = 2;
const FLOODS = [50, 200];
const RAMP_SECONDS = 3; // the flood runs this long before the probe starts, so the queue is full
const GOAL_MS = 50;
const autocannonVersion = (createRequire(import.meta.url)('autocannon/package.json') as { version: string })
  .version;
const setupRequest = fileURLToPath(new URL('./login-flood.setup-request.cjs', import.meta.url));

const bulwark = await startBulwark({
  BULWARK_TRUSTED_PROXIES: '127.0.0.1',
  // Per client address, like the login limits; the flood's addresses are all different anyway.
  BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000000',
});

const floodOptions = (connections: number, duration: number): autocannon.Options => ({
  url: bulwark.url,
  connections,
  duration,
  requests: [
    {
      method: 'POST',
      path: '/api/auth/login',
      headers: { 'content-type': 'application/json' },
      setupRequest,
    },
  ],
});
const probeOptions = (duration: number): autocannon.Options => ({
  url: `${bulwark.url}/healthz`,
  connections: PROBE_CONNECTIONS,
  duration,
});

let fresh = 0;
/** Waits until the hashing queue has drained: the pool is FIFO, so one more attempt answers last. */
async function drain(): Promise<void> {
  for (;;) {
    const response = await fetch(`${bulwark.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': `2001:db8:ffff:${++fresh}::1` },
      body: JSON.stringify({ email: 'drain@bench.invalid', password: 'not-it' }),
    });
    await response.arrayBuffer();
    if (response.status !== 503) return;
    await sleep(250);
  }
}

const latency = (result: autocannon.Result) =>
  `p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, max ${result.latency.max} ms`;
/** The probe's p99, or Infinity when it got no answer at all (autocannon then reports zeros). */
const probeP99 = ({ result }: Measured) =>
  statusCount(result, 200) > 0 && result.errors === 0 ? result.latency.p99 : Number.POSITIVE_INFINITY;
const probeLine = (label: string, probe: Measured) => {
  const { result, serverLoopBusy } = probe;
  const answered = statusCount(result, 200);
  const failures = result.errors + result.non2xx;
  return `${label.padEnd(30)} ${answered > 0 ? latency(result) : 'no answer at all'}  (${fmt(answered / result.duration)} req/s${failures > 0 ? `, ${failures} failed (${result.timeouts} timeouts)` : ''}; server loop ${Math.round(serverLoopBusy * 100)}% busy)`;
};
const verdict = (p99: number) => (p99 < GOAL_MS ? 'PASS' : 'MISS');

try {
  // Warm-up of both paths, then let the queue empty.
  await measure(probeOptions(2));
  await measure(floodOptions(10, 2));
  await drain();

  const lines: string[] = [];
  const alone = await measure(probeOptions(SECONDS));
  lines.push(probeLine('/healthz alone:', alone));
  let worstP99 = 0;
  for (const connections of FLOODS) {
    const flood = measure(floodOptions(connections, SECONDS + RAMP_SECONDS + 1));
    await sleep(RAMP_SECONDS * 1000);
    const probe = await measure(probeOptions(SECONDS));
    const { result } = await flood;
    await drain();
    const p99 = probeP99(probe);
    worstP99 = Math.max(worstP99, p99);
    const counted = [401, 429, 503].map((status) => statusCount(result, status));
    const other = statusCount(result, 200) + result.non2xx - counted.reduce((a, b) => a + b, 0);
    lines.push(
      `${probeLine(`/healthz, ${connections}-connection flood:`, probe)}  ${verdict(p99)}`,
      `${''.padEnd(31)}flood: ${fmt((result.non2xx + statusCount(result, 200)) / result.duration)} answers/s (401: ${fmt(counted[0]!)}, 429: ${fmt(counted[1]!)}, 503: ${fmt(counted[2]!)}, other: ${fmt(other)}; errors ${result.errors}, of them timeouts ${result.timeouts}); sign-in latency ${latency(result)}`,
    );
  }
  process.stdout.write(
    [
      `machine: ${machine()}`,
      `autocannon ${autocannonVersion}, each instance on its own thread: probe ${PROBE_CONNECTIONS} connections, ${SECONDS} s per measurement; each flood starts ${RAMP_SECONDS} s before its probe`,
      `password hashing pool: ${Math.max(1, availableParallelism() - 1)} at once (cores - 1), 64 waiting; default login limits; Bulwark logs at info (${fmt(bulwark.logLines())} lines written)`,
      ...lines,
      `goal: /healthz p99 under every flood < ${GOAL_MS} ms: ${verdict(worstP99)} (worst p99: ${Number.isFinite(worstP99) ? `${worstP99} ms` : 'no answer'})`,
      '',
    ].join('\n'),
  );
} finally {
  await bulwark.close();
}
