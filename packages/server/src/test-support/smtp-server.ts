import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('./smtp-server.fixture.mjs', import.meta.url));

export interface ReceivedEmail {
  envelope: { from: string | null; to: string[]; secure: boolean; user: string | null };
  raw: string;
}

export interface SmtpReceiver {
  port: number;
  received: ReceivedEmail[];
  /** Resolves with the first message received (so far or later) that `match` accepts. */
  next(match: (email: ReceivedEmail) => boolean): Promise<ReceivedEmail>;
  /** Stops the process (an SMTP outage); `start()` brings it back on the same port. */
  stop(): Promise<void>;
  /** `stripStartTls`: as a man in the middle who removed STARTTLS from the offer (see the fixture). */
  start(options?: { stripStartTls?: boolean }): Promise<void>;
}

/** A real `smtp-server` process with STARTTLS on a loopback port (test-support/smtp-server.fixture.mjs). */
export async function startSmtpReceiver(options: {
  certFile: string;
  keyFile: string;
  user: string;
  password: string;
}): Promise<SmtpReceiver> {
  let child: ChildProcess | undefined;
  const received: ReceivedEmail[] = [];
  const waiters: Array<{
    match: (email: ReceivedEmail) => boolean;
    resolve: (email: ReceivedEmail) => void;
  }> = [];

  async function launch(port: number, mode = ''): Promise<number> {
    const process_ = spawn(
      process.execPath,
      [FIXTURE, String(port), options.keyFile, options.certFile, options.user, options.password, mode],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = process_;
    let errors = '';
    process_.stderr?.on('data', (chunk: Buffer) => {
      errors += chunk.toString();
    });
    let buffered = '';
    return new Promise<number>((resolve, reject) => {
      process_.once('exit', (code) => reject(new Error(`smtp-server exited (${code}): ${errors}`)));
      process_.stdout?.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        let newline = buffered.indexOf('\n');
        while (newline >= 0) {
          const line = JSON.parse(buffered.slice(0, newline)) as { port?: number } & ReceivedEmail;
          buffered = buffered.slice(newline + 1);
          newline = buffered.indexOf('\n');
          if (line.port !== undefined) {
            resolve(line.port);
            continue;
          }
          received.push(line);
          for (const waiter of [...waiters])
            if (waiter.match(line)) {
              waiters.splice(waiters.indexOf(waiter), 1);
              waiter.resolve(line);
            }
        }
      });
    });
  }

  const port = await launch(0);
  return {
    port,
    received,
    next(match) {
      const already = received.find(match);
      if (already) return Promise.resolve(already);
      return new Promise((resolve) => waiters.push({ match, resolve }));
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
    async start(startOptions = {}) {
      await launch(port, startOptions.stripStartTls ? 'strip-starttls' : '');
    },
  };
}
