import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** `npm run demo` (scripts/demo.mjs) started as a user starts it, for the tests that follow it. */

const DEMO = fileURLToPath(new URL('../../../../scripts/demo.mjs', import.meta.url));

export interface DemoRun {
  child: ChildProcess;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
  stdout(): string;
  stderr(): string;
  /** Resolves with everything printed once the demo says it is ready; rejects if it exits first. */
  ready(): Promise<string>;
}

/** Starts the demo in `cwd` with its data in `dataDir`, on a free port. */
export function runDemo(cwd: string, dataDir: string, args: string[] = []): DemoRun {
  const child = spawn(process.execPath, [DEMO, ...args], {
    cwd,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: cwd,
      BULWARK_DEMO_DIR: dataDir,
      BULWARK_DEMO_PORT: '0',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
    async ready() {
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

/** A `name: value` line of the demo's banner. */
export const bannerField = (text: string, name: string): string =>
  new RegExp(`^\\s+${name}:\\s+(\\S+)`, 'm').exec(text)?.[1] ?? '';
