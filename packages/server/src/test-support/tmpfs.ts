import { execFile, execFileSync } from 'node:child_process';
import { rmdirSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * A small filesystem of a test's own (tmpfs, mounted as root), to fill up: what a server does when its
 * disk is full can only be seen on a disk that is.
 */

const run = promisify(execFile);

export interface SmallDisk {
  path: string;
  unmount(): Promise<void>;
}

/** Mounts a tmpfs of `megabytes` on a new directory. Throws when this process may not mount. */
export async function mountSmallDisk(megabytes: number): Promise<SmallDisk> {
  const dir = await mkdtemp(path.join(tmpdir(), 'bulwark-disk-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${megabytes}m,mode=0700`, 'bulwark-test', dir]);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  let mounted = true;
  // A worker that dies mid-test must not leave the mount behind (lazily: a file may still be open).
  const onExit = () => {
    if (!mounted) return;
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
      rmdirSync(dir);
    } catch {
      // Nothing more can be done while exiting.
    }
  };
  process.on('exit', onExit);
  return {
    path: dir,
    async unmount() {
      if (!mounted) return;
      // Lazy, so that a test that failed with the database still open does not keep the mount.
      await run('umount', ['-l', dir]);
      mounted = false;
      process.off('exit', onExit);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Writes a filler file in `dir` until the filesystem refuses even one more byte (ENOSPC), in smaller
 * and smaller pieces so that no free block is left. `remove()` frees the space again.
 */
export async function fillDisk(dir: string): Promise<{ bytes: number; remove(): Promise<void> }> {
  const file = path.join(dir, 'filler');
  const handle = await open(file, 'w');
  let bytes = 0;
  try {
    for (const size of [1 << 20, 1 << 16, 1 << 12, 1]) {
      const piece = Buffer.alloc(size, 0x5a);
      for (;;) {
        try {
          const { bytesWritten } = await handle.write(piece);
          bytes += bytesWritten;
          if (bytesWritten < size) break;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
          break;
        }
      }
    }
  } finally {
    await handle.close();
  }
  return { bytes, remove: () => rm(file, { force: true }) };
}
