/**
 * api-read: throughput of an authenticated, authorized list request (`GET /api/orgs/:org/members`
 * with a session cookie) against the real server, beside a bare Fastify hello-world measured in the
 * same run with the same autocannon settings. The Bulwark request goes through everything a console
 * read does: security headers, request id, JSON logs, metrics, the read rate limit, the session
 * lookup, the organization's access snapshot and the decision, the queries, and the response
 * re-parsed through its schema.
 *
 * Runs alternate bare, Bulwark, Bulwark, bare, so that drift of the machine during the run weighs on
 * both sides alike; the ratio is taken over the pooled requests of both pairs.
 *
 * Goal (issue #3): Bulwark >= 40% of the bare throughput.
 */
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { type MembersRead, membersReadFloor } from './api-read.floor.js';
import {
  addMember,
  fmt,
  type Measured,
  machine,
  measure,
  OWNER,
  send,
  signIn,
  startBulwark,
  statusCount,
} from './http-support.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP_SECONDS = 3;
const CONNECTIONS = 10;
const MEMBERS = 20; // invited viewers, beside the owner
const GOAL = 0.4;
const autocannonVersion = (createRequire(import.meta.url)('autocannon/package.json') as { version: string })
  .version;

const bulwark = await startBulwark({
  // The most the setting allows (per client per minute): the limiter still runs, but never refuses here.
  BULWARK_RATE_LIMIT_READ_PER_MINUTE: '1000000',
  // Only for the setup below (invitations and their acceptance), not part of the measured path.
  BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '10000',
  BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000',
});
const bare = Fastify({ logger: false });
bare.get('/', async () => ({ hello: 'world' }));
await bare.listen({ host: '127.0.0.1', port: 0 });
const bareUrl = `http://127.0.0.1:${(bare.server.address() as AddressInfo).port}/`;

try {
  // A realistic list: the owner and 20 viewers, in two teams.
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
  const membersUrl = `${bulwark.url}/api/orgs/${slug}/members`;
  const check = await fetch(membersUrl, { headers: { cookie: session.cookie } });
  const checkBody = await check.text();
  const listed = (JSON.parse(checkBody) as { members?: unknown[] }).members?.length;
  if (check.status !== 200 || listed !== MEMBERS + 1) {
    throw new Error(`the members list answered ${check.status} with ${listed} members`);
  }

  const sessionToken = session.cookie.slice(session.cookie.indexOf('=') + 1);
  const { user } = (await (
    await fetch(`${bulwark.url}/api/auth/session`, { headers: { cookie: session.cookie } })
  ).json()) as { user: { id: string } };
  const read: MembersRead = { databaseFile: bulwark.databaseFile, sessionToken, userId: user.id, slug };

  const bulwarkTarget = { url: membersUrl, headers: { cookie: session.cookie } };
  const bareTarget = { url: bareUrl };
  const settings = { connections: CONNECTIONS, pipelining: 1 };

  await measure({ ...bareTarget, ...settings, duration: WARMUP_SECONDS });
  await measure({ ...bulwarkTarget, ...settings, duration: WARMUP_SECONDS });

  const runs: Array<{ target: 'bare' | 'bulwark'; measured: Measured }> = [];
  for (const target of ['bare', 'bulwark', 'bulwark', 'bare'] as const) {
    const measured = await measure({
      ...(target === 'bare' ? bareTarget : bulwarkTarget),
      ...settings,
      duration: SECONDS,
    });
    const { result } = measured;
    // A refused, failed or timed-out request would make the figure meaningless, not just lower.
    if (result.errors > 0 || result.timeouts > 0 || result.non2xx > 0) {
      throw new Error(
        `${target} run is not clean: ${result.errors} errors, ${result.timeouts} timeouts, non-2xx ${JSON.stringify(result.statusCodeStats)}`,
      );
    }
    runs.push({ target, measured });
  }

  const line = (label: string, target: 'bare' | 'bulwark') => {
    const mine = runs.filter((run) => run.target === target);
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
      text: `${label}${fmt(requests / seconds).padStart(7)} req/s  (runs: ${perRun})`,
    };
  };
  // The same reads, through the same store functions, with nothing else: no HTTP, no auth logic, no
  // logging, no serialization. What no amount of work elsewhere could take below.
  const floor = await membersReadFloor(read);
  const bareLine = line('bare Fastify hello-world:   ', 'bare');
  const bulwarkLine = line('Bulwark GET members:        ', 'bulwark');
  const ratio = bulwarkLine.rate / bareLine.rate;
  const ceiling = 1 / (1 / bareLine.rate + floor.microseconds / 1e6);
  process.stdout.write(
    [
      `machine: ${machine()}`,
      `autocannon ${autocannonVersion} on its own thread: ${CONNECTIONS} connections, pipelining 1, ${SECONDS} s per run after a ${WARMUP_SECONDS} s warm-up each; order bare, Bulwark, Bulwark, bare`,
      `list: ${listed} members in ${teams.length} teams, ${fmt(Buffer.byteLength(checkBody))} bytes of JSON; Bulwark logs at info (${fmt(bulwark.logLines())} lines written)`,
      bareLine.text,
      bulwarkLine.text,
      `ratio Bulwark/bare:           ${ratio.toFixed(2)}   (goal >= ${GOAL.toFixed(2)}: ${ratio >= GOAL ? 'PASS' : 'MISS'})`,
      `the request's database reads alone (${floor.queries} queries, same stores, same file, no HTTP): ${floor.microseconds.toFixed(0)} us per request;`,
      `  with everything else free, the ceiling is ${fmt(ceiling)} req/s = ${(ceiling / bareLine.rate).toFixed(2)} of bare (bare's own time per request plus these reads)`,
      '',
    ].join('\n'),
  );
} finally {
  await bare.close();
  await bulwark.close();
}
