#!/usr/bin/env node
/**
 * `npm run demo`: a Bulwark server and the example service (with its embedded agent) on this
 * machine, ready to be driven from the web console.
 *
 * 1. A fresh data directory (./demo-data, mode 0700; refused if it exists, unless --reset).
 * 2. `bulwark serve` (the built CLI) on 127.0.0.1 with a demo owner and a generated password.
 * 3. Sign in over the HTTP API, invite two operators (so that high and critical actions, which need
 *    someone other than the requester to approve, can be tried alone) and create a one-time
 *    registration token.
 * 4. The example service (examples/example-service) registers its embedded agent with the token
 *    and comes online with its service and four actions.
 * 5. Prints the console's URL, the three accounts, what to try, and the same first steps with curl;
 *    Ctrl-C stops everything.
 *
 * Environment: BULWARK_DEMO_DIR (default ./demo-data), BULWARK_DEMO_PORT (default 8080; 0 picks a
 * free port). Needs `npm run build` first.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SERVER_CLI = path.join(ROOT, 'packages/server/dist/cli.js');
const CONSOLE_PAGE = path.join(ROOT, 'packages/console/dist/index.html');
const AGENT_SDK = path.join(ROOT, 'packages/agent/dist/sdk.js');
const EXAMPLE = path.join(ROOT, 'examples/example-service/service.ts');
const OWNER_EMAIL = 'demo@bulwark.localhost';
const ORG = 'default';
const SERVICE = 'example';
const READY_TIMEOUT_MS = 60_000;

const args = process.argv.slice(2);
const reset = args.includes('--reset');
const unknown = args.filter((arg) => arg !== '--reset');
const say = (line = '') => process.stdout.write(`${line}\n`);
const fail = (message) => {
  process.stderr.write(`demo: ${message}\n`);
  process.exit(1);
};

if (unknown.length > 0 || args.includes('--help'))
  fail(`usage: npm run demo [-- --reset] (unknown: ${unknown.join(' ')})`);
const dataDir = path.resolve(process.env.BULWARK_DEMO_DIR ?? 'demo-data');
const port = process.env.BULWARK_DEMO_PORT ?? '8080';
if (!/^\d{1,5}$/.test(port) || Number(port) > 65_535)
  fail(`BULWARK_DEMO_PORT must be a port number, not "${port}"`);
for (const built of [SERVER_CLI, AGENT_SDK, CONSOLE_PAGE]) {
  if (!existsSync(built)) fail(`${path.relative(ROOT, built)} is missing: run \`npm run build\` first`);
}
if (existsSync(dataDir)) {
  if (!reset) fail(`${dataDir} exists; run \`npm run demo -- --reset\` to delete it and start afresh`);
  await rm(dataDir, { recursive: true, force: true });
}
await mkdir(dataDir, { mode: 0o700 });
// It holds private keys, a password hash and a session cookie: never committed by accident.
await writeFile(path.join(dataDir, '.gitignore'), '*\n');

// Random, printed once; long enough that any password policy accepts it.
const generatePassword = () => `Bw${randomBytes(18).toString('base64url')}`;
const password = generatePassword();
/** Two more people, so that an approval can come from someone other than the requester. */
const APPROVERS = ['ana', 'ben'].map((name) => ({
  name,
  email: `${name}@bulwark.localhost`,
  password: generatePassword(),
}));
const children = [];
let stopping = false;

