import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

export async function tempDir(label: string): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), `bulwark-${label}-`));
  return { path: dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
