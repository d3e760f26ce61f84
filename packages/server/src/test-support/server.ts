import { type Config, loadConfig } from '../config.js';
import { type RunningServer, startServer } from '../main.js';
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
  server: RunningServer;
  /** Shuts the server down and keeps its data directory for inspection. */
  stop(): Promise<void>;
  /** Shuts down (if still running) and deletes the data directory. */
  close(): Promise<void>;
}

/** A real server in this process on a free loopback port, with its own data directory (SQLite unless the env says otherwise). */
export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const dir = await tempDir('server');
  const config = loadConfig({
    env: { BULWARK_DATA_DIR: dir.path, BULWARK_PORT: '0', BULWARK_LOG_LEVEL: 'info', ...env },
    cwd: dir.path,
  });
  const logs = new LogCapture();
  const server = await startServer(config, { logDestination: logs });
  return {
    url: server.url,
    config,
    dataDir: dir.path,
    logs,
    server,
    stop: () => server.close(),
    async close() {
      await server.close();
      await dir.remove();
    },
  };
}
