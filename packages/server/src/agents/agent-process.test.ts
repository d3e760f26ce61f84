import { once } from 'node:events';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AGENT_CLI, type AgentProcesses, agentProcesses } from '../test-support/agent-process.js';
import { runScript, type ServerProcess, startServerProcess } from '../test-support/processes.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';

/**
 * The real agent against the real server, both as processes: `bulwark-agent register`, then `run`,
 * online with its services reported; the server is killed (SIGKILL, no goodbye), started again on the
 * same data and port, and the agent comes back online by itself (AGT-3 reconnect, AGT-4 status).
 */

const OWNER = { email: 'owner@agents.test', password: 'Quiet-Harbor-Lantern-93' };

let dir: { path: string; remove(): Promise<void> };
let agents: AgentProcesses;
const servers: ServerProcess[] = [];

beforeEach(async () => {
  dir = await tempDir('agent-process');
  agents = agentProcesses(dir.path);
});
afterEach(async () => {
  await agents.killAll();
  for (const server of servers.splice(0)) await server.stop('SIGKILL');
  await dir.remove();
});

function serverEnv(port: string): Record<string, string> {
  return {
    BULWARK_DATA_DIR: path.join(dir.path, 'server'),
    BULWARK_PORT: port,
    BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
    BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
    BULWARK_AGENT_HEARTBEAT_SECONDS: '2',
  };
}

async function startServer(port = '0'): Promise<ServerProcess> {
  const server = await startServerProcess({ cwd: dir.path, env: serverEnv(port) });
  servers.push(server);
  return server;
}

const runAgent = (config: string) => agents.run(config);

describe('the real agent process', () => {
  it('registers, comes online with its services, and comes back by itself after the server is killed and restarted', async () => {
    let server = await startServer();
    const owner = new SessionClient(server.url);
    expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
    const created = await owner.json<{ token: string }>(
      'POST',
      '/api/orgs/default/agent-registration-tokens',
      {
        labels: { env: 'test' },
      },
    );
    expect(created.status).toBe(201);

    const state = path.join(dir.path, 'agent', 'state.json');
    // The token from the environment, not argv: a token on a command line is visible to every user in `ps`.
    const registered = await runScript(
      AGENT_CLI,
      ['register', '--server', server.url, '--name', 'web-1', '--state', state],
      {
        cwd: dir.path,
        env: { BULWARK_REGISTRATION_TOKEN: created.body.token },
      },
    );
    expect(registered.code, registered.stderr).toBe(0);
    expect(statSync(state).mode & 0o777).toBe(0o600);
    expect(registered.stdout + registered.stderr).not.toContain(created.body.token);

    const config = path.join(dir.path, 'agent', 'agent.yaml');
    writeFileSync(
      config,
      [
        'stateFile: state.json',
        'services:',
        '  - name: web',
        '    kind: nginx',
        '    version: "1.27"',
        '    health: { status: up }',
      ].join('\n'),
    );
    const agent = runAgent(config);
    const online = await agent.next('online');
    const agentId = online.agentId as string;
    await agent.next('report accepted');

    const status = async () =>
      (await owner.json<{ status: string }>('GET', `/api/orgs/default/agents/${agentId}`)).body.status;
    expect(await status()).toBe('online');
    const services = await owner.json<{ services: Array<{ name: string; agent: { id: string } }> }>(
      'GET',
      '/api/orgs/default/services',
    );
    expect(services.body.services).toContainEqual(
      expect.objectContaining({ name: 'web', agent: expect.objectContaining({ id: agentId }) }),
    );

    // The server dies without closing anything; a new one starts on the same data and port.
    const port = new URL(server.url).port;
    await server.stop('SIGKILL');
    await agent.next('disconnected; will reconnect');
    server = await startServer(port);
    await agent.next('online');

    const again = new SessionClient(server.url);
    expect((await again.login(OWNER.email, OWNER.password)).status).toBe(200);
    expect(
      (await again.json<{ status: string }>('GET', `/api/orgs/default/agents/${agentId}`)).body.status,
    ).toBe('online');

    agent.child.kill('SIGTERM');
    const [code] = (await once(agent.child, 'exit')) as [number | null];
    expect(code).toBe(0);
    const everything = JSON.stringify(agent.lines);
    expect(everything).not.toMatch(/PRIVATE KEY|"d":/);
  }, 90_000);
});

