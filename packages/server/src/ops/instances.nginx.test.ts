import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { Browser, CDPSession, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type AgentProcesses, agentProcesses, type RunningAgent } from '../test-support/agent-process.js';
import { hasChromium, launchChromium, requireChromiumInCi } from '../test-support/browser.js';
import { createPostgresDatabase, postgresUrl, redisUrl } from '../test-support/databases.js';
import {
  hasNginx,
  type Nginx,
  requireNginxInCi,
  startNginx,
  UPSTREAM_HEADER,
} from '../test-support/nginx.js';
import { runCli, type ServerProcess, startServerProcess } from '../test-support/processes.js';
import { type RedisProcess, startRedis } from '../test-support/redis-server.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';

/**
 * HA-1 and QA-4 with nothing simulated: three `bulwark serve` processes on one PostgreSQL database and
 * one Redis, behind Debian's nginx (round robin, no sticky sessions, WebSockets proxied); real agent
 * processes and the real console in Chromium reach them only through nginx.
 *
 * Every agent runs a command that waits for a file the test creates; commands for an agent that is
 * not connected wait in the queue. The instance holding the most agents (and the console's live
 * stream, focused on one of the commands running there) is killed with SIGKILL: no shutdown, no
 * goodbye. Its agents reconnect through nginx to the two others, with their commands still running;
 * commands created during the outage, and those that waited in the queue, reach their agents; the
 * console's stream opens again on another instance and carries the rest of the command's output and
 * its end. Then every command has ended once, as succeeded, and its action ran exactly once (each run
 * appends its tag to a file); each command's audit trail is whole (created, dispatched, started, one
 * end), nothing recorded before the kill is missing, and `bulwark audit verify` passes.
 */

requireNginxInCi('the instances behind nginx test');
requireChromiumInCi('the instances behind nginx test');

const OWNER = { email: 'owner@instances.test', password: 'Quiet-Harbor-Lantern-93' };
const ORG = 'default';
const DEADLINE = { timeout: 30_000, interval: 100 };
const TERMINAL = ['succeeded', 'failed', 'timed_out', 'cancelled', 'rejected', 'expired'];
/** The audit actions that end a command. */
const ENDINGS = [
  ...TERMINAL.map((status) => `command.${status}`),
  'command.refused_by_agent',
  'command.integrity_failed',
];
const NODE = process.execPath;

/**
 * The action every agent offers: appends its tag to the markers file (one line per run, the proof of
 * how many times it ran), then either ends, or waits until the gate file exists. Its process group
 * outlives an agent killed with SIGKILL: should the test end without opening the gate, it gives up
 * once the test's directory is gone.
 */
const ACTION_SCRIPT = `
import { appendFileSync, existsSync } from 'node:fs';
const [markers, gate, tag, hold] = process.argv.slice(2);
appendFileSync(markers, tag + '\\n');
process.stdout.write('started ' + tag + '\\n');
if (hold === 'no') process.stdout.write('done ' + tag + '\\n');
else {
  const check = setInterval(() => {
    if (!existsSync(markers)) process.exit(1);
    if (!existsSync(gate)) return;
    clearInterval(check);
    process.stdout.write('released ' + tag + '\\n');
  }, 50);
}
`;

interface Command {
  id: string;
  tag: string;
  agentId: string;
  /**
   * Why it exists: running at the kill, queued at the kill, on its way to its agent at the kill, or
   * created during the outage.
   */
  kind: 'held' | 'queued' | 'delivering' | 'outage';
}

interface Agent {
  name: string;
  id: string;
  process: RunningAgent;
}

/** One live stream of the console's tab, as Chromium's network domain saw it. */
interface Stream {
  url: string;
  /** The instance that answered (nginx names every one it tried, the ones that failed first). */
  upstream: string;
  events: Array<{ name: string; data: Record<string, unknown> }>;
  /** The connection ended (closed by the console, or cut). */
  ended: boolean;
}

