import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig, settings } from './config.js';

// The packaging files (Dockerfile, deploy/) are not run by the test suite: no image is built here.
// These checks keep them honest cheaply: a renamed setting, a root image, a dropped health check or
// a route moved out from under nginx breaks this test instead of a deployment.

const root = fileURLToPath(new URL('../../../', import.meta.url));
const read = (file: string) => readFileSync(path.join(root, file), 'utf8');

const dockerfile = read('Dockerfile');
const composeText = read('deploy/compose.yaml');
const compose = parse(composeText, { merge: true }) as {
  services: Record<string, Service>;
  secrets: Record<string, { file: string }>;
};
// Comments out: what is checked is what nginx reads.
const nginx = read('deploy/nginx.conf').replace(/^\s*#.*$/gm, '');
const unit = read('deploy/systemd/bulwark.service');
const envExamples = ['deploy/env.example', 'deploy/systemd/bulwark.env.example'];

interface Service {
  image?: string;
  build?: unknown;
  read_only?: boolean;
  tmpfs?: string[];
  secrets?: string[];
  volumes?: string[];
  environment?: Record<string, string>;
  networks?: Record<string, { ipv4_address?: string }> | string[];
}

const SETTINGS = new Set(Object.values(settings).map((setting) => setting.env));
const bulwarkServices = Object.entries(compose.services).filter(
  ([, service]) => service.image === 'bulwark:local',
);

/** What `docker compose` would put in for ${VAR}, ${VAR:?…} and ${VAR:-…}, from sample values. */
const SAMPLE: Record<string, string> = {
  DATABASE_PASSWORD: 'sample-database-password',
  DATABASE_OWNER_PASSWORD: 'sample-owner-password',
  REDIS_PASSWORD: 'sample-redis-password',
  POSTGRES_PASSWORD: 'sample-postgres-password',
  BULWARK_PUBLIC_URL: 'https://bulwark.example.com',
};
function interpolate(value: string): string {
  return value.replace(/\$\{([A-Z0-9_]+)(?::[?-][^}]*)?\}/g, (_, name: string) => {
    const sample = SAMPLE[name];
    if (sample === undefined)
      throw new Error(`compose.yaml uses \${${name}}: add a sample value to this test`);
    return sample;
  });
}

describe('Dockerfile', () => {
  it('builds on a base given as BASE_IMAGE, node:20-bookworm-slim by default, in every stage', () => {
    const firstFrom = dockerfile.search(/^FROM /m);
    expect(dockerfile.slice(0, firstFrom)).toMatch(/^ARG BASE_IMAGE=node:20-bookworm-slim$/m);
    const froms = dockerfile.match(/^FROM .*$/gm) ?? [];
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const from of froms) expect(from).toMatch(/^FROM \$\{BASE_IMAGE\} AS \w+$/);
  });

  it('runs as a user other than root, checks health with node, and serves from the built CLI', () => {
    const users = dockerfile.match(/^USER\s+(\S+)$/gm) ?? [];
    expect(users.length).toBeGreaterThan(0);
    const last = users
      .at(-1)!
      .replace(/^USER\s+/, '')
      .split(':')[0];
    expect(['root', '0']).not.toContain(last);

    const check = /^HEALTHCHECK .*\\\n\s+CMD \["node", "-e", "(.*)"\]$/m.exec(dockerfile);
    expect(check).not.toBeNull();
    const probe = check![1]!;
    const route = /\/(healthz|readyz)'/.exec(probe)?.[1];
    expect(route).toBeDefined();
    expect(read('packages/server/src/ops/ops.routes.ts')).toContain(`url: '/${route}'`);

    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "packages\/server\/dist\/cli\.js"\]$/m);
    expect(dockerfile).toMatch(/^CMD \["serve"\]$/m);
    expect(existsSync(path.join(root, 'packages/server/src/cli.ts'))).toBe(true);
  });

  it('copies the manifest of every workspace before npm ci, and only files that exist', () => {
    const workspaces = (JSON.parse(read('package.json')) as { workspaces: string[] }).workspaces;
    const beforeInstall = dockerfile.slice(0, dockerfile.indexOf('RUN npm ci'));
    for (const workspace of workspaces) expect(beforeInstall).toContain(`COPY ${workspace}/package.json`);
    for (const [, sources] of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm))
      for (const source of sources!.split(' '))
        expect(existsSync(path.join(root, source)), source).toBe(true);
  });

  it('keeps local build output, dependencies and secrets out of the build context', () => {
    const ignored = read('.dockerignore').split('\n');
    for (const pattern of ['**/node_modules', '**/dist', 'deploy/secrets', '.git'])
      expect(ignored).toContain(pattern);
  });
});

