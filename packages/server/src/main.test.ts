import { chmodSync, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli, type ServerProcess, startServerProcess } from './test-support/processes.js';
import { tempDir } from './test-support/temp.js';

/** `bulwark serve` as a real process in a fresh directory, the way `npm start` runs it. */

let dir: { path: string; remove(): Promise<void> };
let server: ServerProcess | undefined;

beforeEach(async () => {
  dir = await tempDir('serve');
});
afterEach(async () => {
  await server?.stop('SIGKILL');
  server = undefined;
  await dir.remove();
});

describe('bulwark serve', () => {
  it('starts from an empty directory on loopback with SQLite and a private master key under ./data', async () => {
    server = await startServerProcess({ cwd: dir.path });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    const data = path.join(dir.path, 'data');
    expect(statSync(data).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(data, 'master.key')).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(data, 'bulwark.db')).mode & 0o777).toBe(0o600);
    expect(server.output()).toContain('generated a new master key file');
    expect(await server.stop('SIGTERM')).toBe(0);
    // The last log line is written before the process exits, not lost in an unflushed buffer.
    expect(server.output()).toContain('"msg":"bulwark stopped"');
  });

  it('refuses to start when the master key file is readable by others', async () => {
    server = await startServerProcess({ cwd: dir.path });
    await server.stop('SIGTERM');
    chmodSync(path.join(dir.path, 'data', 'master.key'), 0o644);
    await expect(startServerProcess({ cwd: dir.path })).rejects.toThrow(
      /master key file .* is readable or writable by group or others \(mode 0644\)/,
    );
  });

  it('refuses to start with a master key that does not open its stored keys', async () => {
    server = await startServerProcess({ cwd: dir.path });
    await server.stop('SIGTERM');
    server = undefined;
    const wrongKey = 'Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo=';
    await expect(
      startServerProcess({ cwd: dir.path, env: { BULWARK_MASTER_KEY: wrongKey } }),
    ).rejects.toThrow(
      /server key key_\w+ \(audit-checkpoint\) cannot be opened: data key dek_\w+ \(instance\): wrapped by master key \w+, which this server does not hold/,
    );
  });

  it('refuses a non-loopback bind without TLS or a trusted proxy', async () => {
    const result = await runCli(['serve'], {
      cwd: dir.path,
      env: { BULWARK_HOST: '0.0.0.0', BULWARK_PORT: '0' },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('BULWARK_HOST: binding to 0.0.0.0 (not loopback)');
    expect(existsSync(path.join(dir.path, 'data'))).toBe(false);
  });

  it('on SIGTERM finishes in-flight requests and loses no audit event it acknowledged', async () => {
    server = await startServerProcess({
      cwd: dir.path,
      env: {
        BULWARK_METRICS_TOKEN: 'mT4k9Qz2Xw7Lp3Vn8Rb6Yc1Hd5Jf0Gs2',
        BULWARK_RATE_LIMIT_READ_PER_MINUTE: '100000',
      },
    });
    const url = `${server.url}/metrics`;
    // Each wrong-token request is answered 401 only after its audit event is committed.
    const acknowledged: string[] = [];
    const other: number[] = [];
    let signalled = false;
    const attempt = async () => {
      try {
        const response = await fetch(url, { headers: { authorization: 'Bearer wrong-token-wrong-token' } });
        await response.arrayBuffer();
        if (response.status === 401) acknowledged.push(response.headers.get('x-request-id')!);
        else other.push(response.status);
      } catch {
        other.push(0); // connection refused or reset once the server stopped listening
      }
      if (!signalled && acknowledged.length >= 50) {
        signalled = true;
        server!.child.kill('SIGTERM');
      }
    };
    const workers = Array.from({ length: 16 }, async () => {
      for (let i = 0; i < 40; i++) await attempt();
    });
    const exited = new Promise<number | null>((resolve) =>
      server!.child.once('exit', (code) => resolve(code)),
    );
    await Promise.all(workers);
    expect(await exited).toBe(0);
    expect(signalled).toBe(true);
    expect(other.length).toBeGreaterThan(0); // some requests really did arrive during shutdown
    expect(other.every((status) => status === 503 || status === 0)).toBe(true);

    const db = new BetterSqlite3(path.join(dir.path, 'data', 'bulwark.db'), { readonly: true });
    const stored = new Set(
      (
        db
          .prepare(`select request_id from audit_events where action = 'ops.metrics_auth_failed'`)
          .all() as Array<{ request_id: string }>
      ).map((row) => row.request_id),
    );
    const last = db
      .prepare(`select action from audit_events where chain_id = 'instance' order by seq desc limit 1`)
      .get();
    db.close();
    for (const requestId of acknowledged) expect(stored.has(requestId), requestId).toBe(true);
    expect(last).toEqual({ action: 'system.stopped' });
    const verify = await runCli(['audit', 'verify'], { cwd: dir.path });
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });
});
