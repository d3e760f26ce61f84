/**
 * Shared by the HTTP benchmarks: a real Bulwark server in this process (the build output, as `bulwark
 * serve` runs it), and autocannon runs whose load generator works on a thread of its own, so that the
 * measuring client never competes with the server for the event loop it is measuring.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';

// Types from the sources, code from the build: `npm run bench` builds first, and type-checking the
// benchmarks does not need a build.
type ConfigModule = typeof import('../packages/server/src/config.js');
type MainModule = typeof import('../packages/server/src/main.js');
const dist = new URL('../packages/server/dist/', import.meta.url);
const { loadConfig } = (await import(new URL('config.js', dist).href)) as ConfigModule;
const { startServer } = (await import(new URL('main.js', dist).href)) as MainModule;

export const OWNER = { email: 'owner@bench.test', password: 'Tr4vel-Quietly-Over-Mountains' };
export const MEMBER_PASSWORD = 'Quiet-Harbor-Lantern-93';
export const SESSION_COOKIE = '__Host-bulwark_session';

export interface BenchServer {
  url: string;
  /** The server's SQLite file, for measurements that read it directly. */
  databaseFile: string;
  /** JSON log lines the server wrote (discarded, counted: they cost what they cost in production). */
  logLines(): number;
  close(): Promise<void>;
}

/**
 * Starts Bulwark on SQLite in a fresh temporary directory on a free loopback port, logging at the
 * default level (`info`) into a sink that only counts the lines.
 */
export async function startBulwark(env: Record<string, string>): Promise<BenchServer> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bulwark-bench-'));
  let lines = 0;
  try {
    const config = loadConfig({
      env: {
        BULWARK_DATA_DIR: dir,
        BULWARK_PORT: '0',
        BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
        BULWARK_BOOTSTRAP_MFA_REQUIRED: 'false',
        BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
        ...env,
      },
      cwd: dir,
    });
    const server = await startServer(config, {
      logDestination: {
        write: (chunk: string) => {
          for (let i = chunk.indexOf('\n'); i !== -1; i = chunk.indexOf('\n', i + 1)) lines++;
        },
      },
      print: () => {},
    });
    return {
      url: server.url,
      databaseFile: config.database.kind === 'sqlite' ? config.database.file : '',
      logLines: () => lines,
      async close() {
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** A signed-in browser session: the cookie header to send and the CSRF token for state changes. */
export interface Session {
  cookie: string;
  csrf: string;
}

function sessionFrom(response: Response, body: { csrfToken?: unknown }): Session {
  const pair = response.headers
    .getSetCookie()
    .map((header) => header.split(';')[0] ?? '')
    .find((cookie) => cookie.startsWith(`${SESSION_COOKIE}=`));
  if (!pair || typeof body.csrfToken !== 'string') throw new Error('the response started no session');
  return { cookie: pair, csrf: body.csrfToken };
}

export async function signIn(url: string, email: string, password: string): Promise<Session> {
  const response = await fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  const body = (await response.json()) as { csrfToken?: unknown };
  if (response.status !== 200)
    throw new Error(`sign-in answered ${response.status}: ${JSON.stringify(body)}`);
  return sessionFrom(response, body);
}

/** A state-changing request the way the console sends it: cookie, CSRF token, same origin. */
export async function send<T>(
  url: string,
  session: Session,
  method: string,
  route: string,
  body?: unknown,
): Promise<T> {
  const response = await fetch(`${url}${route}`, {
    method,
    headers: {
      cookie: session.cookie,
      'x-csrf-token': session.csrf,
      origin: url,
      'sec-fetch-site': 'same-origin',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route} answered ${response.status}: ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

/** Invites `email` into `slug` as a viewer and accepts as a new account; returns the new user's id. */
export async function addMember(url: string, owner: Session, slug: string, email: string): Promise<string> {
  const { token } = await send<{ token: string }>(url, owner, 'POST', `/api/orgs/${slug}/invitations`, {
    email,
    role: 'viewer',
  });
  const response = await fetch(`${url}/api/invitations/accept`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token, displayName: email.split('@')[0], password: MEMBER_PASSWORD }),
  });
  const body = (await response.json()) as { user?: { id: string } };
  if (response.status !== 200 || !body.user) throw new Error(`accepting answered ${response.status}`);
  return body.user.id;
}

/** Enough registration tokens (1,000 uses each) for `agents` agents in the default organization. */
export async function registrationTokens(url: string, owner: Session, agents: number): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < Math.ceil(agents / 1000); i++) {
    const created = await send<{ token: string }>(
      url,
      owner,
      'POST',
      '/api/orgs/default/agent-registration-tokens',
      {
        uses: 1000,
        expiresInMinutes: 120,
        labels: { fleet: 'bench' },
      },
    );
    tokens.push(created.token);
  }
  return tokens;
}

export interface Measured {
  result: autocannon.Result;
  /** Share of the wall time the server's event loop (this thread) was busy during the run. */
  serverLoopBusy: number;
}

/** One autocannon run, its load generator on a worker thread of its own. */
export async function measure(options: autocannon.Options): Promise<Measured> {
  const before = performance.eventLoopUtilization();
  const result = await autocannon({ workers: 1, ...options });
  return { result, serverLoopBusy: performance.eventLoopUtilization(before).utilization };
}

export const statusCount = (result: autocannon.Result, status: number): number =>
  (result.statusCodeStats as Record<string, { count?: number }> | undefined)?.[String(status)]?.count ?? 0;

export const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

export const median = (values: number[]): number =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

export const machine = (): string =>
  `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}`;
