import { once } from 'node:events';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type ServerProcess, startServerProcess } from '../test-support/processes.js';
import { tempDir } from '../test-support/temp.js';

/**
 * A real `bulwark serve` process meets an error nobody handles. The bug is planted from outside
 * (NODE_OPTIONS=--import of a fixture that leaves a promise rejected at the first request), so the
 * server carries no test-only branch: it must log the error once through its redacting logger, close
 * as on SIGTERM, and exit non-zero.
 */

const FIXTURE = new URL('../test-support/unhandled-rejection.fixture.mjs', import.meta.url);
const FIXTURE_MESSAGE = 'nobody handled this rejection';
const FIXTURE_SECRET = 'fixture-password-that-must-not-be-logged';

let dir: { path: string; remove(): Promise<void> } | undefined;
let server: ServerProcess | undefined;
afterEach(async () => {
  await server?.stop('SIGKILL');
  server = undefined;
  await dir?.remove();
  dir = undefined;
});

describe('bulwark serve, on an unhandled rejection', () => {
  it('logs it redacted, closes gracefully and exits 1', async () => {
    dir = await tempDir('last-resort');
    server = await startServerProcess({
      cwd: dir.path,
      env: { BULWARK_DATA_DIR: path.join(dir.path, 'data'), NODE_OPTIONS: `--import=${FIXTURE.href}` },
    });
    const exited = once(server.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    // The request that trips the fixture; the server may be closing by the time it answers.
    await fetch(`${server.url}/healthz`)
      .then((response) => response.arrayBuffer())
      .catch(() => undefined);
    const [code, signal] = await exited;
    expect([code, signal]).toEqual([1, null]);

    const output = server.output();
    const entries = output
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { level: number; msg: string; [field: string]: unknown });
    const fatal = entries.filter((entry) => entry.msg === 'unhandled error; stopping');
    expect(fatal).toEqual([
      expect.objectContaining({
        level: 60,
        kind: 'unhandledRejection',
        err: expect.objectContaining({ message: FIXTURE_MESSAGE, password: '[redacted]' }),
      }),
    ]);
    expect(output).not.toContain(FIXTURE_SECRET);
    // The graceful close ran to its end after the fatal line, and no raw stack trace reached stderr.
    const messages = entries.map((entry) => entry.msg);
    expect(messages.indexOf('bulwark stopped')).toBeGreaterThan(
      messages.indexOf('unhandled error; stopping'),
    );
    expect(output).not.toMatch(/^\s+at /m);
  });
});
