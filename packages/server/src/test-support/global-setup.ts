import { execFile } from 'node:child_process';
import { Socket } from 'node:net';
import type { TestProject } from 'vitest/node';

/**
 * Finds the PostgreSQL and Redis the suites run against. `.ci/run` passes their URLs and sets
 * BULWARK_TEST_REQUIRE_SERVICES=1, which turns a missing service into a failure of the whole run; on
 * a laptop without them the suites that need them skip, and this says so once, plainly.
 */

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string | null;
    redisUrl: string | null;
    /** The image built from the Dockerfile (`.ci/docker-image`), when this run has one. */
    dockerImage: string | null;
  }
}

const DEFAULT_POSTGRES = 'postgres://postgres@127.0.0.1:5432/postgres';
const DEFAULT_REDIS = 'redis://127.0.0.1:6379';

function answers(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(Number(port), hostname.replace(/^\[|\]$/g, ''), () => done(true));
  });
}

async function resolveService(name: string, envVar: string, fallback: string): Promise<string | null> {
  const required = process.env.BULWARK_TEST_REQUIRE_SERVICES === '1';
  const url = process.env[envVar] || fallback;
  if (await answers(url)) return url;
  const message = `${name} at ${new URL(url).host} does not answer (set ${envVar})`;
  if (required) throw new Error(`${message}; BULWARK_TEST_REQUIRE_SERVICES=1 forbids skipping its suites`);
  process.stderr.write(`\n[bulwark tests] ${message}: its suites are SKIPPED.\n`);
  return null;
}

/**
 * The container image its smoke test runs, named by BULWARK_TEST_DOCKER_IMAGE (`.ci/run` builds it
 * first): null without one, which skips that suite; a named image Docker does not have is an error.
 */
async function resolveDockerImage(): Promise<string | null> {
  const image = process.env.BULWARK_TEST_DOCKER_IMAGE;
  if (!image) return null;
  await new Promise<void>((resolve, reject) =>
    execFile('docker', ['image', 'inspect', image], (error) =>
      error
        ? reject(new Error(`BULWARK_TEST_DOCKER_IMAGE=${image}, but Docker does not have it`))
        : resolve(),
    ),
  );
  return image;
}

export default async function setup(project: TestProject): Promise<void> {
  project.provide('dockerImage', await resolveDockerImage());
  project.provide(
    'postgresUrl',
    await resolveService('PostgreSQL', 'BULWARK_TEST_POSTGRES_URL', DEFAULT_POSTGRES),
  );
  project.provide('redisUrl', await resolveService('Redis', 'BULWARK_TEST_REDIS_URL', DEFAULT_REDIS));
}
