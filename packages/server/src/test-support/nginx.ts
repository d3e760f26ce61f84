import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { deadPort } from './ports.js';

/** Debian's nginx (nginx-light); never one built or downloaded by the tests. */
export const NGINX = '/usr/sbin/nginx';
export const hasNginx = existsSync(NGINX);

/**
 * On a laptop without nginx the suites behind it skip; in CI (BULWARK_TEST_REQUIRE_SERVICES=1, which
 * installs it) a skip would hide a failure, so the missing proxy fails the run instead.
 */
export function requireNginxInCi(suite: string): void {
  if (process.env.BULWARK_TEST_REQUIRE_SERVICES === '1' && !hasNginx)
    throw new Error(`CI needs ${NGINX} for ${suite}`);
}

/** The response header that names the instance a live stream was proxied to (see streamConfig). */
export const UPSTREAM_HEADER = 'x-bulwark-upstream';

export interface Nginx {
  /** `http://127.0.0.1:<port>`: the address browsers, API clients and agents use. */
  url: string;
  /** What nginx wrote to its error log (stderr) so far. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * The configuration of deploy/nginx.conf, on plain HTTP on a loopback port (no TLS to terminate in a
 * test), with every path of its own under `dir`. One difference: the live streams' responses name
 * the instance they were proxied to (`X-Bulwark-Upstream`), so a test can tell where a stream landed.
 */
function configOf(dir: string, port: number, upstreams: string[]): string {
  return `
worker_processes auto;
error_log stderr warn;
pid ${dir}/nginx.pid;

events {
    worker_connections 1024;
}

http {
    server_tokens off;

    log_format bulwark '$remote_addr [$time_iso8601] "$request_method $uri $server_protocol" '
                       '$status $body_bytes_sent $request_time "$upstream_addr"';
    access_log ${dir}/access.log bulwark;

    client_body_temp_path ${dir}/client-body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }

    upstream bulwark {
${upstreams.map((address) => `        server ${address} max_fails=2 fail_timeout=10s;`).join('\n')}
        keepalive 32;
    }

    server {
        listen 127.0.0.1:${port};
        client_max_body_size 2m;

        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Connection "";

        location = /agent/v1/connect {
            proxy_pass http://bulwark;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }

        location ~ ^/api/orgs/[^/]+/(events|commands/[^/]+/events)$ {
            proxy_pass http://bulwark;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            add_header X-Bulwark-Upstream $upstream_addr always;
        }

        location = /metrics {
            return 404;
        }

        location / {
            proxy_pass http://bulwark;
            proxy_read_timeout 60s;
        }
    }
}
`;
}

/**
 * nginx as a child process in the foreground (`daemon off`), in front of `upstreams` (host:port),
 * listening on a free loopback port; ready once it answers `/healthz` from an upstream. nginx cannot
 * listen on port 0 and report it, so a free port is picked and the start retried if another process
 * took it meanwhile.
 */
export async function startNginx(options: { dir: string; upstreams: string[] }): Promise<Nginx> {
  const { dir, upstreams } = options;
  // Its workers run as an unprivileged user when the tests run as root: they must reach their
  // temporary directories (nginx creates them for that user) to buffer large responses.
  await chmod(dir, 0o755);
  const confFile = path.join(dir, 'nginx.conf');
  for (let attempt = 1; ; attempt++) {
    const port = await deadPort();
    await writeFile(confFile, configOf(dir, port, upstreams));
    const child: ChildProcess = spawn(
      NGINX,
      ['-p', dir, '-c', confFile, '-e', 'stderr', '-g', 'daemon off;'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = once(child, 'exit');
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    let ready = false;
    while (!gone && !ready && Date.now() < deadline) {
      ready = await fetch(`${url}/healthz`)
        .then((response) => response.status === 200)
        .catch(() => false);
      if (!ready) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const nginx: Nginx = {
      url,
      output: () => output,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        // SIGQUIT would wait for the open WebSockets and streams; SIGTERM is nginx's fast shutdown.
        child.kill('SIGTERM');
        await exited;
      },
    };
    if (ready) return nginx;
    await nginx.stop();
    if (attempt < 3 && output.includes('Address already in use')) continue;
    throw new Error(`nginx did not start:\n${output}`);
  }
}
