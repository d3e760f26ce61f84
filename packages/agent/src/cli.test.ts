import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { generateToken } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeStateFile } from './state.js';
import { AGENT_CLI, agentStateFor, tempDir } from './test-support/agent-state.js';
import { startFakeServer } from './test-support/fake-server.js';

// The built CLI as operators run it: `npm run build` first.

let dir: Awaited<ReturnType<typeof tempDir>>;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await dir.remove();
});

async function cli(
  args: string[],
  env: Record<string, string> = {},
  stdin?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [AGENT_CLI, ...args], {
    cwd: dir.path,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (stdin !== undefined) child.stdin?.end(stdin);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

describe('bulwark-agent', () => {
  it('prints help for the program and each command', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/register .*\n.*run .*\n.*status/s);
    const register = await cli(['register', '--help']);
    expect(register.stdout).toMatch(
      /--server <url>.*--token <token>.*--ca-file <file>.*--fingerprint <sha256>/s,
    );
  });

  it('exits non-zero with a clear message on bad input', async () => {
    const missing = await cli(['register', '--server', 'https://bulwark.example.com']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(
      /^bulwark-agent: a registration token is needed: set BULWARK_REGISTRATION_TOKEN, or pipe it in with --token-stdin/,
    );
    const unknown = await cli(['frobnicate']);
    expect(unknown.code).not.toBe(0);
    const noConfig = await cli(['run', '--config', 'missing.yaml']);
    expect(noConfig.code).toBe(1);
    expect(noConfig.stderr).toMatch(/^bulwark-agent: cannot read config .*missing\.yaml: ENOENT/);
    await writeFile(
      path.join(dir.path, 'bad.yaml'),
      'services:\n  - { name: web, kind: nginx, health: { status: sideways } }\n',
    );
    const badConfig = await cli(['status', '--config', 'bad.yaml']);
    expect(badConfig.code).toBe(1);
    expect(badConfig.stderr).toMatch(/bad\.yaml is invalid:\n +services\.0\.health\.status: /);
    await writeFile(path.join(dir.path, 'empty.yaml'), '');
    const noState = await cli(['status', '--config', 'empty.yaml']);
    expect(noState.code).toBe(1);
    expect(noState.stderr).toMatch(/no state file at .*bulwark-agent\.state\.json; register the agent first/);
  });

  it('takes the registration token from standard input or the environment, from one place only', async () => {
    const server = await startFakeServer();
    try {
      const register = (name: string, extra: string[] = []) => [
        'register',
        '--server',
        server.url,
        '--name',
        name,
        '--state',
        path.join(dir.path, 'tokens', `${name}.json`),
        ...extra,
      ];
      // Piped in: the first line is the token, whatever follows it.
      const piped = generateToken('bwr');
      const fromStdin = await cli(register('piped', ['--token-stdin']), {}, `${piped}\nnot the token\n`);
      expect(fromStdin.code, fromStdin.stderr).toBe(0);
      expect(fromStdin.stderr).toBe('');
      const fromEnv = generateToken('bwr');
      const viaEnv = await cli(register('env'), { BULWARK_REGISTRATION_TOKEN: fromEnv });
      expect(viaEnv.code, viaEnv.stderr).toBe(0);
      expect(viaEnv.stderr).toBe('');
      expect(server.registrations.map((r) => [r.name, r.token])).toEqual([
        ['piped', piped],
        ['env', fromEnv],
      ]);

      // Two sources would leave which token registered to chance: refused before anything is sent.
      const both = await cli(
        register('both', ['--token-stdin']),
        { BULWARK_REGISTRATION_TOKEN: fromEnv },
        piped,
      );
      expect(both.code).toBe(1);
      expect(both.stderr).toMatch(
        /--token-stdin and --token \(or BULWARK_REGISTRATION_TOKEN\) both give a token/,
      );
      const empty = await cli(register('empty', ['--token-stdin']), {}, '\n');
      expect(empty.code).toBe(1);
      expect(empty.stderr).toMatch(/^bulwark-agent: no registration token on standard input/);
      const long = await cli(register('long', ['--token-stdin']), {}, 'x'.repeat(5000));
      expect(long.code).toBe(1);
      expect(long.stderr).toMatch(/too long to be a registration token/);

      // On the command line it still works, with a warning about what it exposes.
      const argv = await cli(register('argv', ['--token', generateToken('bwr')]));
      expect(argv.code, argv.stderr).toBe(0);
      expect(argv.stderr).toMatch(/warning: a token on the command line is visible to other users \(ps\)/);
      expect(server.registrations.map((r) => r.name)).toEqual(['piped', 'env', 'argv']);
    } finally {
      await server.close();
    }
  });

  it('status exits 2 when the handshake fails', async () => {
    const server = await startFakeServer();
    const state = agentStateFor(server, { serverSigningKey: 'A'.repeat(43) });
    await writeStateFile(path.join(dir.path, 'impostor', 'state.json'), state);
    await writeFile(path.join(dir.path, 'impostor', 'agent.yaml'), 'stateFile: state.json\n');
    const result = await cli(['status', '--config', 'impostor/agent.yaml']);
    await server.close();
    expect(result.code).toBe(2);
    expect(result.stdout).toMatch(
      /handshake: +FAILED: server signature does not verify against the pinned key/,
    );
  });

  it('run logs an unhandled rejection redacted, stops and exits 1', async () => {
    // The bug is planted from outside (a preloaded module that leaves a promise rejected when the
    // agent dials its server), so the daemon carries no test-only branch.
    const fixture = new URL('../../server/src/test-support/unhandled-rejection.fixture.mjs', import.meta.url);
    const server = await startFakeServer();
    await writeStateFile(path.join(dir.path, 'failing', 'state.json'), agentStateFor(server));
    await writeFile(path.join(dir.path, 'failing', 'agent.yaml'), 'stateFile: state.json\n');
    const result = await cli(['run', '--config', 'failing/agent.yaml'], {
      NODE_OPTIONS: `--import=${fixture.href}`,
    });
    await server.close();
    expect(result.code).toBe(1);
    const lines = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { level: string; msg: string; [field: string]: unknown });
    expect(lines.filter((line) => line.msg === 'unhandled error; stopping')).toEqual([
      expect.objectContaining({
        level: 'error',
        kind: 'unhandledRejection',
        err: 'nobody handled this rejection',
      }),
    ]);
    expect(lines.at(-1)).toMatchObject({ msg: 'stopped' });
    expect(result.stdout + result.stderr).not.toContain('fixture-password-that-must-not-be-logged');
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });

  it('run exits 3 when the agent is revoked', async () => {
    const server = await startFakeServer({ refuse: { code: 'agent_revoked', message: 'revoked by alice' } });
    await writeStateFile(path.join(dir.path, 'revoked', 'state.json'), agentStateFor(server));
    await writeFile(path.join(dir.path, 'revoked', 'agent.yaml'), 'stateFile: state.json\n');
    const result = await cli(['run', '--config', 'revoked/agent.yaml']);
    await server.close();
    expect(result.code).toBe(3);
    expect(result.stderr).toMatch(/this agent was revoked by the server \(revoked by alice\)/);
  });
});
