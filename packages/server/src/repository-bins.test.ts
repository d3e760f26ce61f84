import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from './test-support/temp.js';

/**
 * `npx bulwark …` and `npx bulwark-agent …` at the repository root right after `npm install`: npm
 * runs the root package's own bins (bin/*.mjs), which load the built CLIs, or, before `npm run build`,
 * say so and exit non-zero instead of throwing a stack trace.
 */

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BINS = ['bulwark', 'bulwark-agent'] as const;

async function run(command: string, args: string[], cwd: string) {
  const child = spawn(command, args, { cwd, env: { ...process.env }, stdio: ['ignore', 'pipe', 'pipe'] });
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

let dir: { path: string; remove(): Promise<void> } | undefined;
afterEach(async () => {
  await dir?.remove();
  dir = undefined;
});

describe('the repository root bins', () => {
  it('run the built CLIs through npx (offline: nothing is fetched from a registry)', async () => {
    const server = await run('npx', ['--offline', 'bulwark', '--help'], ROOT);
    expect(server.code, server.stderr).toBe(0);
    expect(server.stdout).toMatch(/^Usage: bulwark \[options\] \[command\]/);
    expect(server.stdout).toMatch(/\n\s+serve\s/);
    const agent = await run('npx', ['--offline', 'bulwark-agent', '--help'], ROOT);
    expect(agent.code, agent.stderr).toBe(0);
    expect(agent.stdout).toMatch(/^Usage: bulwark-agent \[options\] \[command\]/);
    expect(agent.stdout).toMatch(/\n\s+register\s/);
  });

  it.each(BINS)('%s says to build first when there is no build to run', async (name) => {
    // The same script where its relative path to packages/*/dist leads nowhere: a checkout before
    // `npm run build`.
    dir = await tempDir('bins');
    await mkdir(path.join(dir.path, 'bin'));
    const copy = path.join(dir.path, 'bin', `${name}.mjs`);
    await copyFile(path.join(ROOT, 'bin', `${name}.mjs`), copy);
    const result = await run(process.execPath, [copy, '--help'], dir.path);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(
      new RegExp(`^${name}: not built yet \\(.+ is missing\\); run: npm run build\\n$`),
    );
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });
});