const registerRealAgent = (server: ServerProcess, owner: SessionClient, name: string) =>
  agents.register(server.url, owner, name);

describe('a command end to end', () => {
  it('runs a declared action on the real agent and brings back its exit code and output', async () => {
    const server = await startServer();
    const owner = new SessionClient(server.url);
    expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
    await registerRealAgent(server, owner, 'app-1');
    const config = path.join(dir.path, 'agent', 'agent.yaml');
    writeFileSync(
      config,
      [
        'stateFile: state.json',
        'services:',
        '  - name: greeter',
        '    kind: shell',
        '    health: { status: up }',
        '    actions:',
        '      - name: greet',
        '        description: Say hello',
        '        risk: low',
        '        timeoutSeconds: 30',
        '        params:',
        '          type: object',
        '          properties: { name: { type: string, pattern: "^[a-z]+$", maxLength: 20 } }',
        '          required: [name]',
        '          additionalProperties: false',
        '        exec:',
        '          argv: [echo, hello, "{{name}}"]',
      ].join('\n'),
    );
    const agent = runAgent(config);
    const agentId = (await agent.next('online')).agentId as string;
    await agent.next('report accepted');

    const command = await owner.json<{ id: string; status: string }>('POST', '/api/orgs/default/commands', {
      agent: agentId,
      service: 'greeter',
      action: 'greet',
      params: { name: 'world' },
    });
    expect(command.status).toBe(201);
    // Followed through the live event stream until it ends.
    const events = await owner.openEvents('default', command.body.id);
    const text = await events.text();
    expect(text).toContain('"status":"succeeded"');
    const final = await owner.json<{ status: string; exitCode: number }>(
      'GET',
      `/api/orgs/default/commands/${command.body.id}`,
    );
    expect(final.body).toMatchObject({ status: 'succeeded', exitCode: 0 });
    const output = await owner.json<{ chunks: Array<{ data: string }> }>(
      'GET',
      `/api/orgs/default/commands/${command.body.id}/output`,
    );
    expect(output.body.chunks.map((c) => c.data).join('')).toBe('hello world\n');

    agent.child.kill('SIGTERM');
    await once(agent.child, 'exit');
  }, 60_000);

  it('delivers a secret sealed inside the signed command to the process environment, and masks it in the output', async () => {
    // SEC-3 end to end: stored write-only, granted by the action's declaration, sealed to this agent,
    // opened on the host, placed in the environment, never shown back.
    const server = await startServer();
    const owner = new SessionClient(server.url);
    expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
    const secret = 'db-pass-Vn4Q8wLz2K';
    const stored = await owner.send('POST', '/api/orgs/default/secrets', {
      name: 'DB_PASSWORD',
      value: secret,
    });
    expect(stored.status).toBe(201);
    await registerRealAgent(server, owner, 'db-1');
    const config = path.join(dir.path, 'agent', 'agent.yaml');
    const script =
      "const v = process.env.DB_PASSWORD; console.log('sha256 ' + require('node:crypto').createHash('sha256').update(v).digest('hex')); console.log('value ' + v)";
    writeFileSync(
      config,
      JSON.stringify({
        stateFile: 'state.json',
        services: [
          {
            name: 'db',
            kind: 'postgres',
            health: { status: 'up' },
            actions: [
              {
                name: 'check',
                description: 'Connects with the database password',
                risk: 'low',
                timeoutSeconds: 30,
                params: { type: 'object', additionalProperties: false },
                secrets: ['DB_PASSWORD'],
                exec: { argv: [process.execPath, '-e', script] },
              },
            ],
          },
        ],
      }),
    );
    const agent = runAgent(config);
    const agentId = (await agent.next('online')).agentId as string;
    await agent.next('report accepted');

    const command = await owner.json<{ id: string }>('POST', '/api/orgs/default/commands', {
      agent: agentId,
      service: 'db',
      action: 'check',
    });
    expect(command.status).toBe(201);
    expect(await (await owner.openEvents('default', command.body.id)).text()).toContain(
      '"status":"succeeded"',
    );
    const output = await owner.json<{ chunks: Array<{ data: string }> }>(
      'GET',
      `/api/orgs/default/commands/${command.body.id}/output`,
    );
    const text = output.body.chunks.map((c) => c.data).join('');
    const { createHash } = await import('node:crypto');
    expect(text).toContain(`sha256 ${createHash('sha256').update(secret).digest('hex')}`);
    expect(text).toContain('value [masked]');
    expect(text).not.toContain(secret);
    const used = await owner.json<{ events: Array<{ details: Record<string, unknown> }> }>(
      'GET',
      '/api/orgs/default/audit/events?action=secret.used',
    );
    expect(used.body.events).toHaveLength(1);
    expect(used.body.events[0]!.details).toMatchObject({ commandId: command.body.id, version: 1 });
    expect(JSON.stringify(used.body)).not.toContain(secret);

    agent.child.kill('SIGTERM');
    await once(agent.child, 'exit');
  }, 60_000);

  it('cancels a running command on the real agent: its process is gone and the command ends cancelled', async () => {
    // CMD-5: cancel reaches the running process (its whole process group), end to end.
    const server = await startServer();
    const owner = new SessionClient(server.url);
    expect((await owner.login(OWNER.email, OWNER.password)).status).toBe(200);
    await registerRealAgent(server, owner, 'worker-1');
    const pidFile = path.join(dir.path, 'sleeper.pid');
    const script = `require('node:fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); setInterval(() => {}, 1000)`;
    const config = path.join(dir.path, 'agent', 'agent.yaml');
    writeFileSync(
      config,
      JSON.stringify({
        stateFile: 'state.json',
        services: [
          {
            name: 'worker',
            kind: 'node',
            health: { status: 'up' },
            actions: [
              {
                name: 'sleep',
                description: 'Runs until stopped',
                risk: 'low',
                timeoutSeconds: 600,
                params: { type: 'object', additionalProperties: false },
                exec: { argv: [process.execPath, '-e', script] },
              },
            ],
          },
        ],
      }),
    );
    const agent = runAgent(config);
    const agentId = (await agent.next('online')).agentId as string;
    await agent.next('report accepted');

    const command = await owner.json<{ id: string }>('POST', '/api/orgs/default/commands', {
      agent: agentId,
      service: 'worker',
      action: 'sleep',
    });
    expect(command.status).toBe(201);
    const events = await owner.openEvents('default', command.body.id);
    const reader = events.body!.getReader();
    let text = '';
    while (!text.includes('"status":"running"')) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the stream ended before the command ran: ${text}`);
      text += new TextDecoder().decode(value);
    }
    await vi.waitFor(() => expect(existsSync(pidFile)).toBe(true), { timeout: 20_000, interval: 50 });
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(() => process.kill(pid, 0)).not.toThrow();

    const cancelled = await owner.json('POST', `/api/orgs/default/commands/${command.body.id}/cancel`);
    expect(cancelled.status).toBe(200);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text).toContain('"status":"cancelled"');
    const final = await owner.json<{ status: string }>(
      'GET',
      `/api/orgs/default/commands/${command.body.id}`,
    );
    expect(final.body.status).toBe('cancelled');
    // The agent reports the end once the process group is gone (it reaped its child).
    expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));

    agent.child.kill('SIGTERM');
    await once(agent.child, 'exit');
  }, 60_000);
});