/** Starts a process whose output goes to a log file in the data directory; `onLine` sees its stdout lines. */
function start(name, argv, env, onLine) {
  const log = createWriteStream(path.join(dataDir, `${name}.log`), { mode: 0o600 });
  const child = spawn(process.execPath, argv, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dataDir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: Ctrl-C reaches only this script, which stops the agent, then the server.
    detached: true,
  });
  let pending = '';
  child.stdout.on('data', (chunk) => {
    log.write(chunk);
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) onLine?.(line);
  });
  child.stderr.on('data', (chunk) => log.write(chunk));
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      log.end();
      resolve({ code, signal });
    }),
  );
  const entry = { name, child, exited, log: path.join(dataDir, `${name}.log`) };
  children.push(entry);
  exited.then(async ({ code, signal }) => {
    if (stopping) return;
    process.stderr.write(`demo: ${name} exited unexpectedly (${signal ?? code}); see ${entry.log}\n`);
    const text = await readFile(entry.log, 'utf8').catch(() => '');
    for (const line of text.trimEnd().split('\n').slice(-4))
      process.stderr.write(`  ${line.slice(0, 300)}\n`);
    void stop(1);
  });
  return entry;
}

async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  say('\nstopping the example service and the server…');
  // The agent first, so the server sees it leave; then the server.
  for (const entry of [...children].reverse()) {
    if (entry.child.exitCode === null && entry.child.signalCode === null) entry.child.kill('SIGTERM');
    const { code: exit, signal } = await entry.exited;
    say(`  ${entry.name} stopped (${signal ?? `exit ${exit}`})`);
  }
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));
// Should this script die of anything else, its children do not outlive it.
process.on('exit', () => {
  for (const { child } of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
});

/** A tiny cookie-and-CSRF client of the HTTP API, as the console will be. */
function client(base) {
  let cookie;
  let csrf;
  return async (method, route, body) => {
    const response = await fetch(`${base}${route}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(cookie ? { cookie } : {}),
        ...(csrf ? { 'x-csrf-token': csrf } : {}),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    for (const header of response.headers.getSetCookie()) cookie = header.split(';')[0];
    const text = await response.text();
    const json = text.startsWith('{') ? JSON.parse(text) : undefined;
    if (typeof json?.csrfToken === 'string') csrf = json.csrfToken;
    if (!response.ok)
      throw new Error(`${method} ${route} answered ${response.status}: ${text.slice(0, 300)}`);
    return json;
  };
}

async function until(what, check) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (stopping) await new Promise(() => {}); // stop() exits the process
    const value = await check().catch(() => undefined);
    if (value) return value;
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}`);
}

try {
  say(`demo data: ${dataDir}`);
  const listening = new Promise((resolve) => {
    start(
      'server',
      [SERVER_CLI, 'serve'],
      {
        BULWARK_DATA_DIR: path.join(dataDir, 'server'),
        BULWARK_HOST: '127.0.0.1',
        BULWARK_PORT: port,
        BULWARK_BOOTSTRAP_EMAIL: OWNER_EMAIL,
        BULWARK_BOOTSTRAP_PASSWORD: password,
        // So that the demo accounts sign in with a password alone; a real installation requires MFA.
        BULWARK_BOOTSTRAP_MFA_REQUIRED: 'false',
      },
      (line) => {
        if (!line.startsWith('{')) return;
        try {
          const entry = JSON.parse(line);
          if (entry.msg === 'bulwark is listening' && entry.url) resolve(entry.url);
        } catch {
          // not a log line
        }
      },
    );
  });
  const serverUrl = await Promise.race([
    listening,
    sleep(READY_TIMEOUT_MS).then(() => {
      throw new Error('the server did not start listening in time');
    }),
  ]);
  say(`server listening at ${serverUrl}`);

  const api = client(serverUrl);
  await api('POST', '/api/auth/login', { email: OWNER_EMAIL, password });
  const { token } = await api('POST', `/api/orgs/${ORG}/agent-registration-tokens`, {
    description: 'npm run demo: the example service',
    labels: { env: 'demo' },
    expiresInMinutes: 10,
  });
  for (const approver of APPROVERS) {
    const invitation = await api('POST', `/api/orgs/${ORG}/invitations`, {
      email: approver.email,
      role: 'operator',
    });
    // Accepted with a client of its own: accepting signs the new member in.
    await client(serverUrl)('POST', '/api/invitations/accept', {
      token: invitation.token,
      displayName: `${approver.name[0].toUpperCase()}${approver.name.slice(1)} (demo approver)`,
      password: approver.password,
    });
  }

  const example = start('example-service', ['--import', 'tsx', EXAMPLE], {
    BULWARK_SERVER: serverUrl,
    // From the environment, never argv: every user on the machine can read argv in `ps`.
    BULWARK_REGISTRATION_TOKEN: token,
    EXAMPLE_AGENT_STATE: path.join(dataDir, 'agent', 'state.json'),
    EXAMPLE_DATA_DIR: path.join(dataDir, 'example-data'),
  });

  const agent = await until('the agent to come online', async () => {
    const { agents } = await api('GET', `/api/orgs/${ORG}/agents`);
    return agents.find((a) => a.status === 'online');
  });
  await until('the service report', async () => {
    const { services } = await api('GET', `/api/orgs/${ORG}/services?agent=${agent.id}`);
    return services.find((s) => s.name === SERVICE && s.actions?.length === 4);
  });

  const jar = path.join(dataDir, 'cookies.txt');
  const login = JSON.stringify({ email: OWNER_EMAIL, password });
  const run = JSON.stringify({ agent: agent.id, service: SERVICE, action: 'status', params: {} });
  say();
  say('Bulwark demo is ready.');
  say();
  say(`  console:   ${serverUrl}/   open it in a browser and sign in`);
  say(`  email:     ${OWNER_EMAIL}   (the owner)`);
  say(`  password:  ${password}   (generated for this demo; shown only now)`);
  for (const approver of APPROVERS)
    say(`  approver:  ${approver.email}  ${approver.password}   (an operator, for approvals)`);
  say(`  agent id:  ${agent.id}   (the example service's embedded agent)`);
  say(
    `  service:   ${SERVICE}   actions: status (low), restart (medium), rotate-logs (high), drop-cache (critical)`,
  );
  say(`  processes: server pid ${children[0].child.pid}, example service pid ${example.child.pid}`);
  say(`  logs:      ${path.join(dataDir, 'server.log')}, ${example.log}`);
  say('  MFA:       optional in this demo organization; a real installation requires it by default');
  say();
  say('  Try, in the console, signed in as the owner:');
  say('  - Services: run `status` and watch its output arrive live on the command page;');
  say('  - run `restart`: a medium-risk action asks you to confirm first;');
  say('  - run `rotate-logs`: it waits for an approval. Sign in as an approver in a private window,');
  say('    open Approvals and approve it; the command then runs. `drop-cache` needs both approvers;');
  say('  - Audit log: every step above, hash-chained; verify the chain and export it.');
  say();
  say('  The same first steps over the HTTP API, with curl:');
  say('  # 1. sign in (keeps the session cookie in a jar, the CSRF token in $CSRF)');
  say(
    `  CSRF=$(curl -sS -c '${jar}' -H 'content-type: application/json' -d '${login}' ${serverUrl}/api/auth/login | sed -n 's/.*"csrfToken":"\\([^"]*\\)".*/\\1/p')`,
  );
  say('  # 2. list the services');
  say(`  curl -sS -b '${jar}' ${serverUrl}/api/orgs/${ORG}/services`);
  say('  # 3. run the low-risk `status` action (then GET …/commands/<id>/output for its output)');
  say(
    `  curl -sS -b '${jar}' -H "x-csrf-token: $CSRF" -H 'content-type: application/json' -d '${run}' ${serverUrl}/api/orgs/${ORG}/commands`,
  );
  say();
  say('Bulwark demo ready. Press Ctrl-C to stop the server and the example service.');
} catch (error) {
  process.stderr.write(`demo: ${error.message}\n`);
  for (const entry of children) process.stderr.write(`demo: see ${entry.log}\n`);
  await stop(1);
}
