/**
 * An example service with an embedded Bulwark agent (the SDK of @bulwark/agent, EXEC-5).
 *
 * A tiny HTTP service (a greeting with an in-memory cache and an access log) that declares four
 * actions, one per risk level. Each is harmless: it logs what it would do, touches files only under
 * its data root (through the confined `context.fs`), and stops when its signal is aborted (cancel,
 * timeout, agent stopping). Run it with `node --import tsx examples/example-service/service.ts`
 * after `npm run build`; see README.md beside this file.
 */
import { existsSync } from 'node:fs';
import { appendFile, mkdir } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type ActionContext,
  action,
  createLogger,
  defineService,
  register,
  startEmbeddedAgent,
} from '@bulwark/agent';
import { z } from 'zod';

const env = process.env;
/** Where the actions may touch files: the access log lives here. */
const dataRoot = path.resolve(env.EXAMPLE_DATA_DIR ?? path.join(tmpdir(), 'bulwark-example-service'));
/** The agent's identity (private keys): never inside the data root, which handlers can reach. */
const stateFile = path.resolve(env.EXAMPLE_AGENT_STATE ?? 'example-agent/state.json');
const logger = createLogger({ level: (env.EXAMPLE_LOG_LEVEL as 'info' | 'debug' | undefined) ?? 'info' });

// --- The service itself --------------------------------------------------------------------------

const startedAt = Date.now();
const cache = new Map<string, string>();
let requests = 0;
let restarts = 0;
const accessLog = path.join(dataRoot, 'logs', 'access.log');

await mkdir(path.dirname(accessLog), { recursive: true, mode: 0o700 });

const http = createServer((request, response) => {
  requests++;
  const name = new URL(request.url ?? '/', 'http://localhost').searchParams.get('name') ?? 'world';
  const key = `greeting:${name.slice(0, 40)}`;
  let body = cache.get(key);
  if (!body) {
    body = `hello ${name.slice(0, 40)}\n`;
    cache.set(key, body);
  }
  void appendFile(accessLog, `${new Date().toISOString()} ${request.method} ${request.url}\n`);
  response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(body);
});
http.listen(Number(env.EXAMPLE_PORT ?? 0), '127.0.0.1');
await new Promise((resolve) => http.once('listening', resolve));
const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
logger.info('example service listening', { url, dataRoot });

// --- Its actions ---------------------------------------------------------------------------------

/** Waits, unless the command is cancelled or times out first (then rejects with the signal's reason). */
const pause = (ms: number, { signal }: ActionContext) => sleep(ms, undefined, { signal });

const status = action({
  name: 'status',
  description: 'Report uptime, requests served, cache size and the access log size',
  params: z.object({}),
  risk: 'low',
  timeoutSeconds: 30,
  async handler(_params, ctx) {
    const logs = await ctx.fs.list('logs');
    const size = logs.includes('access.log') ? (await ctx.fs.readFile('logs/access.log')).length : 0;
    ctx.logger.info(`uptime: ${Math.round((Date.now() - startedAt) / 1000)} s`);
    ctx.logger.info(`requests served: ${requests}; restarts: ${restarts}`);
    ctx.logger.info(`cache entries: ${cache.size}; access log: ${size} bytes (${logs.length} log files)`);
    return `status: ok (${url})`;
  },
});

const restart = action({
  name: 'restart',
  description: 'Restart the workers (simulated: logs each step)',
  params: z.object({
    graceful: z.boolean().default(true),
    drainSeconds: z.number().int().min(0).max(30).default(2),
  }),
  risk: 'medium',
  timeoutSeconds: 60,
  async handler({ graceful, drainSeconds }, ctx) {
    ctx.logger.info(`would stop accepting new requests (graceful: ${graceful})`);
    if (graceful) {
      ctx.logger.info(`draining for ${drainSeconds} s`);
      await pause(drainSeconds * 1000, ctx);
    }
    ctx.logger.info('would restart 2 workers');
    restarts++;
    return 'restarted (simulated)';
  },
});

const rotateLogs = action({
  name: 'rotate-logs',
  description: 'Rotate the access log under the data root, keeping the newest N rotations',
  params: z.object({ keep: z.number().int().min(1).max(10).default(3) }),
  risk: 'high',
  timeoutSeconds: 120,
  async handler({ keep }, ctx) {
    const files = await ctx.fs.list('logs');
    // access.log.(keep-1) → access.log.keep, …, access.log → access.log.1; the oldest beyond keep is left as is.
    for (let n = keep - 1; n >= 0; n--) {
      ctx.signal.throwIfAborted();
      const from = n === 0 ? 'access.log' : `access.log.${n}`;
      if (!files.includes(from)) continue;
      ctx.logger.info(`logs/${from} → logs/access.log.${n + 1}`);
      await ctx.fs.writeFile(`logs/access.log.${n + 1}`, await ctx.fs.readFile(`logs/${from}`));
    }
    await ctx.fs.writeFile('logs/access.log', '');
    return `rotated; keeping ${keep}`;
  },
});

const dropCache = action({
  name: 'drop-cache',
  description: 'Drop in-memory cache entries whose key starts with a prefix (all by default)',
  params: z.object({
    prefix: z
      .string()
      .regex(/^[a-z0-9:_-]*$/)
      .max(64)
      .default(''),
  }),
  risk: 'critical',
  timeoutSeconds: 60,
  async handler({ prefix }, ctx) {
    const keys = [...cache.keys()].filter((key) => key.startsWith(prefix));
    ctx.logger.warn(`dropping ${keys.length} of ${cache.size} cache entries (prefix "${prefix}")`);
    for (const key of keys) {
      ctx.signal.throwIfAborted();
      cache.delete(key);
    }
    return `dropped ${keys.length}`;
  },
});

const service = defineService({
  name: 'example',
  kind: 'node-http',
  version: '1.0.0',
  health: () => ({ status: 'up', message: `${requests} requests served` }),
  config: [
    { key: 'url', value: url },
    { key: 'data_root', value: dataRoot },
    { key: 'session_secret', value: 'not-a-real-secret', secret: true },
  ],
  actions: [status, restart, rotateLogs, dropCache],
});

// --- The embedded agent --------------------------------------------------------------------------

if (!existsSync(stateFile)) {
  // First start: register with a one-time token (from the environment, never argv: `ps` shows argv).
  const server = env.BULWARK_SERVER;
  const token = env.BULWARK_REGISTRATION_TOKEN;
  if (!server || !token) {
    logger.error('no agent state file; set BULWARK_SERVER and BULWARK_REGISTRATION_TOKEN to register', {
      stateFile,
    });
    process.exit(1);
  }
  const state = await register({
    server,
    token,
    name: env.EXAMPLE_AGENT_NAME ?? 'example-service',
    stateFile,
  });
  logger.info('registered', { agentId: state.agentId, stateFile });
}

const agent = await startEmbeddedAgent({ stateFile, services: [service], roots: [dataRoot], logger });

let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info('stopping', { signal });
  await agent.stop();
  http.closeAllConnections();
  await new Promise((resolve) => http.close(resolve));
  logger.info('example service stopped');
};
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));

const outcome = await agent.done;
if (outcome.kind === 'revoked') {
  logger.error('the server revoked this agent', { message: outcome.message });
  http.close();
  process.exitCode = 3;
}
