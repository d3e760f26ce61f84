import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { testServerEnv } from './server.js';

/** The built CLI, as `npm start` and operators run it. `npm test` builds before it tests. */
export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `bulwark` CLI to completion. */
export const runCli = (args: string[], options: RunOptions) => runScript(CLI, args, options);

export interface RunOptions {
  cwd: string;
  env?: Record<string, string>;
  /** Sees standard error as it arrives, to act on a line the process prints while it waits. */
  onStderr?: (soFar: string) => void;
}

/** Runs a Node script (a built CLI) to completion, with only PATH and `env` in its environment. */
export async function runScript(script: string, args: string[], options: RunOptions): Promise<CliResult> {
  const child = spawn(process.execPath, [script, ...args], {
    cwd: options.cwd,
    env: { PATH: process.env.PATH ?? '', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
    options.onStderr?.(stderr);
  });
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  output(): string;
  /** Sends the signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `bulwark serve` as a real process and resolves once it logs that it is listening. */
export async function startServerProcess(options: {
  cwd: string;
  env?: Record<string, string>;
}): Promise<ServerProcess> {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    cwd: options.cwd,
    env: testServerEnv({ PATH: process.env.PATH ?? '', BULWARK_PORT: '0', ...options.env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      for (const line of output.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const entry = JSON.parse(line) as { msg?: string; url?: string };
          if (entry.msg === 'bulwark is listening' && entry.url) resolve(entry.url);
        } catch {
          // A partial line; the rest arrives with the next chunk.
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    exited.then(([code]) => reject(new Error(`server exited with ${code} before listening:\n${output}`)));
  });
  return {
    url,
    child,
    output: () => output,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = await exited;
      return code;
    },
  };
}
