import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { ensureTestRole, postgresUrl } from './test-support/databases.js';
import { deadPort } from './test-support/ports.js';
import { SessionClient } from './test-support/session-client.js';

/**
 * The image operators build from the Dockerfile (`.ci/docker-image` builds it as bulwark:ci, on a
 * stand-in base since no registry is reachable here), run as docker-compose runs it: a read-only root
 * filesystem with /tmp on a tmpfs, its own user, its health check. On SQLite in a volume, and on
 * PostgreSQL with the two roles (migrations as the owner, serving under row-level security).
 */

const image = inject('dockerImage');
const OWNER = { email: 'owner@smoke.test', password: 'Quiet-Lantern-Over-Mountains-42' };
const containers: string[] = [];
const volumes: string[] = [];
const cleanups: Array<() => Promise<unknown>> = [];

function docker(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('docker', args, { maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Waits for `check` to hold, polling; the deadline is generous (a loaded machine, a cold image). */
async function eventually(what: string, check: () => Promise<boolean>, deadlineMs = 180_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Starts the image as compose does, serving on a loopback port of the host's network. */
async function run(env: Record<string, string>): Promise<{ name: string; url: string }> {
  const name = `bulwark-smoke-${randomBytes(4).toString('hex')}`;
  const volume = `${name}-data`;
  const port = await deadPort();
  const envArgs = Object.entries({
    BULWARK_HOST: '127.0.0.1',
    BULWARK_PORT: String(port),
    BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
    BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
    BULWARK_BOOTSTRAP_ORG_NAME: 'Acme',
    ...env,
  }).flatMap(([key, value]) => ['-e', `${key}=${value}`]);
  containers.push(name);
  volumes.push(volume);
  const started = await docker(
    'run',
    '--detach',
    '--name',
    name,
    '--network',
    'host',
    '--read-only',
    '--tmpfs',
    '/tmp',
    '--cap-drop',
    'ALL',
    '--security-opt',
    'no-new-privileges:true',
    '--mount',
    `type=volume,source=${volume},target=/var/lib/bulwark`,
    // The image's own check, run often enough for a test to see it pass.
    '--health-interval',
    '2s',
    ...envArgs,
    image!,
  );
  expect(started.code, started.stderr).toBe(0);
  const url = `http://127.0.0.1:${port}`;
  await eventually('the container answers /readyz', async () => {
    const state = await docker('inspect', '--format', '{{.State.Status}}', name);
    if (state.stdout.trim() === 'exited') {
      const logs = await docker('logs', name);
      throw new Error(`the container exited: ${logs.stdout}${logs.stderr}`);
    }
    return fetch(`${url}/readyz`).then(
      (response) => response.status === 200,
      () => false,
    );
  });
  return { name, url };
}

async function healthOf(name: string): Promise<string> {
  return (await docker('inspect', '--format', '{{.State.Health.Status}}', name)).stdout.trim();
}

describe.skipIf(!image)('the container image', () => {
  afterAll(async () => {
    for (const name of containers) await docker('rm', '--force', name);
    for (const volume of volumes) await docker('volume', 'rm', '--force', volume);
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('holds the built server and production dependencies only, as a user other than root', async () => {
    const config = await docker(
      'image',
      'inspect',
      '--format',
      '{{.Config.User}} {{json .Config.Entrypoint}}',
      image!,
    );
    expect(config.stdout.trim()).toBe('10001:10001 ["node","packages/server/dist/cli.js"]');
    // Development tools stayed in the build stage.
    const typescript = await docker(
      'run',
      '--rm',
      '--entrypoint',
      'node',
      image!,
      '-e',
      "require.resolve('typescript')",
    );
    expect(typescript.code).not.toBe(0);
    expect(typescript.stderr).toContain("Cannot find module 'typescript'");
    const version = await docker('run', '--rm', image!, '--version');
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  }, 120_000);

  it('serves on SQLite from a read-only root filesystem, signs in, and reports healthy', async () => {
    const { name, url } = await run({});
    const uid = await docker('exec', name, 'id', '-u');
    expect(uid.stdout.trim()).toBe('10001');
    const written = await docker('exec', name, 'sh', '-c', 'touch /opt/bulwark/planted');
    expect(written.stderr).toContain('Read-only file system');
    // Argon2 and SQLite are native modules: a sign-in needs both, built for this image.
    const signIn = await new SessionClient(url).login(OWNER.email, OWNER.password);
    expect(signIn.status).toBe(200);
    await eventually('the health check passes', async () => (await healthOf(name)) === 'healthy');
  }, 240_000);

  it.skipIf(!postgresUrl())(
    'migrates as the schema owner and serves on PostgreSQL as a role under row-level security',
    async () => {
      const suffix = randomBytes(4).toString('hex');
      const owner = `bulwark_image_owner_${suffix}`;
      const app = `bulwark_image_app_${suffix}`;
      const database = `bulwark_test_${suffix}`;
      const admin = new pg.Client({ connectionString: postgresUrl()! });
      await admin.connect();
      try {
        await ensureTestRole(admin, owner);
        await ensureTestRole(admin, app);
        await admin.query(`create database ${database} owner ${owner}`);
      } finally {
        await admin.end();
      }
      cleanups.push(async () => {
        const client = new pg.Client({ connectionString: postgresUrl()! });
        await client.connect();
        await client.query(`drop database if exists ${database} with (force)`);
        await client.query(`drop role if exists ${app}`);
        await client.query(`drop role if exists ${owner}`);
        await client.end();
      });
      const urlAs = (role: string) => {
        const url = new URL(postgresUrl()!);
        url.username = role;
        url.password = '';
        url.pathname = `/${database}`;
        return url.toString();
      };
      const { name, url } = await run({
        BULWARK_DATABASE_URL: urlAs(app),
        BULWARK_DATABASE_OWNER_URL: urlAs(owner),
        BULWARK_MASTER_KEY: randomBytes(32).toString('base64'),
      });
      const signIn = await new SessionClient(url).login(OWNER.email, OWNER.password);
      expect(signIn.status).toBe(200);
      const logs = await docker('logs', name);
      expect(`${logs.stdout}${logs.stderr}`).not.toMatch(/superuser|BYPASSRLS|owns the schema/);
    },
    240_000,
  );
});
