/**
 * Attack: using an SDK action of an embedded agent to do more than it declares, or to learn what it
 * holds. Someone who can shape a command's params (an operator within their rights, a compromised
 * server forwarding a crafted body) sends params that the server's JSON Schema lets through but the
 * action's own zod schema forbids, or extra keys the handler might spread into a query; a handler
 * that fails leaks its stack (file paths, internal names, values) through the error it throws; a
 * handler logs a secret it was granted; a path parameter walks out of the action's data root
 * (`..`, an absolute path, a symbolic link). Stopped by EXEC-3, EXEC-4 and EXEC-5: params are
 * checked with the JSON Schema and again with the zod schema before the handler is called (refused
 * `invalid_params`, nothing journaled); only the error's message leaves, masked; every line a handler
 * writes passes the same masking as exec output; `context.fs` is confined to the roots.
 */
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { invokeHandler } from './handler.js';
import { journalFileFor, openJournal } from './journal.js';
import { createLogger } from './log.js';
import { action, defineService, startEmbeddedAgent } from './sdk.js';
import { tempDir } from './test-support/agent-state.js';
import { outcomeOf, outputOf } from './test-support/command-agent.js';
import { type FakeServer, startFakeServer } from './test-support/fake-server.js';
import { type SdkAgent, startSdkAgent } from './test-support/sdk-agent.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let server: FakeServer;
let sdk: SdkAgent | undefined;

beforeAll(async () => {
  dir = await tempDir();
});
afterAll(async () => {
  await dir.remove();
});
afterEach(async () => {
  await sdk?.stop();
  sdk = undefined;
  await server?.close();
});

const quiet = createLogger({ write: () => {} });

describe('params that the action does not accept', () => {
  it('never reach the handler: refused invalid_params, nothing journaled', async () => {
    const reached: unknown[] = [];
    const service = defineService({
      name: 'db',
      kind: 'postgresql',
      actions: [
        action({
          name: 'drop',
          description: 'Drops one scratch table',
          // The refinement cannot be expressed in JSON Schema: only the agent's zod check enforces it.
          params: z.object({
            table: z
              .string()
              .max(63)
              .refine((t) => t.startsWith('scratch_'), 'only scratch_ tables'),
          }),
          risk: 'critical',
          timeoutSeconds: 10,
          handler: (params) => {
            reached.push(params);
          },
        }),
      ],
    });
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service]);
    const attempts = [
      { table: 'users' }, // passes the JSON Schema, refused by the zod refinement
      { table: 'scratch_a', cascade: true }, // an undeclared key
      { table: 42 }, // the wrong type
      {}, // missing
      { table: `scratch_${'x'.repeat(100)}` }, // too long
    ];
    const ids: string[] = [];
    for (const params of attempts) {
      const command = server.command({
        service: 'db',
        action: 'drop',
        params,
        // Critical: two approvals by others, as the server sends it.
        approvedBy: ['usr_bob', 'usr_carol'],
      });
      ids.push(command.envelope.commandId);
      server.send(command);
      expect(await outcomeOf(server, command.envelope.commandId)).toMatchObject({
        type: 'command_refused',
        reason: 'invalid_params',
      });
    }
    const refused = await outcomeOf(server, ids[0]!);
    expect(refused.message).toContain('only scratch_ tables');
    expect(reached).toEqual([]);
    expect(server.received.some((e) => e.message.type === 'command_started')).toBe(false);
    const stateFile = sdk.stateFile;
    await sdk.stop();
    sdk = undefined;
    const journal = await openJournal(journalFileFor(stateFile), { logger: quiet });
    expect(ids.filter((id) => journal.has(id))).toEqual([]);
    await journal.close();
    await server.close();

    // The same action with acceptable params does run.
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service]);
    const fine = server.command({
      service: 'db',
      action: 'drop',
      params: { table: 'scratch_a' },
      approvedBy: ['usr_bob', 'usr_carol'],
    });
    server.send(fine);
    expect(await outcomeOf(server, fine.envelope.commandId)).toMatchObject({ outcome: 'succeeded' });
    expect(reached).toEqual([{ table: 'scratch_a' }]);
  });
});

describe('a handler that throws', () => {
  it('fails with the error message only: its stack, cause and fields never leave the host', async () => {
    class InternalError extends Error {
      detail = 'SELECT password FROM internal_users';
    }
    const service = defineService({
      name: 'app',
      kind: 'node',
      actions: [
        action({
          name: 'boom',
          description: 'Always fails',
          params: z.object({}),
          risk: 'low',
          timeoutSeconds: 10,
          handler: function secretInternalFunctionName() {
            const error = new InternalError('the cache could not be flushed', {
              cause: new Error('connection to 10.1.2.3:6379 refused'),
            });
            error.stack = `InternalError: the cache could not be flushed\n    at /srv/app/private-module.js:12:7`;
            throw error;
          },
        }),
      ],
    });
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service]);
    const command = server.command({ action: 'boom', params: {} });
    server.send(command);
    expect(await outcomeOf(server, command.envelope.commandId)).toEqual({
      v: 1,
      type: 'command_finished',
      commandId: command.envelope.commandId,
      outcome: 'failed',
      exitCode: null,
      message: 'the cache could not be flushed',
    });
    const everything = JSON.stringify(server.received) + sdk.lines.join('');
    for (const leak of [
      'private-module.js',
      'secretInternalFunctionName',
      '10.1.2.3',
      'internal_users',
      '    at ',
    ]) {
      expect(everything).not.toContain(leak);
    }
  });
});

