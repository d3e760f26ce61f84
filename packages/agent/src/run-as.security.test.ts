/**
 * Attack: turning an action meant to run as an unprivileged service account into code running as
 * root. The operator wrote `runAs: { user: nobody }` so that a command (or a parameter crafted for
 * it) can only do what that account can; the agent, which is root, must not quietly run it as
 * itself: not because the switch was skipped, not by leaving root's group 0 among the child's
 * supplementary groups, not because the agent was started without the privilege to switch (a
 * non-root agent given CAP_SETUID would even hand its capabilities to the command), and not by
 * mistyping the user. Nor may a command running as another user outlive its timeout or a cancel
 * because the agent can no longer signal it, or start in a directory its user cannot enter.
 * Stopped by EXEC-2 run-as: names resolved at load (unknown ones refuse the config), a refusal to
 * start unless root with CAP_SETUID, CAP_SETGID and CAP_KILL, spawn with uid/gid and cleared
 * groups, a check of the working directory for that user, and the same process-group kill.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from './config.js';
import { AGENT_CLI, tempDir } from './test-support/agent-state.js';
import {
  appConfig,
  type CommandAgent,
  execAction,
  outcomeOf,
  outputOf,
  startCommandAgent,
  untilDead,
} from './test-support/command-agent.js';
import { type FakeServer, startFakeServer } from './test-support/fake-server.js';

// Switching users needs root. CI runs as root and sets BULWARK_TEST_REQUIRE_SERVICES=1 (see
// packages/server/src/test-support/global-setup.ts): there a skip would hide the suite, so it fails.
const isRoot = process.getuid?.() === 0;
if (!isRoot) {
  const message = 'the run-as suite needs root to switch users';
  if (process.env.BULWARK_TEST_REQUIRE_SERVICES === '1') {
    throw new Error(`${message}; BULWARK_TEST_REQUIRE_SERVICES=1 forbids skipping it`);
  }
  process.stderr.write(`\n[bulwark tests] ${message}: it is SKIPPED.\n`);
}

const NO_PARAMS = { type: 'object', properties: {}, additionalProperties: false };
const NO_SUCH_USER = 'bulwark-no-such-user';

/** `nobody` as the system's user database has it (Debian: 65534, group nogroup 65534). */
function nobody(): { uid: number; gid: number } {
  const fields = execFileSync('getent', ['passwd', 'nobody'], { encoding: 'utf8' }).trim().split(':');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** The real uid of a live process, from /proc. */
function uidOf(pid: number): number {
  const line = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(line?.[1]);
}

// A shell leader that starts a grandchild ignoring SIGTERM; both print their pid and wait. A shell,
// not Node: the program must be executable by `nobody` wherever this machine installed Node.
const FAMILY = [
  'echo leader $$',
  `/bin/sh -c 'trap "" TERM; echo grandchild $$; exec sleep 100000' &`,
  'wait',
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

/** Runs the built CLI (`npm run build` first), as root or as another user. */
async function cli(
  args: string[],
  cwd: string,
  options: { uid?: number; gid?: number; prefix?: string[] } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const argv = [...(options.prefix ?? []), process.execPath, AGENT_CLI, ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd,
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid } : {}),
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

describe.skipIf(!isRoot)('an exec action with runAs', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let server: FakeServer | undefined;
  let agent: CommandAgent | undefined;
  let user: { uid: number; gid: number };

  beforeAll(async () => {
    user = nobody();
    dir = await tempDir();
    // Reachable by `nobody`: the working-directory tests and the unprivileged CLI need it.
    await chmod(dir.path, 0o755);
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

  async function online(actions: Record<string, unknown>[], extra: Record<string, unknown> = {}) {
    server = await startFakeServer();
    agent = await startCommandAgent(server, dir.path, appConfig(actions, extra));
    return server;
  }

  async function run(s: FakeServer, action: string) {
    const c = s.command({ action });
    s.send(c);
    const outcome = await outcomeOf(s, c.envelope.commandId);
    return { outcome, stdout: outputOf(s, c.envelope.commandId, 'stdout') };
  }

  it("runs as the user and its primary group, with no supplementary group (not root's 0)", async () => {
    const asNobody = { user: 'nobody' };
    const s = await online([
      execAction('uid', NO_PARAMS, { argv: ['id', '-u'], runAs: asNobody }),
      execAction('gid', NO_PARAMS, { argv: ['id', '-g'], runAs: asNobody }),
      execAction('groups', NO_PARAMS, { argv: ['id', '-G'], runAs: asNobody }),
      execAction('agent', NO_PARAMS, { argv: ['id', '-u'] }),
    ]);
    for (const [action, expected] of [
      ['uid', `${user.uid}\n`],
      ['gid', `${user.gid}\n`],
      ['groups', `${user.gid}\n`],
      // Without runAs, the command runs as the agent: root here.
      ['agent', '0\n'],
    ] as const) {
      const { outcome, stdout } = await run(s, action);
      expect(outcome, action).toMatchObject({ outcome: 'succeeded' });
      expect(stdout, action).toBe(expected);
    }
  });

  it('takes numeric ids as they are, and a declared group as its only group', async () => {
    // 4242 need not exist in /etc/group: numeric ids are not looked up.
    const runAs = { user: user.uid, group: 4242 };
    const s = await online([
      execAction('uid', NO_PARAMS, { argv: ['id', '-u'], runAs }),
      execAction('groups', NO_PARAMS, { argv: ['id', '-G'], runAs }),
    ]);
    expect(await run(s, 'uid')).toMatchObject({ outcome: { outcome: 'succeeded' }, stdout: `${user.uid}\n` });
    expect(await run(s, 'groups')).toMatchObject({ outcome: { outcome: 'succeeded' }, stdout: '4242\n' });
  });

  it('is timed out with its whole process group, though the group belongs to another user', async () => {
    const s = await online([
      execAction('hang', NO_PARAMS, { argv: ['/bin/sh', '-c', FAMILY], runAs: { user: 'nobody' } }),
    ]);
    const c = s.command({ action: 'hang', timeoutSeconds: 1 });
    s.send(c);
    const pids = await familyPids(s, c.envelope.commandId);
    expect([uidOf(pids.leader), uidOf(pids.grandchild)]).toEqual([user.uid, user.uid]);
    expect(await outcomeOf(s, c.envelope.commandId)).toMatchObject({ outcome: 'timed_out' });
    expect(await untilDead(pids.leader)).toBe(true);
    expect(await untilDead(pids.grandchild)).toBe(true);
  });

  it('is cancelled with its whole process group, though the group belongs to another user', async () => {
    const s = await online([
      execAction('hang', NO_PARAMS, { argv: ['/bin/sh', '-c', FAMILY], runAs: { user: 'nobody' } }),
    ]);
    const c = s.command({ action: 'hang', timeoutSeconds: 3600 });
    s.send(c);
    const pids = await familyPids(s, c.envelope.commandId);
    expect([uidOf(pids.leader), uidOf(pids.grandchild)]).toEqual([user.uid, user.uid]);
    s.send({ v: 1, type: 'cancel', commandId: c.envelope.commandId });
    expect(await outcomeOf(s, c.envelope.commandId)).toMatchObject({ outcome: 'cancelled' });
    expect(await untilDead(pids.leader)).toBe(true);
    expect(await untilDead(pids.grandchild)).toBe(true);
  });

  it('is not started in a working directory its user cannot enter', async () => {
    const root = path.join(dir.path, 'roots');
    await mkdir(path.join(root, 'private'), { recursive: true, mode: 0o700 });
    await mkdir(path.join(root, 'open'), { recursive: true });
    await chmod(root, 0o755);
    await chmod(path.join(root, 'private'), 0o700);
    await chmod(path.join(root, 'open'), 0o755);
    const s = await online(
      [
        execAction('private', NO_PARAMS, {
          argv: ['pwd'],
          workingDirectory: path.join(root, 'private'),
          runAs: { user: 'nobody' },
        }),
        execAction('open', NO_PARAMS, {
          argv: ['pwd'],
          workingDirectory: path.join(root, 'open'),
          runAs: { user: 'nobody' },
        }),
      ],
      { allowedRoots: [root] },
    );
    const refused = await run(s, 'private');
    expect(refused.outcome).toMatchObject({
      outcome: 'failed',
      exitCode: null,
      message: expect.stringMatching(
        /^not started: working directory .*\/private is not accessible to nobody \(uid \d+, gid \d+\): no search permission on .*\/private$/,
      ),
    });
    expect(refused.stdout).toBe('');
    expect(await run(s, 'open')).toMatchObject({
      outcome: { outcome: 'succeeded' },
      stdout: `${path.join(root, 'open')}\n`,
    });
  });

  it('is refused at load when the user or the group does not exist', () => {
    const file = path.join(dir.path, 'agent.yaml');
    const config = (runAs: Record<string, unknown>) =>
      appConfig([execAction('who', NO_PARAMS, { argv: ['id'], runAs })]);
    expect(() => parseConfig(config({ user: NO_SUCH_USER }), file)).toThrow(ConfigError);
    expect(() => parseConfig(config({ user: NO_SUCH_USER }), file)).toThrow(
      `services.0.actions.0.exec.runAs.user: user "${NO_SUCH_USER}" does not exist on this host`,
    );
    expect(() => parseConfig(config({ user: 'nobody', group: 'bulwark-no-such-group' }), file)).toThrow(
      'services.0.actions.0.exec.runAs.group: group "bulwark-no-such-group" does not exist on this host',
    );
    // A uid with no entry has no primary group to fall back on.
    expect(() => parseConfig(config({ user: 2_000_000_000 }), file)).toThrow(
      /exec\.runAs\.group: uid 2000000000 has no primary group .*declare runAs\.group/,
    );
    // A name that would read as an option, or an id Node cannot pass, never reaches a lookup.
    expect(() => parseConfig(config({ user: '-nobody' }), file)).toThrow(/exec\.runAs\.user: /);
    expect(() => parseConfig(config({ user: 4_294_967_295 }), file)).toThrow(/exec\.runAs\.user: /);
    expect(parseConfig(config({ user: 'nobody' }), file).actions.size).toBe(1);
  });

  it('makes the agent refuse to start when the user does not exist', async () => {
    const home = path.join(dir.path, 'unknown-user');
    await mkdir(home);
    await writeFile(
      path.join(home, 'agent.yaml'),
      appConfig([execAction('who', NO_PARAMS, { argv: ['id'], runAs: { user: NO_SUCH_USER } })]),
    );
    const result = await cli(['run', '--config', 'agent.yaml'], home);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      new RegExp(
        `agent\\.yaml is invalid:\\n +services\\.0\\.actions\\.0\\.exec\\.runAs\\.user: user "${NO_SUCH_USER}" does not exist on this host`,
      ),
    );
  });

  it('makes an agent that is not root refuse to start, rather than run the command as itself', async () => {
    const home = path.join(dir.path, 'unprivileged');
    await mkdir(home);
    await chmod(home, 0o755);
    const withRunAs = path.join(home, 'run-as.yaml');
    const without = path.join(home, 'plain.yaml');
    await writeFile(
      withRunAs,
      appConfig([execAction('who', NO_PARAMS, { argv: ['id'], runAs: { user: 'nobody' } })]),
      { mode: 0o644 },
    );
    await writeFile(without, appConfig([execAction('who', NO_PARAMS, { argv: ['id'] })]), { mode: 0o644 });
    const refused = await cli(['run', '--config', withRunAs], home, { uid: user.uid, gid: user.gid });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `bulwark-agent: ${withRunAs}: runAs cannot be honoured: the agent runs as uid ${user.uid}, not root: ` +
        'only a root agent can start a command as another user without passing its own privileges on to ' +
        'it. Actions that declare it: app/who as nobody. Run the agent as root with CAP_SETUID, ' +
        'CAP_SETGID and CAP_KILL, or remove runAs\n',
    );
    // The same unprivileged agent without runAs gets past that check (to the missing state file).
    const plain = await cli(['run', '--config', without], home, { uid: user.uid, gid: user.gid });
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/^bulwark-agent: no state file at /);
  });

  it('makes a root agent without CAP_SETUID refuse to start', async () => {
    const home = path.join(dir.path, 'no-capability');
    await mkdir(home);
    await writeFile(
      path.join(home, 'agent.yaml'),
      appConfig([execAction('who', NO_PARAMS, { argv: ['id'], runAs: { user: 'nobody' } })]),
    );
    // setpriv (util-linux) drops the capability from the bounding set, as a container runtime would.
    const result = await cli(['run', '--config', 'agent.yaml'], home, {
      prefix: ['setpriv', '--bounding-set', '-setuid'],
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/runAs cannot be honoured: the agent runs as root without CAP_SETUID /);
  });
});
