import { type Config, loadConfig } from '../config.js';
import { type RunningServer, startServer } from '../main.js';
import { createPostgresDatabase, postgresUrl } from './databases.js';
import type { Backend } from './org-world.js';
import { tempDir } from './temp.js';

/** Collects a server's JSON log lines in memory, so tests can read exactly what would reach stdout. */
export class LogCapture {
  text = '';
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
  entries(): Array<Record<string, unknown>> {
    return this.text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }
}

export interface TestServer {
  url: string;
  config: Config;
  dataDir: string;
  logs: LogCapture;
  /** Lines the server printed to the terminal (the first owner's one-time password). */
  printed: string[];
  server: RunningServer;
  /** Shuts the server down and keeps its data directory for inspection or a restart. */
  stop(): Promise<void>;
  /** Shuts down (if still running) and deletes the data directory. */
  close(): Promise<void>;
}

export interface TestServerOptions {
  clock?: () => number;
  /** Start on an existing data directory (a restart) instead of a new one; see restartTestServer. */
  dataDir?: string;
  /**
   * Where the data lives: SQLite in the data directory (the default), or a fresh database on the
   * machine's PostgreSQL that close() drops (stop() keeps it, for a restart).
   */
  backend?: Backend;
}

/**
 * Test servers create their first organization with the MFA policy relaxed, so that a test about
 * something else does not have to enrol an authenticator for every member; tests of the policy pass
 * `BULWARK_BOOTSTRAP_MFA_REQUIRED: 'true'`, the default of a real installation.
 */
export const testServerEnv = (env: Record<string, string>): Record<string, string> => ({
  BULWARK_BOOTSTRAP_MFA_REQUIRED: 'false',
  ...env,
});

/** A real server in this process on a free loopback port, with its own data directory (SQLite unless the env says otherwise). */
export async function startTestServer(
  env: Record<string, string> = {},
  options: TestServerOptions = {},
): Promise<TestServer> {
  const postgres =
    options.backend === 'postgresql' ? await createPostgresDatabase(postgresUrl()!) : undefined;
  if (postgres) env = { BULWARK_DATABASE_URL: postgres.url, ...env };
  const dir = options.dataDir ? { path: options.dataDir, remove: async () => {} } : await tempDir('server');
  const logs = new LogCapture();
  const printed: string[] = [];
  let config: Config;
  let server: RunningServer;
  try {
    config = loadConfig({
      env: testServerEnv({
        BULWARK_DATA_DIR: dir.path,
        BULWARK_PORT: '0',
        BULWARK_LOG_LEVEL: 'info',
        ...env,
      }),
      cwd: dir.path,
    });
    server = await startServer(config, {
      logDestination: logs,
      print: (line) => printed.push(line),
      ...(options.clock ? { clock: options.clock } : {}),
    });
  } catch (error) {
    // A server that refuses to start (a test may expect it) leaves no database behind.
    await postgres?.drop();
    throw error;
  }
  const removeData = async () => {
    if (!options.dataDir) await dir.remove();
    await postgres?.drop();
  };
  return {
    url: server.url,
    config,
    dataDir: dir.path,
    logs,
    printed,
    server,
    stop: () => server.close(),
    async close() {
      await server.close();
      await removeData();
    },
  };
}

/**
 * Starts again on a stopped server's data: its data directory and, on PostgreSQL, its database. The
 * first server's close() still removes both.
 */
export function restartTestServer(
  previous: TestServer,
  env: Record<string, string> = {},
  options: Omit<TestServerOptions, 'dataDir' | 'backend'> = {},
): Promise<TestServer> {
  const database = previous.config.database;
  return startTestServer(
    { ...(database.kind === 'postgres' ? { BULWARK_DATABASE_URL: database.url } : {}), ...env },
    { ...options, dataDir: previous.dataDir },
  );
}
