import { open, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import type { SinkLine, SinkTransport } from './sinks.lines.js';

/**
 * The NDJSON file sink: appends to `<dir>/<sink id>.ndjson`, fsynced before the cursor moves. The
 * server names the file (an API caller must not choose where the server writes).
 *
 * Rotation never loses a line: it happens only between batches (a batch is never split), by an atomic
 * rename of the current file to `<sink id>.<epoch ms>-<n>.ndjson`; the batch then goes to a new file. A
 * crash after the rename and before the write leaves the cursor where it was, so the batch is written
 * again; a crash after the write and before the cursor moved writes it twice (readers dedupe on `id`).
 * Rotated files are never deleted here: their retention is the operator's.
 */
export function fileSinkPath(dir: string, sinkId: string): string {
  return path.join(dir, `${sinkId}.ndjson`);
}

export function createFileTransport(options: {
  dir: string;
  sinkId: string;
  maxBytes: number;
}): SinkTransport {
  const file = fileSinkPath(options.dir, options.sinkId);
  async function sizeOf(): Promise<number> {
    try {
      return (await stat(file)).size;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw error;
    }
  }
  async function rotate(): Promise<void> {
    for (let n = 0; ; n++) {
      // Named so that a plain sort by name is the order they were written in.
      const target = path.join(options.dir, `${options.sinkId}.${Date.now()}-${n}.ndjson`);
      // Never over an earlier rotated file.
      if ((await stat(target).catch(() => undefined)) !== undefined) continue;
      await rename(file, target);
      return;
    }
  }
  return {
    async send(lines: SinkLine[]): Promise<void> {
      const bytes = Buffer.from(lines.map((line) => line.text).join(''), 'utf8');
      const size = await sizeOf();
      if (size > 0 && size + bytes.length > options.maxBytes) await rotate();
      const handle = await open(file, 'a', 0o600);
      try {
        await handle.write(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
  };
}
