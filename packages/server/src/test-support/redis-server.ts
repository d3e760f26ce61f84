import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { deadPort } from './ports.js';

export interface RedisProcess {
  port: number;
  stop(): Promise<void>;
}

/**
 * A private `redis-server` speaking only TLS on a loopback port, with the certificate given (no
 * plain-text port, no persistence, clients not asked for certificates), for tests of TLS to Redis.
 */
export async function startTlsRedis(options: {
  certFile: string;
  keyFile: string;
  caFile: string;
}): Promise<RedisProcess> {
  const port = await deadPort();
  const child: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--tls-cert-file',
      options.certFile,
      '--tls-key-file',
      options.keyFile,
      '--tls-ca-cert-file',
      options.caFile,
      '--tls-auth-clients',
      'no',
      '--save',
      '',
      '--appendonly',
      'no',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return watch(child, port);
}

/**
 * A private plain-text `redis-server` on a loopback port (a fresh one, or `port` to come back where a
 * stopped one was), no persistence: for tests that take Redis away and bring it back.
 */
export async function startRedis(port?: number): Promise<RedisProcess> {
  const listen = port ?? (await deadPort());
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(listen), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return watch(child, listen);
}

/** Resolves once the server is ready; its stop() ends it and waits for the exit. */
async function watch(child: ChildProcess, port: number): Promise<RedisProcess> {
  let output = '';
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${output}`)));
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('Ready to accept connections')) resolve();
    });
  });
  return {
    port,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}
