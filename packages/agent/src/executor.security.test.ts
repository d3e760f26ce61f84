/**
 * Attack: using a command the agent legitimately runs to do more than it should. A command (or a
 * parameter crafted for it) that reads the agent's own environment for credentials; that runs in,
 * or is pointed through a symlink at, a directory outside the ones the operator allowed; that
 * outlives its timeout or a cancel by leaving a child behind which ignores SIGTERM; that floods the
 * server with output; or that prints a secret it was given, so it lands in the server's database
 * and the console. Stopped by EXEC-2 and EXEC-4: a scrubbed environment, a working directory whose
 * realpath must be inside the allowed roots, SIGTERM then SIGKILL to the whole process group, an
 * output cap with a marker, and masking of secret values on the host, even across reads.
 */
import { existsSync } from 'node:fs';
import { mkdir, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from './config.js';
import {
  ENV_ALLOW_LIST,
  execute,
  MASK,
  OutputPipeline,
  SecretMasker,
  TRUNCATION_MARKER,
} from './executor.js';
import { tempDir } from './test-support/agent-state.js';
import {
  appConfig,
  type CommandAgent,
  execAction,
  NODE,
  outcomeOf,
  outputOf,
  startCommandAgent,
  untilDead,
} from './test-support/command-agent.js';
import { type FakeServer, startFakeServer } from './test-support/fake-server.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let server: FakeServer | undefined;
let agent: CommandAgent | undefined;

beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await dir.remove();
});
afterEach(async () => {
  await agent?.stop();
  agent = undefined;
  await server?.close();
  server = undefined;
});

const NO_PARAMS = { type: 'object', properties: {}, additionalProperties: false };

async function online(actions: Record<string, unknown>[], extra: Record<string, unknown> = {}) {
  server = await startFakeServer();
  agent = await startCommandAgent(server, dir.path, appConfig(actions, extra));
  return server;
}

// A leader that starts a grandchild ignoring SIGTERM; both print their pid and wait forever.
const FAMILY = [
  "const { spawn } = require('child_process');",
  "process.stdout.write('leader ' + process.pid + '\\n');",
  "spawn(process.execPath, ['-e', \"process.on('SIGTERM', () => {}); process.stdout.write('grandchild ' + process.pid + '\\\\n'); setInterval(() => {}, 1000)\"], { stdio: 'inherit' });",
  'setInterval(() => {}, 1000);',
].join('\n');

async function familyPids(s: FakeServer, commandId: string): Promise<{ leader: number; grandchild: number }> {
  await s.waitFor(
    () => /grandchild \d+/.test(outputOf(s, commandId)) && /leader \d+/.test(outputOf(s, commandId)),
    0,
  );
  const text = outputOf(s, commandId);
  return {
    leader: Number(/leader (\d+)/.exec(text)![1]),
    grandchild: Number(/grandchild (\d+)/.exec(text)![1]),
  };
}

describe('what a command can reach', () => {
  it("sees nothing of the agent's environment beyond the allow-list", async () => {
    process.env.BULWARK_TEST_SENTINEL = 'agent-only-credential';
    try {
      const s = await online([
        execAction('env', NO_PARAMS, {
          argv: [NODE, '-e', 'process.stdout.write(JSON.stringify(process.env))'],
          env: { DECLARED: 'yes' },
        }),
      ]);
      const c = s.command({ action: 'env' });
      s.send(c);
      expect(await outcomeOf(s, c.envelope.commandId)).toMatchObject({ outcome: 'succeeded' });
      const env = JSON.parse(outputOf(s, c.envelope.commandId, 'stdout')) as Record<string, string>;
      expect(env.DECLARED).toBe('yes');
      expect(JSON.stringify(env)).not.toContain('agent-only-credential');
      const allowed = new Set<string>([...ENV_ALLOW_LIST, 'DECLARED']);
      expect(Object.keys(env).filter((key) => !allowed.has(key))).toEqual([]);
    } finally {
      delete process.env.BULWARK_TEST_SENTINEL;
    }
  });

  it('cannot be configured to run outside the allowed roots, or with ..', () => {
    const file = path.join(dir.path, 'agent.yaml');
    const withDir = (workingDirectory: string, allowedRoots?: string[]) =>
      appConfig(
        [execAction('pwd', NO_PARAMS, { argv: ['/bin/pwd'], workingDirectory })],
        allowedRoots ? { allowedRoots } : {},
      );
    expect(() => parseConfig(withDir('/etc', ['/srv']), file)).toThrow(
      /exec\.workingDirectory: \/etc is not inside any of allowedRoots \(\/srv\)/,
    );
    expect(() => parseConfig(withDir('/srv/../etc', ['/srv']), file)).toThrow(/must not contain "\.\."/);
    expect(() => parseConfig(withDir('/srv/app'), file)).toThrow(ConfigError);
    expect(() => parseConfig(withDir('/srv/app'), file)).toThrow(/no allowedRoots are configured/);
    expect(parseConfig(withDir('/srv/app', ['/srv']), file).actions.size).toBe(1);
  });

  it('is refused before spawning when its working directory leads outside the roots through a symlink', async () => {
    const root = path.join(dir.path, 'root');
    const outside = path.join(dir.path, 'outside');
    await mkdir(root, { recursive: true });
    await mkdir(outside, { recursive: true });
    await symlink(outside, path.join(root, 'escape'));
    const s = await online(
      [
        execAction('touch', NO_PARAMS, {
          argv: [NODE, '-e', "require('fs').writeFileSync('touched', '')"],
          workingDirectory: path.join(root, 'escape'),
        }),
      ],
      { allowedRoots: [root] },
    );
    const c = s.command({ action: 'touch' });
    s.send(c);
    expect(await outcomeOf(s, c.envelope.commandId)).toMatchObject({
      type: 'command_finished',
      outcome: 'failed',
      exitCode: null,
      message: expect.stringMatching(/^not started: working directory .*escape resolves to .*outside/),
    });
    expect(existsSync(path.join(outside, 'touched'))).toBe(false);
  });
});

