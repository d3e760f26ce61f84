import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from './test-support/agent-state.js';
import { isAlive, untilDead } from './test-support/command-agent.js';

/**
 * `npm run demo` (scripts/demo.mjs) as a user runs it: the real server process and the example
 * service with its embedded agent (the SDK), real HTTP, real WebSocket. The curl lines it prints are
 * run as printed; the low-risk action succeeds; SIGINT stops everything and nothing is left running.
 * Needs `npm run build` first, and curl.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DEMO = path.join(ROOT, 'scripts', 'demo.mjs');
const hasCurl = spawnSync('curl', ['--version']).status === 0;

let dir: Awaited<ReturnType<typeof tempDir>>;
const started: ChildProcess[] = [];
const pids: number[] = [];

beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => {
  for (const child of started)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const pid of pids) {
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  await dir.remove();
});

function runDemo(dataDir: string, args: string[] = []) {
  const child = spawn(process.execPath, [DEMO, ...args], {
    cwd: dir.path,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: dir.path,
      BULWARK_DEMO_DIR: dataDir,
      BULWARK_DEMO_PORT: '0',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  return {
    child,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    async ready(): Promise<string> {
      const deadline = Date.now() + 60_000;
      while (!stdout.includes('Bulwark demo ready.')) {
        if (child.exitCode !== null) throw new Error(`the demo exited early:\n${stdout}\n${stderr}`);
        if (Date.now() > deadline) throw new Error(`the demo was not ready in time:\n${stdout}\n${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return stdout;
    },
  };
}

const field = (text: string, name: string) =>
  new RegExp(`^\\s+${name}:\\s+(\\S+)`, 'm').exec(text)?.[1] ?? '';

describe('npm run demo', () => {
  it.skipIf(!hasCurl)(
    'starts the server and the example service, its printed curl lines run the low-risk action, SIGINT stops everything',
    async () => {
      const dataDir = path.join(dir.path, 'demo-data');
      const demo = runDemo(dataDir);
      const text = await demo.ready();
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      const url = field(text, 'server');
      const email = field(text, 'email');
      const password = field(text, 'password');
      const agentId = field(text, 'agent id');
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(agentId).toMatch(/^agt_/);
      const processes = /server pid (\d+), example service pid (\d+)/.exec(text);
      const serverPid = Number(processes?.[1]);
      const examplePid = Number(processes?.[2]);
      pids.push(serverPid, examplePid);
      expect(isAlive(serverPid) && isAlive(examplePid)).toBe(true);

      // The three curl lines, exactly as printed, in one shell (the first sets $CSRF for the third).
      const lines = text
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line.startsWith('CSRF=') || line.startsWith('curl '));
      expect(lines).toHaveLength(3);
      const shell = spawnSync('bash', ['-e', '-c', `${lines.join('\n')}\n`], { encoding: 'utf8' });
      expect(shell.status, shell.stderr).toBe(0);
      expect(shell.stdout).toContain('"name":"example"');
      const command = /\{"id":"(cmd_[^"]+)"[^\n]*"action":"status"/.exec(shell.stdout);
      expect(command, shell.stdout).not.toBeNull();

      // Followed with a session of its own until it ends.
      const login = await fetch(`${url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email, password }),
      });
      expect(login.status).toBe(200);
      const cookie = login.headers.getSetCookie()[0]!.split(';')[0]!;
      // The event stream ends with the command.
      const events = await fetch(`${url}/api/orgs/default/commands/${command![1]}/events`, {
        headers: { cookie },
      });
      expect(await events.text()).toContain('"status":"succeeded"');
      const final = (await (
        await fetch(`${url}/api/orgs/default/commands/${command![1]}`, { headers: { cookie } })
      ).json()) as { status: string; exitCode: number | null };
      expect(final).toMatchObject({ status: 'succeeded', exitCode: 0 });
      const output = (await (
        await fetch(`${url}/api/orgs/default/commands/${command![1]}/output`, { headers: { cookie } })
      ).json()) as { chunks: Array<{ data: string }> };
      expect(output.chunks.map((c) => c.data).join('')).toMatch(/uptime: \d+ s\n[\s\S]*status: ok/);

      // A second run on the same directory is refused without --reset.
      const again = runDemo(dataDir);
      const [againCode] = await again.exited;
      expect(againCode).toBe(1);
      expect(again.stderr()).toContain('--reset');

      demo.child.kill('SIGINT');
      const [code] = await demo.exited;
      expect(code, demo.stderr()).toBe(0);
      expect(demo.stdout()).toMatch(/example-service stopped \(exit 0\)[\s\S]*server stopped \(exit 0\)/);
      expect(await untilDead(serverPid)).toBe(true);
      expect(await untilDead(examplePid)).toBe(true);
    },
    120_000,
  );
});
