import { constants, statSync } from 'node:fs';
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

/**
 * Refuses (at server start) a sink directory someone else could write in: another user or group able
 * to create entries there could pre-create `<sink id>.ndjson` as a symlink (refused at open, below) or
 * replace and delete rotated files, which are the audit log's witnesses.
 */
export function checkSinkDir(dir: string): void {
  let info: ReturnType<typeof statSync>;
  try {
    info = statSync(dir);
  } catch (error) {
    throw new Error(
      `BULWARK_AUDIT_SINK_DIR "${dir}" cannot be used (${(error as NodeJS.ErrnoException).code ?? 'unreadable'}): create it, owned by the server's user, mode 0700.`,
    );
  }
  if (!info.isDirectory()) throw new Error(`BULWARK_AUDIT_SINK_DIR "${dir}" is not a directory.`);
  if ((info.mode & 0o022) !== 0)
    throw new Error(
      `BULWARK_AUDIT_SINK_DIR "${dir}" is writable by its group or by everyone (mode ${(info.mode & 0o777).toString(8)}): make it 0700 (or 0750).`,
    );
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid)
    throw new Error(
      `BULWARK_AUDIT_SINK_DIR "${dir}" is owned by uid ${info.uid}, not by the server's user (uid ${uid}).`,
    );
}

// Append-only and never through a symlink: a link planted under the sink file's name cannot send
// audit lines (with whatever personal data they hold) into another file.
const OPEN_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;

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
      const handle = await open(file, OPEN_FLAGS, 0o600);
      try {
        await handle.write(bytes);
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
  };
}