describe('a command that will not stop', () => {
  it('is timed out with its whole process group, a grandchild ignoring SIGTERM included', async () => {
    const s = await online([execAction('hang', NO_PARAMS, { argv: [NODE, '-e', FAMILY] })]);
    const c = s.command({ action: 'hang', timeoutSeconds: 1 });
    s.send(c);
    const pids = await familyPids(s, c.envelope.commandId);
    expect(await outcomeOf(s, c.envelope.commandId)).toMatchObject({ outcome: 'timed_out' });
    expect(await untilDead(pids.leader)).toBe(true);
    expect(await untilDead(pids.grandchild)).toBe(true);
  });

  it('is cancelled with its whole process group', async () => {
    const s = await online([execAction('hang', NO_PARAMS, { argv: [NODE, '-e', FAMILY] })]);
    const c = s.command({ action: 'hang', timeoutSeconds: 3600 });
    s.send(c);
    const pids = await familyPids(s, c.envelope.commandId);
    s.send({ v: 1, type: 'cancel', commandId: c.envelope.commandId });
    expect(await outcomeOf(s, c.envelope.commandId)).toMatchObject({ outcome: 'cancelled' });
    expect(await untilDead(pids.leader)).toBe(true);
    expect(await untilDead(pids.grandchild)).toBe(true);
  });
});

describe('what leaves the host', () => {
  it('is capped: output over the limit is cut with the marker, and the command still completes', async () => {
    const s = await online([
      execAction('flood', NO_PARAMS, {
        argv: [NODE, '-e', "process.stdout.write('x'.repeat(200000)); process.stdout.write('end')"],
        outputLimitBytes: 1000,
      }),
    ]);
    const c = s.command({ action: 'flood' });
    s.send(c);
    expect(await outcomeOf(s, c.envelope.commandId)).toMatchObject({ outcome: 'succeeded' });
    expect(outputOf(s, c.envelope.commandId)).toBe('x'.repeat(1000) + TRUNCATION_MARKER);
  });

  it('has every secret value masked, also one split across two reads, and the secret is in its env', async () => {
    const secret = 'hunter2-correct-horse';
    const chunks: string[] = [];
    const script = [
      "const fs = require('fs');",
      'const s = process.env.API_TOKEN;',
      "fs.writeSync(1, 'token=' + s.slice(0, 7));",
      "fs.writeSync(1, s.slice(7) + ' and again ' + s + '\\n');",
      "fs.writeSync(2, 'err ' + s);",
    ].join('\n');
    const result = await execute({
      argv: [NODE, '-e', script],
      env: {},
      secrets: { API_TOKEN: secret },
      workingDirectory: '/',
      allowedRoots: [],
      timeoutMs: 10_000,
      outputLimitBytes: 1 << 20,
      onOutput: (stream, data) => chunks.push(`${stream}:${data}`),
    }).result;
    expect(result.outcome).toBe('succeeded');
    const text = chunks.join('|');
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('correct-horse');
    const stdout = chunks
      .filter((c) => c.startsWith('stdout:'))
      .map((c) => c.slice(7))
      .join('');
    expect(stdout).toBe(`token=${MASK} and again ${MASK}\n`);
  });

  it('masks a value split at any point between two pieces, and one cut by the output limit', () => {
    const secret = 'sekret-value';
    const text = `a ${secret} b ${secret}`;
    for (let cut = 0; cut <= text.length; cut++) {
      const masker = new SecretMasker([secret, 'other']);
      const out = masker.push(text.slice(0, cut)) + masker.push(text.slice(cut)) + masker.end();
      expect(out).toBe(`a ${MASK} b ${MASK}`);
    }
    // The limit falls inside the secret: the part before the cut must not leak either.
    const emitted: string[] = [];
    const pipeline = new OutputPipeline(8, [secret], (_stream, data) => emitted.push(data));
    pipeline.write('stdout', Buffer.from(`ab${secret}`));
    expect(emitted.join('')).toBe(`ab${MASK}${TRUNCATION_MARKER}`);
  });
});