describe.skipIf(!postgresUrl() || !redisUrl() || !hasNginx || !hasChromium)(
  'three instances behind nginx, one killed',
  () => {
    const cleanups: Array<() => Promise<unknown> | unknown> = [];
    const masterKey = randomBytes(32).toString('base64');
    let dir = '';
    let databaseUrl = '';
    let reader: pg.Client;
    let redis: RedisProcess;
    let nginx: Nginx;
    let browser: Browser;
    let page: Page;
    let owner: SessionClient;
    const servers: ServerProcess[] = [];
    const agentHomes: AgentProcesses[] = [];
    const agents: Agent[] = [];
    /** An agent that is stopped while the others run, and started again during the outage. */
    let late: Agent & { home: AgentProcesses; config: string };
    const commands: Command[] = [];
    let victim: ServerProcess;
    /** The agents the killed instance held. */
    let victims: Agent[] = [];
    let watched: Command;
    const streams = new Map<string, Stream>();
    let markers = '';
    let gate = '';
    let auditBeforeKill: string[] = [];

    /** `bulwark serve` on the shared database and Redis, in its own data directory. */
    const startInstance = async (name: string) => {
      const server = await startServerProcess({
        cwd: dir,
        env: {
          BULWARK_DATA_DIR: path.join(dir, name),
          BULWARK_DATABASE_URL: databaseUrl,
          BULWARK_REDIS_URL: `redis://127.0.0.1:${redis.port}`,
          BULWARK_MASTER_KEY: masterKey,
          BULWARK_TRUSTED_PROXIES: '127.0.0.1',
          BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
          BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
          // Short, so that an instance's delivery sweep and its agents' presence turn over quickly.
          BULWARK_AGENT_HEARTBEAT_SECONDS: '2',
          // Every agent, browser and client comes from 127.0.0.1, through nginx: one client to the limits.
          BULWARK_AGENT_CONNECTS_PER_MINUTE: '10000',
          BULWARK_RATE_LIMIT_READ_PER_MINUTE: '100000',
          BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '100000',
          BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '10000',
        },
      });
      servers.push(server);
      return server;
    };
    const live = () => servers.filter((server) => server.child.exitCode === null && !server.child.signalCode);
    const addressOf = (server: ServerProcess) => new URL(server.url).host;

    /** The agent's config: one service whose one action runs ACTION_SCRIPT with the command's tag. */
    const agentConfig = async (home: string) => {
      const config = path.join(home, 'agent', 'agent.yaml');
      const params = {
        type: 'object',
        properties: {
          tag: { type: 'string', pattern: '[a-z0-9-]+', maxLength: 40 },
          hold: { type: 'string', enum: ['yes', 'no'] },
        },
        required: ['tag', 'hold'],
        additionalProperties: false,
      };
      const step = {
        name: 'step',
        description: 'Records its run, then ends or waits for the gate',
        risk: 'low',
        timeoutSeconds: 120,
        params,
        exec: { argv: [NODE, path.join(dir, 'action.mjs'), markers, gate, '{{tag}}', '{{hold}}'] },
      };
      const services = [
        { name: 'work', kind: 'worker', version: '1.0', health: { status: 'up' }, actions: [step] },
      ];
      await writeFile(config, JSON.stringify({ stateFile: 'state.json', services }));
      return config;
    };

    /** A real agent registered through nginx (the state file pins nginx's address). */
    const registerAgent = async (name: string) => {
      const home = path.join(dir, name);
      await mkdir(home, { recursive: true });
      const processes = agentProcesses(home);
      agentHomes.push(processes);
      await processes.register(nginx.url, owner, name, ORG);
      return { home: processes, config: await agentConfig(home) };
    };
    const runAgent = async (name: string, home: AgentProcesses, config: string) => {
      const running = home.run(config);
      const online = await running.next('online');
      await running.next('report accepted');
      return { name, id: online.agentId as string, process: running };
    };

    let tags = 0;
    /**
     * A command created through nginx, on whichever instance nginx picks. As a careful client does, it
     * sends an Idempotency-Key and tries again when the proxy answers that the instance it chose died
     * with the request: the command exists once however many times it was asked for.
     */
    const createCommand = async (agent: Agent | string, kind: Command['kind'], hold: 'yes' | 'no') => {
      const agentId = typeof agent === 'string' ? agent : agent.id;
      const tag = `t-${++tags}`;
      const body = {
        agent: agentId,
        service: 'work',
        action: 'step',
        params: { tag, hold },
        reason: 'failover',
      };
      const key = `failover-${tag}-${randomBytes(6).toString('hex')}`;
      const post = () => owner.send('POST', `/api/orgs/${ORG}/commands`, body, { 'idempotency-key': key });
      let response = await post();
      for (let attempt = 1; response.status === 502 && attempt < 3; attempt++) response = await post();
      const created = {
        status: response.status,
        body: (await response.json()) as { id: string; status: string },
      };
      expect([200, 201], JSON.stringify(created.body)).toContain(created.status);
      const command = { id: created.body.id, tag, agentId, kind };
      commands.push(command);
      return { command, status: created.body.status };
    };
    const commandView = async (id: string) =>
      (
        await owner.json<{ status: string; exitCode: number | null }>(
          'GET',
          `/api/orgs/${ORG}/commands/${id}`,
        )
      ).body;

    /** The instance holding each agent's connection: the only one whose agent page shows it. */
    /**
     * Which live instance holds each agent, as Redis says: the holder key names the instance id that
     * each server logs at start. (Every instance's agent page shows the connection, wherever it is.)
     */
    const holders = async () => {
      const held = new Map<string, ServerProcess[]>();
      const client = new Redis(redis.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
      try {
        for (const agent of agents) {
          const value = await client.get(`bulwark:cluster:agent:${agent.id}`);
          const instance = value ? (JSON.parse(value) as { instance: string }).instance : undefined;
          const holding = live().filter(
            (server) => instance && server.output().includes(`"instance":"${instance}"`),
          );
          if (holding.length > 0) held.set(agent.id, holding);
        }
      } finally {
        client.disconnect();
      }
      return held;
    };

    /** The newest stream of the console's tab focused on `commandId`, once it has said `ready`. */
    const readyStream = (commandId: string, after: number) =>
      vi.waitFor(() => {
        const focused = [...streams.values()]
          .slice(after)
          .filter((s) => s.url.includes(`command=${commandId}`));
        const stream = focused.at(-1);
        expect(
          stream?.events.some((event) => event.name === 'ready'),
          JSON.stringify([...streams.values()]),
        ).toBe(true);
        return stream!;
      }, DEADLINE);

    beforeAll(async () => {
      const temp = await tempDir('instances');
      cleanups.push(() => temp.remove());
      dir = temp.path;
      markers = path.join(dir, 'markers.txt');
      gate = path.join(dir, 'gate');
      await writeFile(markers, '');
      await writeFile(path.join(dir, 'action.mjs'), ACTION_SCRIPT);
      // Among the last cleanups (they run in reverse): whatever an agent left running sees the gate
      // open, or its directory gone, and ends.
      cleanups.push(() => writeFile(gate, ''));
      const database = await createPostgresDatabase(postgresUrl()!);
      cleanups.push(() => database.drop());
      databaseUrl = database.url;
      reader = new pg.Client({ connectionString: databaseUrl });
      // A Redis of this cluster's own: `bulwark serve` uses the default channel prefix, and pub/sub
      // channels are shared by every database of a Redis server.
      redis = await startRedis();
      cleanups.push(() => redis.stop());

      // The first migrates and creates the first owner; the two others find them.
      await startInstance('first');
      await Promise.all([startInstance('second'), startInstance('third')]);
      cleanups.push(() => Promise.all(servers.map((server) => server.stop('SIGKILL'))));
      await reader.connect();
      cleanups.push(() => reader.end());
      // Row-level security admits every organization's rows to this reader, as to the server's own
      // cross-organization work (db/org-scope.ts).
      await reader.query("select set_config('bulwark.org_id', '*', false)");

      const nginxDir = path.join(dir, 'nginx');
      await mkdir(nginxDir);
      nginx = await startNginx({ dir: nginxDir, upstreams: servers.map(addressOf) });
      cleanups.push(() => nginx.stop());

      owner = new SessionClient(nginx.url);
      expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);

      // Six agents, each with its services and actions reported.
      const names = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5', 'node-6'];
      const registered = await Promise.all(names.map((name) => registerAgent(name)));
      cleanups.push(() => Promise.all(agentHomes.map((home) => home.killAll())));
      const started = await Promise.all(
        names.map((name, index) => runAgent(name, registered[index]!.home, registered[index]!.config)),
      );
      agents.push(...started.slice(0, 5));
      late = { ...started[5]!, ...registered[5]! };

      browser = await launchChromium();
      cleanups.push(() => browser.close());
    }, 120_000);

    afterAll(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });

    it('moves the agents of a killed instance to the others, and the console with them, while commands run and wait', async () => {
      // Every connected agent runs a command that waits for the gate.
      for (const agent of agents) await createCommand(agent, 'held', 'yes');
      await vi.waitFor(async () => {
        for (const command of commands) expect((await commandView(command.id)).status).toBe('running');
      }, DEADLINE);
      // The sixth agent stops; its commands wait in the queue.
      expect(await late.process.stop()).toBe(0);
      await vi.waitFor(async () => {
        const shown = await owner.json<{ status: string }>('GET', `/api/orgs/${ORG}/agents/${late.id}`);
        expect(shown.body.status).toBe('offline');
      }, DEADLINE);
      for (let i = 0; i < 3; i++) expect((await createCommand(late, 'queued', 'no')).status).toBe('queued');

      // The instance holding the most agents is the one to die; the console watches a command there.
      const held = await vi.waitFor(async () => {
        const now = await holders();
        for (const agent of agents) expect(now.get(agent.id), agent.name).toHaveLength(1);
        return now;
      }, DEADLINE);
      const counts = servers.map(
        (server) => agents.filter((agent) => held.get(agent.id)![0] === server).length,
      );
      victim = servers[counts.indexOf(Math.max(...counts))]!;
      victims = agents.filter((agent) => held.get(agent.id)![0] === victim);
      expect(victims.length).toBeGreaterThanOrEqual(2);
      watched = commands.find((command) => command.kind === 'held' && command.agentId === victims[0]!.id)!;

      const context = await browser.newContext({
        baseURL: nginx.url,
        viewport: { width: 1280, height: 800 },
      });
      page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (error) => problems.push(error.message));
      const cdp: CDPSession = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      cdp.on('Network.responseReceived', (event) => {
        if (event.type !== 'EventSource') return;
        const headers = Object.fromEntries(
          Object.entries(event.response.headers).map(([name, value]) => [name.toLowerCase(), String(value)]),
        );
        streams.set(event.requestId, {
          url: event.response.url,
          upstream: (headers[UPSTREAM_HEADER] ?? '').split(', ').at(-1)!,
          events: [],
          ended: false,
        });
      });
      const end = ({ requestId }: { requestId: string }) => {
        const stream = streams.get(requestId);
        if (stream) stream.ended = true;
      };
      cdp.on('Network.loadingFinished', end);
      cdp.on('Network.loadingFailed', end);
      cdp.on('Network.eventSourceMessageReceived', (event) => {
        streams.get(event.requestId)?.events.push({
          name: event.eventName,
          data: JSON.parse(event.data) as Record<string, unknown>,
        });
      });
      await page.goto('/login');
      await page.getByLabel('Email', { exact: true }).fill(OWNER.email);
      await page.getByLabel('Password', { exact: true }).fill(OWNER.password);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(/\/orgs\/[^/]+$/);
      // The command's page, its stream on the instance about to die: nginx picks, round robin, so the
      // page is opened again until it lands there.
      await page.goto(`/orgs/${ORG}/commands/${watched.id}`);
      let stream = await readyStream(watched.id, 0);
      for (let attempt = 1; stream.upstream !== addressOf(victim); attempt++) {
        expect(attempt, 'the console never reached the instance to kill').toBeLessThan(40);
        const seen = streams.size;
        // One more request through nginx, so that the next page load does not repeat the same turns.
        await fetch(`${nginx.url}/healthz`);
        await page.reload();
        stream = await readyStream(watched.id, seen);
      }
      const output = page.getByLabel('Command output');
      await vi.waitFor(
        async () => expect(await output.textContent()).toContain(`started ${watched.tag}`),
        DEADLINE,
      );
      const streamsBeforeKill = streams.size;
      const cut = [...streams.values()].at(-1)!;
      expect(cut).toMatchObject({ upstream: addressOf(victim), ended: false });
      auditBeforeKill = (await reader.query<{ id: string }>('select id from audit_events')).rows.map(
        (row) => row.id,
      );
      const linesBeforeKill = new Map(victims.map((agent) => [agent.id, agent.process.lines.length]));

      // Commands for the agents about to lose their instance, asked for all at once: the kill comes
      // as soon as the first is claimed for delivery, with the others anywhere between the request
      // and the agent (the instance that accepted a request may die with it: the client tries again).
      const before = commands.map((command) => command.id);
      const delivering = Promise.all(
        victims.flatMap((agent) => [1, 2, 3, 4].map(() => createCommand(agent, 'delivering', 'no'))),
      );
      await vi.waitFor(
        async () => {
          const { rows } = await reader.query<{ n: number }>(
            "select count(*)::int as n from commands where status <> 'queued' and not (id = any($1))",
            [before],
          );
          expect(rows[0]!.n).toBeGreaterThan(0);
        },
        { timeout: 30_000, interval: 2 },
      );
      // SIGKILL: nothing closes, nothing is flushed, nobody is told.
      expect(await victim.stop('SIGKILL')).toBeNull();
      await delivering;

      // During the outage: more work for the agents of the dead instance, and the sixth agent starts.
      for (const agent of victims) {
        await createCommand(agent, 'outage', 'no');
        await createCommand(agent, 'outage', 'no');
      }
      late.process = (await runAgent(late.name, late.home, late.config)).process;
      agents.push(late);

      // The dead instance's agents are back, each on exactly one of the others, through nginx.
      for (const agent of victims)
        await vi.waitFor(() => {
          const since = linesBeforeKill.get(agent.id)!;
          expect(agent.process.lines.slice(since).some((line) => line.msg === 'online')).toBe(true);
        }, DEADLINE);
      await vi.waitFor(async () => {
        const now = await holders();
        for (const agent of agents) {
          expect(now.get(agent.id), agent.name).toHaveLength(1);
          expect(now.get(agent.id)![0]).not.toBe(victim);
        }
      }, DEADLINE);

      // The console's stream, cut with its instance, opened again by itself on another one.
      expect(cut.ended).toBe(true);
      const resumed = await readyStream(watched.id, streamsBeforeKill);
      expect(resumed.upstream).not.toBe(addressOf(victim));
      expect(servers.map(addressOf)).toContain(resumed.upstream);

      // The gate opens: every waiting command ends, the watched one among them, on its new instance.
      await writeFile(gate, '');
      await vi.waitFor(async () => {
        const listed = await owner.json<{ commands: Array<{ id: string; status: string }> }>(
          'GET',
          `/api/orgs/${ORG}/commands?limit=200`,
        );
        expect(listed.body.commands.map((command) => command.id).sort()).toEqual(
          commands.map((command) => command.id).sort(),
        );
        for (const command of listed.body.commands)
          expect(TERMINAL, JSON.stringify(command)).toContain(command.status);
      }, DEADLINE);

      // The rest of its output and its end came live over the resumed stream, and the page shows them.
      await vi.waitFor(async () => {
        expect(await output.textContent()).toContain(`released ${watched.tag}`);
        expect(await page.locator('.toolbar .badge').last().textContent()).toBe('succeeded');
      }, DEADLINE);
      expect(resumed.events).toContainEqual({
        name: 'output',
        data: expect.objectContaining({ commandId: watched.id, data: `released ${watched.tag}\n` }),
      });
      expect(resumed.events).toContainEqual({
        name: 'status',
        data: { commandId: watched.id, status: 'succeeded' },
      });
      expect(problems).toEqual([]);
    }, 120_000);

    it('ended every command once, ran each exactly once, and lost no audit event', async () => {
      for (const command of commands)
        expect(await commandView(command.id), command.tag).toMatchObject({
          status: 'succeeded',
          exitCode: 0,
        });
      // One run of each command: its tag once in the markers file, no other line.
      const ran = (await readFile(markers, 'utf8')).split('\n').filter(Boolean).sort();
      expect(ran).toEqual(commands.map((command) => command.tag).sort());

      const { rows } = await reader.query<{
        id: string;
        action: string;
        target_id: string | null;
        details: string;
      }>('select id, action, target_id, details from audit_events order by chain_id, seq');
      const ids = new Set(rows.map((row) => row.id));
      expect(auditBeforeKill.filter((id) => !ids.has(id))).toEqual([]);
      for (const command of commands) {
        const trail = rows.filter((row) => row.target_id === command.id);
        const actions = trail.map((row) => row.action);
        const count = (action: string) => actions.filter((name) => name === action).length;
        expect({ tag: command.tag, created: count('command.created') }).toEqual({
          tag: command.tag,
          created: 1,
        });
        expect(count('command.dispatched'), command.tag).toBeGreaterThanOrEqual(1);
        // One end, and it is the one the agent reported.
        const ends = trail.filter((row) => ENDINGS.includes(row.action));
        expect(
          ends.map((row) => row.action),
          command.tag,
        ).toEqual(['command.succeeded']);
        // Started once, or not at all when the instance that would have recorded it died first and
        // the agent, reconnected, reported the end from its journal (CMD-6).
        if (count('command.started') === 0)
          expect(JSON.parse(ends[0]!.details), command.tag).toMatchObject({ reconciled: true });
        else expect(count('command.started'), command.tag).toBe(1);
      }
      // The agents of the dead instance were welcomed again, by another instance, and that is on record.
      for (const agent of victims) {
        const connected = rows.filter(
          (row) => row.target_id === agent.id && row.action === 'agent.connected',
        );
        expect(connected.length, agent.name).toBeGreaterThanOrEqual(2);
      }
    }, 60_000);

    it('verifies the audit chain with the CLI', async () => {
      const verified = await runCli(['audit', 'verify'], {
        cwd: dir,
        env: {
          BULWARK_DATA_DIR: path.join(dir, 'verify'),
          BULWARK_DATABASE_URL: databaseUrl,
          BULWARK_MASTER_KEY: masterKey,
        },
      });
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    }, 60_000);
  },
);
