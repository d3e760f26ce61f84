import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServerProcess, startServerProcess } from '../../server/src/test-support/processes.js';
import { SessionClient } from '../../server/src/test-support/session-client.js';
import { tempDir } from '../../server/src/test-support/temp.js';

/**
 * `npm run package:agent` builds `bulwark-agent` as one file (AGT, issue 20 item 12): the test builds
 * it, then runs only that file, from a directory outside the repository with nothing but PATH in its
 * environment (no node_modules, no NODE_PATH to fall back on), against a real server process:
 * register with the token on standard input, report a service, and run a command end to end.
 * What bundling can break shows up here: a module loaded at run time that the bundle lacks, ws's
 * optional native add-ons, the exec pipeline, the crypto of the handshake and of signed commands.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const OWNER = { email: 'owner@single-executable.test', password: 'Quiet-Harbor-Lantern-93' };

let dir: { path: string; remove(): Promise<void> };
let executable: string;
let server: ServerProcess | undefined;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await tempDir('single-executable');
  // Built into the test's own directory: an operator's dist/agent is left alone.
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [path.join(ROOT, 'scripts/package-agent.mjs'), '--out', path.join(dir.path, 'build')],
    { cwd: ROOT, maxBuffer: 1024 * 1024 },
  );
  executable = stdout.trim().split('\n').at(-1) ?? '';
}, 600_000);

afterAll(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  await server?.stop('SIGKILL');
  await dir?.remove();
});

/** Runs the executable with only PATH and `env` in its environment, in `cwd` (outside the repository). */
function start(args: string[], options: { cwd: string; env?: Record<string, string>; stdin?: string }) {
  const child = spawn(executable, args, {
    cwd: options.cwd,
    env: { PATH: process.env.PATH ?? '', ...options.env },
    stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  if (options.stdin !== undefined) child.stdin?.end(options.stdin);
  let stdout = '';
  let stderr = '';
  const lines: Array<Record<string, unknown>> = [];
  const waiting = new Set<() => void>();
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    const complete = stdout.split('\n');
    for (const line of complete.slice(lines.length, -1))
      lines.push(line.startsWith('{') ? (JSON.parse(line) as Record<string, unknown>) : { text: line });
    for (const check of waiting) check();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const closed = once(child, 'close') as Promise<[number | null]>;
  let consumed = 0;
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    async exitCode(): Promise<number | null> {
      return (await closed)[0];
    },
    /** The next JSON log line (after those already awaited) whose message is `msg`. */
    next(msg: string): Promise<Record<string, unknown>> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const index = lines.findIndex((line, i) => i >= consumed && line.msg === msg);
          if (index === -1) return;
          consumed = index + 1;
          waiting.delete(check);
          resolve(lines[index]!);
        };
        waiting.add(check);
        check();
        closed.then(([code]) => reject(new Error(`the agent exited (${code}) before "${msg}":\n${stderr}`)));
      });
    },
  };
}

