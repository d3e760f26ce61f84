import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from './config.js';

const FILE = '/etc/bulwark-agent/agent.yaml';

function problems(text: string): string {
  try {
    parseConfig(text, FILE);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected the config to be refused');
}

describe('agent.yaml', () => {
  it('resolves paths relative to the config file and accepts a full service report', () => {
    const config = parseConfig(
      `stateFile: state/agent.json\ntls: { caFile: ca.pem, fingerprint256: ${'ab'.repeat(32)} }`,
      FILE,
    );
    expect(config.stateFile).toBe(path.resolve('/etc/bulwark-agent/state/agent.json'));
    expect(config.tls?.caFile).toBe('/etc/bulwark-agent/ca.pem');
    expect(config.tls?.fingerprint256).toBe(Array(32).fill('AB').join(':'));

    const full = parseConfig(
      `
stateFile: /var/lib/bulwark-agent/state.json
services:
  - name: billing-db
    kind: postgresql
    version: "16.4"
    health: { status: up }
    config:
      - { key: max_connections, value: "200" }
      - { key: password, secret: true, value: hunter2 }
    actions:
      - name: restart
        description: Restart the service
        params: { type: object, properties: {} }
        risk: medium
        timeoutSeconds: 120
`,
      FILE,
    );
    expect(full.stateFile).toBe('/var/lib/bulwark-agent/state.json');
    expect(full.services[0]?.health).toEqual({ status: 'up', message: '' });
    expect(full.services[0]?.actions[0]?.secrets).toEqual([]);
  });

  it('defaults the state file next to the config and the services to none', () => {
    const config = parseConfig('', FILE);
    expect(config.stateFile).toBe('/etc/bulwark-agent/bulwark-agent.state.json');
    expect(config.services).toEqual([]);
  });

  it('refuses unknown keys, naming their path', () => {
    expect(problems('stateFile: a\nstatefile: b')).toMatch(/\(top level\): Unrecognized key: "statefile"/);
    expect(
      problems('services:\n  - { name: web, kind: nginx, health: { status: up, colour: red } }'),
    ).toMatch(/services\.0\.health: Unrecognized key: "colour"/);
  });

  it('names the path of a bad value', () => {
    expect(problems('services:\n  - { name: web, kind: nginx, health: { status: fine } }')).toMatch(
      /services\.0\.health\.status: /,
    );
    expect(problems('services:\n  - { name: Web!, kind: nginx, health: { status: up } }')).toMatch(
      /services\.0\.name: /,
    );
    expect(
      problems(
        'services:\n  - name: web\n    kind: nginx\n    health: { status: up }\n    actions:\n      - { name: restart, description: x, params: {}, risk: extreme, timeoutSeconds: 5 }',
      ),
    ).toMatch(/services\.0\.actions\.0\.risk: /);
    expect(problems('tls: { fingerprint256: nope }')).toMatch(
      /tls\.fingerprint256: must be a SHA-256 fingerprint/,
    );
  });

  it('refuses a server setting: the server is the one pinned at registration', () => {
    expect(problems('server: https://elsewhere.example')).toMatch(
      /server: not allowed: the server comes from the state file/,
    );
  });

  it('refuses duplicate service and action names', () => {
    expect(
      problems(
        'services:\n  - { name: web, kind: nginx, health: { status: up } }\n  - { name: web, kind: nginx, health: { status: up } }',
      ),
    ).toMatch(/services\.1\.name: duplicate service name "web"/);
  });

  it('reports YAML syntax errors with the file', () => {
    expect(problems('services: [')).toMatch(/agent\.yaml: invalid YAML/);
    expect(problems('a: 1\na: 2')).toMatch(/invalid YAML/);
  });
});

describe('exec actions (EXEC-1)', () => {
  const withExec = (argv: string[], param: Record<string, unknown>, required = ['unit'], extra = '') =>
    JSON.stringify({
      ...(extra ? JSON.parse(extra) : {}),
      services: [
        {
          name: 'web',
          kind: 'nginx',
          health: { status: 'up' },
          actions: [
            {
              name: 'restart',
              description: 'x',
              risk: 'low',
              timeoutSeconds: 5,
              params: { type: 'object', required, properties: { unit: param } },
              exec: { argv },
            },
          ],
        },
      ],
    });
  const bounded = { type: 'string', pattern: '^[a-z-]+$', maxLength: 32 };

  it('accepts whole-argument placeholders of bounded string params and keeps exec off the report', () => {
    const config = parseConfig(withExec(['/bin/systemctl', 'restart', '{{unit}}'], bounded), FILE);
    const action = config.actions.get(`web\u0000restart`);
    expect(action?.kind === 'exec' ? action.exec : undefined).toEqual({
      argv: ['/bin/systemctl', 'restart', '{{unit}}'],
      env: {},
      workingDirectory: '/',
      outputLimitBytes: 1024 * 1024,
    });
    expect(config.services[0]?.actions[0]).not.toHaveProperty('exec');
    expect(
      parseConfig(withExec(['systemctl', '{{unit}}'], { type: 'string', enum: ['a', 'b'] }), FILE).actions
        .size,
    ).toBe(1);
  });

  it('refuses partial and double placeholders, precisely', () => {
    expect(problems(withExec(['/bin/systemctl', '--unit={{unit}}'], bounded))).toMatch(
      /services\.0\.actions\.0\.exec\.argv\.1: "--unit=\{\{unit\}\}": a placeholder must be a whole argument/,
    );
    expect(problems(withExec(['/bin/echo', '{{unit}}{{unit}}'], bounded))).toMatch(
      /exec\.argv\.1: .*whole argument/,
    );
    expect(problems(withExec(['{{unit}}'], bounded))).toMatch(/exec\.argv\.0: the program must be literal/);
    expect(problems(withExec(['bin/run'], bounded))).toMatch(/exec\.argv\.0: .*not a relative path/);
  });

  it('refuses placeholders of undeclared, unbounded, non-string or optional params', () => {
    expect(problems(withExec(['/bin/echo', '{{other}}'], bounded))).toMatch(
      /\{\{other\}\} names no parameter/,
    );
    expect(problems(withExec(['/bin/echo', '{{unit}}'], { type: 'string', maxLength: 5 }))).toMatch(
      /must be bounded by an enum of strings, or by a pattern and a maxLength/,
    );
    expect(problems(withExec(['/bin/echo', '{{unit}}'], { type: 'string', pattern: '^a$' }))).toMatch(
      /must be bounded/,
    );
    expect(problems(withExec(['/bin/echo', '{{unit}}'], { type: 'integer', maximum: 3 }))).toMatch(
      /must be declared type: "string"/,
    );
    expect(problems(withExec(['/bin/echo', '{{unit}}'], bounded, []))).toMatch(
      /must be listed in params\.required/,
    );
  });

  it('refuses a params schema Ajv (2020, strict) does not accept', () => {
    expect(problems(withExec(['/bin/echo', '{{unit}}'], { ...bounded, colour: 'red' }))).toMatch(
      /services\.0\.actions\.0\.params: params (is not a valid JSON Schema|cannot be used): .*colour/,
    );
  });

  it('resolves allowedRoots against the config file', () => {
    expect(parseConfig('allowedRoots: [srv, /opt/app]', FILE).allowedRoots).toEqual([
      '/etc/bulwark-agent/srv',
      '/opt/app',
    ]);
    expect(parseConfig('', FILE).allowedRoots).toEqual([]);
  });
});
