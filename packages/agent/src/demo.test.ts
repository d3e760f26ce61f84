import { type ChildProcess, spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from './test-support/agent-state.js';
import { isAlive, untilDead } from './test-support/command-agent.js';
import { bannerField as field, runDemo as runDemoIn } from './test-support/demo.js';

/**
 * `npm run demo` (scripts/demo.mjs) as a user runs it: the real server process and the example
 * service with its embedded agent (the SDK), real HTTP, real WebSocket. The printed URL serves the
 * console; the printed approvers can sign in; the curl lines it prints are run as printed; the
 * low-risk action succeeds; SIGINT stops everything and nothing is left running. Needs
 * `npm run build` first, and curl. (packages/console/e2e/demo.e2e.test.ts walks the console itself.)
 */

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

const runDemo = (dataDir: string, args: string[] = []) => {
  const demo = runDemoIn(dir.path, dataDir, args);
  started.push(demo.child);
  return demo;
};

describe('npm run demo', () => {
  it.skipIf(!hasCurl)(
    'starts the server and the example service, its printed curl lines run the low-risk action, SIGINT stops everything',
    async () => {
      const dataDir = path.join(dir.path, 'demo-data');
      const demo = runDemo(dataDir);
      const text = await demo.ready();
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      const url = field(text, 'console').replace(/\/$/, '');
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

      // The printed URL is the console's page, which loads its script from the same server.
      const page = await fetch(`${url}/`);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      const script = /<script type="module" crossorigin src="([^"]+)"/.exec(await page.text())?.[1];
      expect((await fetch(`${url}${script}`)).status).toBe(200);
      // Both approvers are members who can sign in with the printed passwords.
      const approvers = [...text.matchAll(/^\s+approver:\s+(\S+)\s+(\S+)/gm)];
      expect(approvers).toHaveLength(2);
      for (const [, approverEmail, approverPassword] of approvers) {
        const signIn = await fetch(`${url}/api/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email: approverEmail, password: approverPassword }),
        });
        expect(signIn.status).toBe(200);
      }

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
      const { csrfToken } = (await login.json()) as { csrfToken: string };
      // The event stream ends with the command. A session opens it with a live ticket, as the console does.
      const issued = await fetch(`${url}/api/orgs/default/commands/${command![1]}/events/tickets`, {
        method: 'POST',
        headers: { cookie, 'x-csrf-token': csrfToken },
      });
      const { ticket } = (await issued.json()) as { ticket: string };
      const events = await fetch(`${url}/api/orgs/default/commands/${command![1]}/events?ticket=${ticket}`, {
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
