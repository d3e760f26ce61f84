import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { runScript } from './processes.js';
import type { SessionClient } from './session-client.js';

export const AGENT_CLI = fileURLToPath(new URL('../../../agent/dist/cli.js', import.meta.url));

export type RunningAgent = ReturnType<AgentProcesses['run']>;
export type AgentProcesses = ReturnType<typeof agentProcesses>;

/**
 * The real agent (`bulwark-agent`) as processes started in `cwd`: registered with a one-time token,
 * then run with a config, its JSON log lines awaited in order. `killAll` ends any still running.
 */
export function agentProcesses(cwd: string) {
  const children: ChildProcess[] = [];

  return {
    /** `bulwark-agent register` with a fresh one-time token of `org`, writing `./agent/state.json`. */
    async register(serverUrl: string, owner: SessionClient, name: string, org = 'default'): Promise<void> {
      const created = await owner.json<{ token: string }>(
        'POST',
        `/api/orgs/${org}/agent-registration-tokens`,
        {},
      );
      expect(created.status).toBe(201);
      const state = path.join(cwd, 'agent', 'state.json');
      const registered = await runScript(
        AGENT_CLI,
        ['register', '--server', serverUrl, '--name', name, '--state', state],
        { cwd, env: { BULWARK_REGISTRATION_TOKEN: created.body.token } },
      );
      expect(registered.code, registered.stderr).toBe(0);
    },

    /** Runs the real agent and lets the test wait for its JSON log lines, in order. */
    run(config: string) {
      const child = spawn(process.execPath, [AGENT_CLI, 'run', '--config', config], {
        cwd,
        env: { PATH: process.env.PATH ?? '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      const lines: Array<Record<string, unknown>> = [];
      let output = '';
      let consumed = 0;
      const listeners = new Set<() => void>();
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const complete = output.split('\n');
        output = complete.pop() ?? '';
        for (const line of complete)
          if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
        for (const listener of listeners) listener();
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      return {
        child,
        lines,
        stderr: () => stderr,
        /** The next log line (after those already awaited) whose message is `msg`. */
        next(msg: string): Promise<Record<string, unknown>> {
          return new Promise((resolve, reject) => {
            const check = () => {
              const index = lines.findIndex((line, i) => i >= consumed && line.msg === msg);
              if (index === -1) return false;
              consumed = index + 1;
              listeners.delete(check);
              resolve(lines[index]!);
              return true;
            };
            if (check()) return;
            listeners.add(check);
            child.once('exit', (code) =>
              reject(new Error(`the agent exited (${code}) before "${msg}":\n${stderr}`)),
            );
          });
        },
        /** Stops it with SIGTERM and resolves with its exit code. */
        async stop(): Promise<number | null> {
          if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
          child.kill('SIGTERM');
          const [code] = (await once(child, 'exit')) as [number | null];
          return code;
        },
      };
    },

    async killAll(): Promise<void> {
      await Promise.all(
        children.map(async (child) => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGKILL');
          await once(child, 'exit');
        }),
      );
    },
  };
}
