/**
 * Attack: an SDK action handler given a path by an operator's parameter ("which log file to read")
 * is steered outside the files it was meant to touch: `../../etc/shadow`, an absolute `/etc/passwd`,
 * or a symbolic link planted inside the allowed directory that points at the agent's state file or
 * `/root/.ssh`, to read, overwrite or list them. Stopped by EXEC-3: `..` is refused outright, an
 * absolute path must lie inside a root, and the real path after every link must too; a write never
 * follows a link in its final component.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfinedPathError, createConfinedFs } from './confined-fs.js';
import { tempDir } from './test-support/agent-state.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let root: string;
let outside: string;

beforeAll(async () => {
  dir = await tempDir();
  root = path.join(dir.path, 'root');
  outside = path.join(dir.path, 'outside');
  await mkdir(path.join(root, 'logs'), { recursive: true });
  await mkdir(outside, { recursive: true });
  await writeFile(path.join(root, 'logs', 'app.log'), 'inside');
  await writeFile(path.join(outside, 'secret'), 'outside');
  await symlink(path.join(outside, 'secret'), path.join(root, 'link-to-secret'));
  await symlink(outside, path.join(root, 'link-to-dir'));
  await symlink(path.join(outside, 'new-file'), path.join(root, 'dangling'));
  await symlink(path.join(root, 'logs', 'app.log'), path.join(root, 'inner-link'));
});
afterAll(async () => {
  await dir.remove();
});

describe('confined file helpers', () => {
  it('read, write and list inside the roots, links that stay inside included', async () => {
    const fs = createConfinedFs([root]);
    expect((await fs.readFile('logs/app.log')).toString()).toBe('inside');
    expect((await fs.readFile(path.join(root, 'inner-link'))).toString()).toBe('inside');
    await fs.writeFile('logs/new.txt', 'written');
    expect(await readFile(path.join(root, 'logs', 'new.txt'), 'utf8')).toBe('written');
    expect((await fs.list('logs')).sort()).toEqual(['app.log', 'new.txt']);
  });

  it('refuse .. wherever it appears, even when it would land inside', async () => {
    const fs = createConfinedFs([root]);
    for (const target of ['../outside/secret', 'logs/../../outside/secret', 'logs/../logs/app.log']) {
      await expect(fs.readFile(target)).rejects.toThrow(/"\.\." is not allowed/);
    }
    await expect(fs.writeFile('../outside/x', 'x')).rejects.toThrow(ConfinedPathError);
    await expect(fs.list('..')).rejects.toThrow(ConfinedPathError);
  });

  it('refuse absolute paths outside the roots', async () => {
    const fs = createConfinedFs([root]);
    await expect(fs.readFile('/etc/passwd')).rejects.toThrow(/outside the allowed roots/);
    await expect(fs.readFile(path.join(outside, 'secret'))).rejects.toThrow(/outside the allowed roots/);
    await expect(fs.list('/')).rejects.toThrow(/outside the allowed roots/);
  });

  it('refuse symbolic links that lead outside, for read, list and write', async () => {
    const fs = createConfinedFs([root]);
    await expect(fs.readFile('link-to-secret')).rejects.toThrow(/leads outside the allowed roots/);
    await expect(fs.readFile('link-to-dir/secret')).rejects.toThrow(/leads outside the allowed roots/);
    await expect(fs.list('link-to-dir')).rejects.toThrow(/leads outside the allowed roots/);
    await expect(fs.writeFile('link-to-dir/planted', 'x')).rejects.toThrow(/leads outside/);
    await expect(fs.writeFile('link-to-secret', 'overwritten')).rejects.toThrow(/symbolic link/);
    await expect(fs.writeFile('dangling', 'x')).rejects.toThrow(/symbolic link/);
    expect(await readFile(path.join(outside, 'secret'), 'utf8')).toBe('outside');
    expect(existsSync(path.join(outside, 'planted'))).toBe(false);
    expect(existsSync(path.join(outside, 'new-file'))).toBe(false);
  });
});
