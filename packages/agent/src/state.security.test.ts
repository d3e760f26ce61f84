/**
 * Attack: another local account (or a backup job, a world-readable home directory) reads the agent's
 * state file and walks away with its private keys, then connects as the agent and receives its
 * commands and the secrets sealed to it. Or the keys leak through the agent's own output: a log line,
 * an error message quoting the file, `status` printing the state.
 * Stopped by: the file is written 0600 (atomically, in a 0700 directory), the agent refuses to load a
 * file that grants group or others any access (AGT-7), and keys are held as KeyObjects and never
 * printed: not by `status`, not in logs, not in a parse error.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from './log.js';
import { type AgentState, loadStateFile, StateFileError, writeStateFile } from './state.js';
import { AGENT_CLI, agentStateFor, keyForms, tempDir } from './test-support/agent-state.js';
import { type FakeServer, startFakeServer } from './test-support/fake-server.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let server: FakeServer;

beforeAll(async () => {
  dir = await tempDir();
  server = await startFakeServer({ heartbeatSeconds: 1 });
});
afterAll(async () => {
  await server.close();
  await dir.remove();
});

async function writeAgent(
  name: string,
): Promise<{ state: AgentState; stateFile: string; configFile: string }> {
  const state = agentStateFor(server);
  const stateFile = path.join(dir.path, name, 'state.json');
  await writeStateFile(stateFile, state);
  const configFile = path.join(dir.path, name, 'agent.yaml');
  await writeFile(
    configFile,
    'stateFile: state.json\nservices:\n  - { name: web, kind: nginx, health: { status: up }, config: [{ key: api_key, secret: true, value: s3cr3t-value }] }\n',
  );
  return { state, stateFile, configFile };
}

function runCli(args: string[]) {
  const child = spawn(process.execPath, [AGENT_CLI, ...args], {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const closed = once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr }));
  return { child, closed, output: () => stdout };
}

describe('the state file (AGT-7)', () => {
  it('is written 0600 in a 0700 directory and loads back to the same identity', async () => {
    const { state, stateFile } = await writeAgent('fresh');
    expect((await stat(stateFile)).mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(stateFile))).mode & 0o777).toBe(0o700);
    const loaded = await loadStateFile(stateFile);
    expect(loaded.agentId).toBe(state.agentId);
    expect(loaded.signingKey.equals(state.signingKey)).toBe(true);
    expect(loaded.encryptionKey.equals(state.encryptionKey)).toBe(true);
  });

  it.each([0o640, 0o604, 0o644, 0o660, 0o602])('is refused at mode %o', async (mode) => {
    const { stateFile } = await writeAgent(`mode-${mode.toString(8)}`);
    await chmod(stateFile, mode);
    await expect(loadStateFile(stateFile)).rejects.toThrow(StateFileError);
    await expect(loadStateFile(stateFile)).rejects.toThrow(/accessible by group or others.*chmod 600/);
  });

  it('is not overwritten by a second write', async () => {
    const { stateFile } = await writeAgent('twice');
    const before = await readFile(stateFile, 'utf8');
    await expect(writeStateFile(stateFile, agentStateFor(server))).rejects.toThrow(/already exists/);
    expect(await readFile(stateFile, 'utf8')).toBe(before);
  });

  it('is refused when it does not validate, without quoting its content', async () => {
    const { state, stateFile } = await writeAgent('invalid');
    const text = await readFile(stateFile, 'utf8');
    const broken = text.replace(/"version": 1/, '"version": 2');
    await writeFile(stateFile, broken);
    await expect(loadStateFile(stateFile)).rejects.toThrow(/is invalid: version: /);
    // A JSON syntax error right next to a key: V8's message would quote that part of the file.
    const signing = JSON.parse(text).keys.signing as string;
    await writeFile(stateFile, text.replace(signing, `${signing}"x`));
    const error = await loadStateFile(stateFile).catch((e: Error) => e);
    expect(String(error)).toMatch(/is not valid JSON/);
    for (const form of keyForms(state)) expect(String(error)).not.toContain(form);
  });

  it('prints and serializes without its keys', async () => {
    const { state, stateFile } = await writeAgent('printed');
    const loaded = await loadStateFile(stateFile);
    const lines: string[] = [];
    createLogger({ write: (line) => lines.push(line) }).info('state', {
      state: loaded,
      key: loaded.signingKey,
    });
    const shown = [inspect(loaded, { depth: 10 }), JSON.stringify(loaded), String(loaded), ...lines].join(
      '\n',
    );
    for (const form of keyForms(state)) expect(shown).not.toContain(form);
    expect(lines[0]).toContain('"key":"[key]"');
  });
});

describe('the CLI', () => {
  it('refuses to run or show status with a state file readable by others, exit non-zero', async () => {
    const { stateFile, configFile } = await writeAgent('cli-open');
    await chmod(stateFile, 0o644);
    for (const command of ['run', 'status']) {
      const result = await runCli([command, '--config', configFile]).closed;
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/accessible by group or others \(mode 0644\)/);
      expect(result.stdout).not.toMatch(/handshake/);
    }
  });

  it('status shows identity and a handshake result, never a private key', async () => {
    const { state, configFile } = await writeAgent('cli-status');
    const result = await runCli(['status', '--config', configFile]).closed;
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(state.agentId);
    expect(result.stdout).toMatch(/server key: SHA256:[0-9a-f]{16} \(pinned\)/);
    expect(result.stdout).toMatch(/handshake: +ok/);
    for (const form of keyForms(state)) expect(result.stdout + result.stderr).not.toContain(form);
  });

  it('run logs JSON lines with the agent id and no keys or secret values, and stops cleanly on SIGTERM', async () => {
    const { state, configFile } = await writeAgent('cli-run');
    const since = server.received.length;
    const run = runCli(['run', '--config', configFile]);
    const report = await server.next('report', since);
    await server.next('heartbeat', since);
    const secretItem = report.message.type === 'report' ? report.message.services[0]?.config[0] : undefined;
    expect(secretItem).toEqual({ key: 'api_key', secret: true, value: '[redacted]' });
    // The log line for the report result arrives after the report: wait for it on stdout.
    while (!run.output().includes('report accepted')) await once(run.child.stdout, 'data');
    run.child.kill('SIGTERM');
    const result = await run.closed;
    expect(result.code).toBe(0);
    const lines = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining(['connecting', 'online', 'report accepted', 'stopped']),
    );
    for (const line of lines) {
      expect(line).toMatchObject({
        time: expect.any(String),
        level: expect.any(String),
        agentId: state.agentId,
      });
    }
    for (const form of [...keyForms(state), 's3cr3t-value'])
      expect(result.stdout + result.stderr).not.toContain(form);
  });
});