describe('deploy/compose.yaml', () => {
  it('runs three Bulwark instances on PostgreSQL and Redis with one master key file, read-only', () => {
    expect(bulwarkServices.map(([name]) => name).sort()).toEqual(['bulwark-1', 'bulwark-2', 'bulwark-3']);
    expect(compose.services.postgres?.image).toMatch(/^postgres:/);
    expect(compose.services.redis?.image).toMatch(/^redis:/);
    expect(existsSync(path.join(root, 'deploy', 'postgres/init-bulwark.sh'))).toBe(true);
    const keyFiles = new Set<string>();
    for (const [name, service] of bulwarkServices) {
      expect(service.read_only, name).toBe(true);
      expect(service.tmpfs, name).toContain('/tmp');
      expect(service.secrets, name).toContain('master_key');
      expect(
        service.volumes?.some((volume) => volume.endsWith(':/var/lib/bulwark')),
        name,
      ).toBe(true);
      const env = service.environment!;
      expect(env.BULWARK_DATABASE_URL, name).toMatch(/^postgres:\/\/bulwark:/);
      // Migrations as the schema's owner, serving as a role under row-level security (HA-2).
      expect(env.BULWARK_DATABASE_OWNER_URL, name).toMatch(/^postgres:\/\/bulwark_owner:/);
      expect(env.BULWARK_REDIS_URL, name).toMatch(/^rediss?:\/\//);
      keyFiles.add(env.BULWARK_MASTER_KEY_FILE!);
    }
    expect([...keyFiles]).toEqual(['/run/secrets/master_key']);
    expect(compose.secrets.master_key?.file).toBe('./secrets/master.key');
  });

  it("gives each instance a configuration the server accepts, trusting nginx's address alone", () => {
    const networks = compose.services.nginx?.networks as Record<string, { ipv4_address?: string }>;
    const nginxAddress = Object.values(networks)[0]?.ipv4_address;
    expect(nginxAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    for (const [name, service] of bulwarkServices) {
      const env = Object.fromEntries(
        Object.entries(service.environment!).map(([key, value]) => [key, interpolate(String(value))]),
      );
      const config = loadConfig({ env: { ...env, BULWARK_DATA_DIR: '/var/lib/bulwark' } });
      expect(config.trustedProxies, name).toEqual([nginxAddress]);
      expect(config.database.kind, name).toBe('postgres');
    }
  });
});

describe('deploy/nginx.conf', () => {
  it('sends to every instance, upgrades the agent WebSocket and leaves event streams unbuffered', () => {
    for (const [name] of bulwarkServices)
      expect(nginx).toMatch(new RegExp(`^\\s+server ${name}:8080\\b`, 'm'));

    expect(read('packages/server/src/agents/gateway.ts')).toContain('/agent/v1/connect');
    const agentLocation = /location = \/agent\/v1\/connect \{([^}]*)\}/.exec(nginx)?.[1] ?? '';
    expect(agentLocation).toContain('proxy_set_header Upgrade $http_upgrade;');
    expect(agentLocation).toContain('proxy_set_header Connection $connection_upgrade;');
    // A location that sets headers inherits none: the forwarded ones must be there too.
    expect(agentLocation).toContain('proxy_set_header X-Forwarded-For');
    expect(agentLocation).toContain('proxy_set_header Host $http_host;');

    const sse = /location ~ (\S+) \{([^}]*)\}/.exec(nginx);
    expect(sse?.[2]).toContain('proxy_buffering off;');
    const streams = new RegExp(sse![1]!);
    const routes = `${read('packages/server/src/commands/org-events.routes.ts')}${read('packages/server/src/commands/commands.routes.ts')}`;
    for (const url of ['/api/orgs/:org/events', '/api/orgs/:org/commands/:command/events']) {
      expect(routes).toContain(`url: '${url}'`);
      expect(url.replace(':org', 'default').replace(':command', 'cmd_1')).toMatch(streams);
    }
    expect(nginx).toContain('proxy_set_header Host $http_host;');
    expect(nginx).not.toMatch(/\$request\b/);
  });
});

describe('deploy/systemd/bulwark.service', () => {
  it('is hardened, runs as its own user and may write only its data directory', () => {
    const directive = (name: string) => new RegExp(`^${name}=(.*)$`, 'm').exec(unit)?.[1];
    expect(directive('User')).toBe('bulwark');
    expect(directive('NoNewPrivileges')).toBe('yes');
    expect(directive('ProtectSystem')).toBe('strict');
    expect(directive('EnvironmentFile')).toBe('/etc/bulwark/bulwark.env');
    const dataDir = /^Environment=BULWARK_DATA_DIR=(.*)$/m.exec(unit)?.[1];
    expect(directive('ReadWritePaths')).toBe(dataDir);
    expect(directive('ExecStart')).toMatch(/ \/opt\/bulwark\/packages\/server\/dist\/cli\.js serve$/);
  });
});

describe('settings named by the packaging files', () => {
  it('are all real settings of config.ts, so a renamed one breaks this test', () => {
    const files = [
      'Dockerfile',
      'deploy/compose.yaml',
      'deploy/nginx.conf',
      'deploy/systemd/bulwark.service',
      ...envExamples,
    ];
    const named = new Map<string, string>();
    for (const file of files)
      for (const [name] of read(file).matchAll(/\bBULWARK_[A-Z0-9_]+/g)) named.set(name, file);
    for (const [, service] of bulwarkServices)
      for (const name of Object.keys(service.environment ?? {})) named.set(name, 'deploy/compose.yaml');
    expect(named.size).toBeGreaterThan(10);
    const unknown = [...named]
      .filter(([name]) => !SETTINGS.has(name))
      .map(([name, file]) => `${file}: ${name}`);
    expect(unknown).toEqual([]);
  });

  it('in the systemd environment example make a configuration the server accepts', () => {
    const env = Object.fromEntries(
      read('deploy/systemd/bulwark.env.example')
        .split('\n')
        .filter((line) => /^BULWARK_[A-Z0-9_]+=/.test(line))
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    expect(() => loadConfig({ env })).not.toThrow();
  });
});

describe('docs/deployment.md', () => {
  it('links only to files that exist', () => {
    const doc = read('docs/deployment.md');
    const links = [...doc.matchAll(/\]\(([^)\s]+)\)/g)].map((match) => match[1]!);
    const local = links.filter((link) => !/^[a-z]+:/.test(link) && !link.startsWith('#'));
    expect(local.length).toBeGreaterThan(5);
    const missing = local.filter((link) => !existsSync(path.join(root, 'docs', link.split('#')[0]!)));
    expect(missing).toEqual([]);
  });
});
