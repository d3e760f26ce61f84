/**
 * Attacks on registration: (1) the registration token and the agent's new identity travel in clear
 * over a network path someone else controls (http:// to a remote host), or are re-sent by a redirect
 * to wherever the redirect points, so an eavesdropper registers an agent of their own with the
 * token; (2) a second `register` silently replaces an existing agent's keys, so an operator (or a
 * script) destroys an agent identity, or a stolen token is used to swap this host's identity for one
 * the attacker chose. Stopped by: http:// only to loopback, no redirects, and refusing to overwrite
 * an existing state file (re-registration is a new agent after a deliberate delete).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { generateToken } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isLoopbackHost } from './net.js';
import { RegisterError, register } from './register.js';
import { loadStateFile, publicKeyOf } from './state.js';
import { AGENT_CLI, tempDir } from './test-support/agent-state.js';
import { type FakeServer, startFakeServer } from './test-support/fake-server.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let server: FakeServer;

beforeAll(async () => {
  dir = await tempDir();
  server = await startFakeServer();
});
afterAll(async () => {
  await server.close();
  await dir.remove();
});

const stateFile = (name: string) => path.join(dir.path, name, 'state.json');
const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

describe('register', () => {
  it.each([
    'http://bulwark.example.com',
    'http://10.0.0.5:8080',
    'http://[::2]',
    'http://127.0.0.1.attacker.example',
    'http://localhost.attacker.example',
  ])('refuses plain http:// to a non-loopback host: %s', async (url) => {
    const file = stateFile(`insecure-${url.replace(/\W/g, '')}`);
    const error = await register({
      server: url,
      token: generateToken('bwr'),
      name: 'web-1',
      stateFile: file,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RegisterError);
    expect(String(error)).toMatch(/refusing plain http:\/\/ .*use https:\/\//);
    expect(await exists(file)).toBe(false);
  });

  it('allows http:// only to loopback', () => {
    for (const host of ['127.0.0.1', '127.9.8.7', '[::1]', 'localhost', 'LOCALHOST'])
      expect(isLoopbackHost(host)).toBe(true);
    for (const host of ['128.0.0.1', '[::2]', 'example.com', '10.0.0.1', '[::ffff:7f00:1]']) {
      expect(isLoopbackHost(host)).toBe(false);
    }
  });

  it('registers over loopback, pins the server key and writes a 0600 state file without the token', async () => {
    const token = generateToken('bwr');
    const file = stateFile('ok');
    const state = await register({
      server: `${server.url}/`,
      token,
      name: 'web-1',
      stateFile: file,
      hostname: 'web-1.internal',
    });
    const sent = server.registrations.at(-1);
    expect(sent).toMatchObject({ token, name: 'web-1', hostname: 'web-1.internal' });
    expect(sent?.signingKey).toBe(publicKeyOf(state.signingKey));
    expect(sent?.encryptionKey).toBe(publicKeyOf(state.encryptionKey));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const loaded = await loadStateFile(file);
    expect(loaded).toMatchObject({
      agentId: state.agentId,
      server: server.url,
      serverSigningKey: server.serverSigningKey,
    });
    expect(await readFile(file, 'utf8')).not.toContain(token);
  });

  it('refuses to overwrite an existing state file, and does not spend the token', async () => {
    const file = stateFile('existing');
    await register({ server: server.url, token: generateToken('bwr'), name: 'web-1', stateFile: file });
    const before = await readFile(file, 'utf8');
    const registrations = server.registrations.length;
    await expect(
      register({ server: server.url, token: generateToken('bwr'), name: 'web-2', stateFile: file }),
    ).rejects.toThrow(/already exists: this host is already registered/);
    expect(server.registrations.length).toBe(registrations);
    expect(await readFile(file, 'utf8')).toBe(before);
  });

  it("shows the server's error message and writes nothing", async () => {
    const refusing = await startFakeServer({
      registerAnswer: () => ({
        status: 401,
        body: {
          error: {
            code: 'registration_token_invalid',
            message: 'The token is invalid, used or expired.\u001b[2J',
          },
        },
      }),
    });
    try {
      const file = stateFile('refused');
      const error = await register({
        server: refusing.url,
        token: generateToken('bwr'),
        name: 'web-1',
        stateFile: file,
      }).catch((e: Error) => e);
      expect(String(error)).toMatch(
        /HTTP 401 registration_token_invalid\): The token is invalid, used or expired\. \[2J$/,
      );
      expect(await exists(file)).toBe(false);
    } finally {
      await refusing.close();
    }
  });

  it('does not follow a redirect (it would re-send the token elsewhere)', async () => {
    const redirecting = createServer((_req, res) =>
      res.writeHead(307, { location: `${server.url}/elsewhere` }).end(),
    );
    redirecting.listen(0, '127.0.0.1');
    await once(redirecting, 'listening');
    try {
      const { port } = redirecting.address() as AddressInfo;
      const registrations = server.registrations.length;
      await expect(
        register({
          server: `http://127.0.0.1:${port}`,
          token: generateToken('bwr'),
          name: 'web-1',
          stateFile: stateFile('redirect'),
        }),
      ).rejects.toThrow(RegisterError);
      expect(server.registrations.length).toBe(registrations);
    } finally {
      redirecting.closeAllConnections();
      await new Promise((resolve) => redirecting.close(resolve));
    }
  });

  it('refuses a malformed token before contacting the server', async () => {
    const registrations = server.registrations.length;
    await expect(
      register({
        server: server.url,
        token: 'bwr_not-a-token',
        name: 'web-1',
        stateFile: stateFile('badtoken'),
      }),
    ).rejects.toThrow(/not a registration token/);
    expect(server.registrations.length).toBe(registrations);
  });

  it('the CLI exits non-zero with a clear message for http:// to a remote host and for an existing state file', async () => {
    const run = async (args: string[]) => {
      const child = spawn(process.execPath, [AGENT_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk) => {
        stderr += chunk;
      });
      const [code] = await once(child, 'close');
      return { code, stderr };
    };
    const token = generateToken('bwr');
    const remote = await run([
      'register',
      '--server',
      'http://bulwark.example.com',
      '--token',
      token,
      '--name',
      'web-1',
      '--state',
      stateFile('cli'),
    ]);
    expect(remote.code).toBe(1);
    expect(remote.stderr).toMatch(/^bulwark-agent: refusing plain http:\/\/ to bulwark\.example\.com/m);
    expect(remote.stderr).not.toContain(token);

    const existing = stateFile('cli-existing');
    await register({ server: server.url, token: generateToken('bwr'), name: 'web-1', stateFile: existing });
    const again = await run([
      'register',
      '--server',
      server.url,
      '--token',
      token,
      '--name',
      'web-1',
      '--state',
      existing,
    ]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already exists/);
  });
});