describe('bulwark-agent as a single executable', () => {
  it('is one self-contained file that starts without warnings and reports its version', async () => {
    expect(path.basename(executable)).toBe('bulwark-agent');
    expect(statSync(executable).mode & 0o111).not.toBe(0);
    const version = start(['--version'], { cwd: dir.path });
    expect(await version.exitCode()).toBe(0);
    expect(version.stdout().trim()).toMatch(/^\d+\.\d+\.\d+$/);
    // Neither Node's experimental-feature warning nor a failed require of an add-on on every start.
    expect(version.stderr()).toBe('');
  });

  it('is installed where the systemd unit runs it, by a line that never holds the token', () => {
    // The unit ships next to the executable (the folder an operator copies to the host), as written
    // in packages/agent, and runs that executable by its name; nothing else is left in the folder.
    expect(readdirSync(path.dirname(executable)).sort()).toEqual(['bulwark-agent', 'bulwark-agent.service']);
    const unit = readFileSync(path.join(path.dirname(executable), 'bulwark-agent.service'), 'utf8');
    expect(unit).toBe(readFileSync(path.join(ROOT, 'packages/agent/bulwark-agent.service'), 'utf8'));
    const execStart = /^ExecStart=(\S+) run --config \/etc\/bulwark-agent\/agent\.yaml$/m.exec(unit)?.[1];
    expect(execStart).toBe('/usr/local/bin/bulwark-agent');
    expect(path.basename(execStart ?? '')).toBe(path.basename(executable));
    // The console's install line (components/install-agent.tsx) puts the executable at that path and
    // registers with --token-stdin: a token in the copied line would end up in `ps` and shell history.
    const dialog = readFileSync(path.join(ROOT, 'packages/console/src/components/install-agent.tsx'), 'utf8');
    expect(/const EXECUTABLE = '([^']+)'/.exec(dialog)?.[1]).toBe(execStart);
    expect(dialog).toMatch(/register --server \$\{shellWord\(server\)\} --token-stdin --state/);
    expect(dialog).not.toMatch(/--token \$\{/);
  });

  it('registers with the token on standard input, reports its service and runs a command end to end', async () => {
    server = await startServerProcess({
      cwd: dir.path,
      env: {
        BULWARK_DATA_DIR: path.join(dir.path, 'server'),
        BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
        BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
      },
    });
    const owner = new SessionClient(server.url);
    expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
    const created = await owner.json<{ token: string }>(
      'POST',
      '/api/orgs/default/agent-registration-tokens',
      {
        labels: { env: 'test' },
      },
    );
    expect(created.status).toBe(201);

    // The host: a directory of its own, nothing of the repository reachable from it.
    const host = path.join(dir.path, 'host');
    const state = path.join(host, 'state.json');
    mkdirSync(host, { mode: 0o700 });
    const registered = start(
      ['register', '--server', server.url, '--name', 'sea-1', '--state', state, '--token-stdin'],
      { cwd: host, stdin: `${created.body.token}\n` },
    );
    expect(await registered.exitCode(), registered.stderr()).toBe(0);
    expect(registered.stdout()).toMatch(/^registered agent agt_\S+ \(sea-1\) in org default\b/m);
    expect(registered.stdout() + registered.stderr()).not.toContain(created.body.token);
    expect(statSync(state).mode & 0o777).toBe(0o600);

    const config = path.join(host, 'agent.yaml');
    writeFileSync(
      config,
      [
        'stateFile: state.json',
        'services:',
        '  - name: greeter',
        '    kind: shell',
        '    version: "1.0"',
        '    health: { status: up }',
        '    actions:',
        '      - name: greet',
        '        description: Say hello',
        '        risk: low',
        '        timeoutSeconds: 30',
        '        params:',
        '          type: object',
        '          properties: { name: { type: string, pattern: "^[a-z]+$", maxLength: 20 } }',
        '          required: [name]',
        '          additionalProperties: false',
        '        exec:',
        '          argv: [echo, hello, "{{name}}"]',
      ].join('\n'),
    );
    const agent = start(['run', '--config', config], { cwd: host });
    const agentId = (await agent.next('online')).agentId as string;
    await agent.next('report accepted');

    const services = await owner.json<{ services: Array<{ name: string; agent: { id: string } }> }>(
      'GET',
      '/api/orgs/default/services',
    );
    expect(services.body.services).toContainEqual(
      expect.objectContaining({ name: 'greeter', agent: expect.objectContaining({ id: agentId }) }),
    );

    const command = await owner.json<{ id: string }>('POST', '/api/orgs/default/commands', {
      agent: agentId,
      service: 'greeter',
      action: 'greet',
      params: { name: 'world' },
    });
    expect(command.status).toBe(201);
    expect(await (await owner.openEvents('default', command.body.id)).text()).toContain(
      '"status":"succeeded"',
    );
    const final = await owner.json<{ status: string; exitCode: number }>(
      'GET',
      `/api/orgs/default/commands/${command.body.id}`,
    );
    expect(final.body).toMatchObject({ status: 'succeeded', exitCode: 0 });
    const output = await owner.json<{ chunks: Array<{ data: string }> }>(
      'GET',
      `/api/orgs/default/commands/${command.body.id}/output`,
    );
    expect(output.body.chunks.map((c) => c.data).join('')).toBe('hello world\n');

    agent.child.kill('SIGTERM');
    expect(await agent.exitCode()).toBe(0);
    expect(agent.stderr()).toBe('');
  }, 120_000);
});
