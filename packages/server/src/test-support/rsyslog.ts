import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { deadPort } from './ports.js';
import { tempDir } from './temp.js';
import { makeTestCa } from './test-ca.js';

const RSYSLOGD = '/usr/sbin/rsyslogd';

export interface Rsyslog {
  port: number;
  caPem: string;
  /** The messages received so far, one per line (`%rawmsg%`, as sent after the octet count). */
  received(): Promise<string[]>;
  /** Polls the output file until `predicate` holds (or the deadline passes: then throws with what arrived). */
  waitFor(predicate: (lines: string[]) => boolean, timeoutMs?: number): Promise<string[]>;
  stop(): Promise<void>;
}

export const rsyslogAvailable = () => existsSync(RSYSLOGD);

/**
 * Debian's rsyslogd with a TLS listener (imtcp, OpenSSL driver, mode 1) on a free loopback port,
 * writing each message it receives to a file. It cannot listen on port 0 and report it, so a free
 * port is picked and the start retried if another process took it meanwhile.
 */
export async function startRsyslog(): Promise<Rsyslog> {
  const dir = await tempDir('rsyslog');
  const ca = makeTestCa(dir.path, 'syslog');
  const certificate = ca.issue('server');
  const out = path.join(dir.path, 'received.log');
  const pidFile = path.join(dir.path, 'rsyslogd.pid');
  let child: ChildProcess | undefined;
  let port = 0;
  const conf = (listen: number) => `
global(
  workDirectory="${dir.path}"
  maxMessageSize="256k"
  defaultNetstreamDriver="ossl"
  defaultNetstreamDriverCAFile="${ca.caFile}"
  defaultNetstreamDriverCertFile="${certificate.certFile}"
  defaultNetstreamDriverKeyFile="${certificate.keyFile}"
)
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="${listen}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
action(type="omfile" file="${out}" template="raw" flushOnTXEnd="on" asyncWriting="off")
`;
  const deadline = Date.now() + 30_000;
  for (let attempt = 1; ; attempt++) {
    port = await deadPort();
    const confFile = path.join(dir.path, 'rsyslog.conf');
    await writeFile(confFile, conf(port));
    let stderr = '';
    const started = spawn(RSYSLOGD, ['-n', '-f', confFile, '-i', pidFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    started.stdout?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    let gone = false;
    const exited = once(started, 'exit').then(() => {
      gone = true;
    });
    child = started;
    // Ready when a TLS handshake with the CA verified succeeds.
    const ready = async () =>
      new Promise<boolean>((resolve) => {
        const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
        socket.once('secureConnect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
    let up = false;
    while (!gone && Date.now() < deadline) {
      if (await ready()) {
        up = true;
        break;
      }
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 50)), exited]);
    }
    if (up) break;
    started.kill('SIGKILL');
    if (attempt >= 5 || Date.now() >= deadline) {
      await dir.remove();
      throw new Error(`rsyslogd did not start:\n${stderr}`);
    }
  }
  const caPem = ca.caPem;
  const received = async () => {
    const text = await readFile(out, 'utf8').catch(() => '');
    return text.split('\n').filter((line) => line !== '');
  };
  return {
    port,
    caPem,
    received,
    async waitFor(predicate, timeoutMs = 20_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const lines = await received();
        if (predicate(lines)) return lines;
        if (Date.now() > until)
          throw new Error(`rsyslog did not receive what was expected; it has:\n${lines.join('\n')}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stop() {
      if (child && child.exitCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
      await dir.remove();
    },
  };
}