describe('what a handler writes', () => {
  it('has secret values masked: log lines, returned text and the error message', async () => {
    const secret = 's3cr3t-Value-0123456789';
    const run = async (handler: Parameters<typeof invokeHandler>[0]['handler']) => {
      const chunks = { stdout: '', stderr: '' };
      const execution = invokeHandler({
        handler,
        params: {},
        secrets: { DB_PASSWORD: secret },
        roots: [],
        timeoutMs: 10_000,
        outputLimitBytes: 1024 * 1024,
        onOutput: (stream, data) => {
          chunks[stream] += data;
        },
        log: quiet,
      });
      const result = await execution.result;
      return { result, output: `${chunks.stdout}${chunks.stderr}` };
    };
    const logged = await run((_params, { logger, secrets }) => {
      logger.info(`connecting with ${secrets.DB_PASSWORD}`);
      logger.warn(`twice: ${secret}${secret}`);
      logger.error(`${secret.slice(0, 5)}` + `${secret.slice(5)} again`);
      return `returned ${secret}`;
    });
    expect(logged.result.outcome).toBe('succeeded');
    expect(logged.output).not.toContain(secret);
    expect(logged.output).toContain('connecting with [masked]');
    expect(logged.output).toContain('warning: twice: [masked][masked]');
    expect(logged.output).toContain('error: [masked] again');
    expect(logged.output).toContain('returned [masked]');
    const thrown = await run(() => {
      throw new Error(`login failed for password ${secret}`);
    });
    expect(thrown.result).toMatchObject({ outcome: 'failed', message: 'login failed for password [masked]' });
  });
});

describe('the confined file helpers inside a handler', () => {
  it('refuse every escape from the roots: "..", an absolute path, a symbolic link', async () => {
    const root = path.join(dir.path, 'data');
    const outside = path.join(dir.path, 'outside.txt');
    await mkdir(root, { recursive: true });
    await writeFile(outside, 'TOP-SECRET-OUTSIDE');
    await writeFile(path.join(root, 'inside.txt'), 'inside');
    await symlink(outside, path.join(root, 'link.txt'));
    const service = defineService({
      name: 'files',
      kind: 'node',
      actions: [
        action({
          name: 'read',
          description: 'Reads a file of the data root',
          params: z.object({ file: z.string().max(200) }),
          risk: 'low',
          timeoutSeconds: 10,
          handler: async ({ file }, { fs }) => (await fs.readFile(file)).toString(),
        }),
        action({
          name: 'write',
          description: 'Writes a file of the data root',
          params: z.object({ file: z.string().max(200) }),
          risk: 'low',
          timeoutSeconds: 10,
          handler: async ({ file }, { fs }) => {
            await fs.writeFile(file, 'overwritten');
          },
        }),
      ],
    });
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service], { roots: [root] });
    const attempt = async (name: string, file: string) => {
      const command = server.command({ service: 'files', action: name, params: { file } });
      server.send(command);
      const finished = await outcomeOf(server, command.envelope.commandId);
      return { finished, output: outputOf(server, command.envelope.commandId) };
    };
    expect((await attempt('read', 'inside.txt')).output).toBe('inside\n');
    for (const escapee of ['../outside.txt', outside, 'link.txt', `${root}/../outside.txt`, '/etc/passwd']) {
      const read = await attempt('read', escapee);
      expect(read.finished).toMatchObject({ outcome: 'failed' });
      expect(read.finished.message).toMatch(/not allowed|outside the allowed roots/);
      expect(read.output).not.toContain('TOP-SECRET');
      const written = await attempt('write', escapee);
      expect(written.finished).toMatchObject({ outcome: 'failed' });
    }
    expect(await readFile(outside, 'utf8')).toBe('TOP-SECRET-OUTSIDE');
  });
});

describe('an embedded agent whose roots contain its state file', () => {
  it('does not start: a handler could read the private keys through context.fs', async () => {
    await expect(
      startEmbeddedAgent({
        stateFile: path.join(dir.path, 'state', 'agent.json'),
        services: [],
        roots: [dir.path],
        logger: quiet,
      }),
    ).rejects.toThrow(/is inside the root/);
  });
});
