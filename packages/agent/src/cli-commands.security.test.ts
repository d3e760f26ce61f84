/**
 * Attack (and accident): the real agent process is SIGKILLed in the middle of a command (OOM
 * killer, `kill -9`, a host supervisor) and restarted, and the server, not having heard the end,
 * sends the same command again. Without a journal on disk the restarted agent would run it a second
 * time; without killing what the dead agent left behind, the first run would go on unsupervised. The
 * built CLI, as operators run it: the command's process group is killed at restart, the command is
 * reported `interrupted` in `command_states`, and the re-sent command is refused as `replayed`.
 * `npm run build` first.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeStateFile } from './state.js';
import { AGENT_CLI, agentStateFor, tempDir } from './test-support/agent-state.js';
import {
  appConfig,
  execAction,
  isAlive,
  NODE,
  outcomeOf,
  outputOf,
  untilDead,
} from './test-support/command-agent.js';
import { startFakeServer } from './test-support/fake-server.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await dir.remove();
});

function runAgent(): ChildProcess {
  return spawn(NODE, [AGENT_CLI, 'run', '--config', 'agent.yaml'], {
    cwd: dir.path,
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

describe('bulwark-agent run, killed mid-command', () => {
  it('never runs the command again, kills what it left running and reports it interrupted', async () => {
    const server = await startFakeServer();
    await writeStateFile(path.join(dir.path, 'state.json'), agentStateFor(server));
    const runs = path.join(dir.path, 'runs');
    const script = `require('fs').appendFileSync(${JSON.stringify(runs)}, 'run\\n'); process.stdout.write('running ' + process.pid + '\\n'); setInterval(() => {}, 1000)`;
    await writeFile(
      path.join(dir.path, 'agent.yaml'),
      appConfig([execAction('hang', { type: 'object', properties: {} }, { argv: [NODE, '-e', script] })]),
    );

    let agent = runAgent();
    await server.next('command_states');
    const command = server.command({ action: 'hang', timeoutSeconds: 3600 });
    server.send(command);
    const id = command.envelope.commandId;
    await server.waitFor(() => /running \d+/.test(outputOf(server, id)), 0);
    const pid = Number(/running (\d+)/.exec(outputOf(server, id))![1]);

    agent.kill('SIGKILL');
    await once(agent, 'exit');
    // Its own process group: the command outlives the agent, unsupervised, until the restart.
    expect(isAlive(pid)).toBe(true);

    const since = server.received.length;
    agent = runAgent();
    const states = await server.next('command_states', since);
    expect(states.message).toMatchObject({
      commands: [{ commandId: id, state: 'interrupted', exitCode: null }],
    });
    expect(await untilDead(pid)).toBe(true);

    server.send(command);
    expect(await outcomeOf(server, id)).toMatchObject({ type: 'command_refused', reason: 'replayed' });
    expect(await readFile(runs, 'utf8')).toBe('run\n');

    // Acknowledged, it is no longer reported after a reconnect.
    server.send({ v: 1, type: 'command_ack', commandIds: [id] });
    agent.kill('SIGTERM');
    expect((await once(agent, 'exit'))[0]).toBe(0);
    const third = server.received.length;
    agent = runAgent();
    expect((await server.next('command_states', third)).message).toMatchObject({ commands: [] });
    agent.kill('SIGTERM');
    await once(agent, 'exit');
    await server.close();
  });
});
