import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { action, defineService, paramsJsonSchema, SdkDefinitionError } from './sdk.js';
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

/** The server's check of a reported params schema (agents/services.service.ts): Ajv 2020, strict. */
function serverCompiles(schema: Record<string, unknown>): void {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  expect(schema.type).toBe('object');
  expect(ajv.validateSchema(schema), ajv.errorsText(ajv.errors)).toBe(true);
  ajv.compile(schema);
}

describe('the params schema derived from zod', () => {
  it('is draft 2020-12, closed, and compiles under Ajv 2020 strict, as the server requires', () => {
    const schemas = [
      z.object({}),
      z.object({
        table: z
          .string()
          .regex(/^[a-z_]+$/)
          .max(63),
        limit: z.number().int().min(1).default(10),
      }),
      z.object({ mode: z.enum(['fast', 'safe']), dryRun: z.boolean().optional() }),
      z.object({ owner: z.email(), id: z.uuid(), at: z.iso.datetime() }),
      z.object({ value: z.union([z.string(), z.number()]) }),
      z.object({ nested: z.object({ a: z.string() }), tags: z.array(z.string()).max(5) }),
      z.object({ note: z.string().nullable() }),
    ];
    for (const schema of schemas) {
      const json = paramsJsonSchema(schema);
      expect(json.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
      expect(json.additionalProperties).toBe(false);
      serverCompiles(json);
    }
    const nested = paramsJsonSchema(schemas[5]!) as { properties: { nested: Record<string, unknown> } };
    expect(nested.properties.nested.additionalProperties).toBe(false);
    // A default makes the parameter optional for the operator (the input side).
    expect(paramsJsonSchema(schemas[1]!).required).toEqual(['table']);
  });

  it('is checked when the action is declared: what the server would refuse fails at once, by name', () => {
    const declare = (params: z.ZodObject, name = 'act') =>
      action({ name, description: '', params, risk: 'low', timeoutSeconds: 10, handler: () => {} });
    expect(() => declare(z.object({ when: z.date() }))).toThrow(/action "act": params cannot be expressed/);
    // A format Ajv does not know without a plugin, and no pattern to stand for it.
    expect(() => declare(z.object({ site: z.url() }))).toThrow(/action "act": params: .*unknown format/);
    expect(() => declare(z.object({}), 'Not A Name')).toThrow(SdkDefinitionError);
    expect(() =>
      action({
        name: 'slow',
        description: '',
        params: z.object({}),
        risk: 'low',
        timeoutSeconds: 0,
        handler: () => {},
      }),
    ).toThrow(/timeoutSeconds/);
    const one = declare(z.object({}));
    expect(() => defineService({ name: 'svc', kind: 'k', actions: [one, one] })).toThrow(/duplicate action/);
  });
});

describe('an SDK action run by the embedded agent', () => {
  const params = z.object({ name: z.string().max(20), times: z.number().int().min(1).max(3).default(1) });
  let calls: unknown[];
  let signals: AbortSignal[];

  function service() {
    calls = [];
    signals = [];
    return defineService({
      name: 'app',
      kind: 'node',
      version: '1.2.3',
      health: async () => ({ status: 'degraded', message: 'warming up' }),
      config: [
        { key: 'port', value: '8080' },
        { key: 'api_token', value: 'hunter2-hunter2', secret: true },
      ],
      actions: [
        action({
          name: 'greet',
          description: 'Say hello',
          params,
          risk: 'low',
          timeoutSeconds: 30,
          handler: async (input, { logger }) => {
            calls.push(input);
            for (let i = 0; i < input.times; i++) logger.info(`hello ${input.name}`);
            logger.warn('careful');
            return 'done';
          },
        }),
        action({
          name: 'wait',
          description: 'Waits for its signal',
          params: z.object({}),
          risk: 'medium',
          timeoutSeconds: 1,
          handler: (_params, { signal, logger }) =>
            new Promise<void>((_resolve, reject) => {
              signals.push(signal);
              logger.info('waiting');
              signal.addEventListener('abort', () => reject(signal.reason), { once: true });
            }),
        }),
        action({
          name: 'stuck',
          description: 'Ignores its signal',
          params: z.object({}),
          risk: 'high',
          timeoutSeconds: 60,
          handler: (_params, { signal }) => {
            signals.push(signal);
            return new Promise<void>(() => {});
          },
        }),
      ],
    });
  }

  it('is reported with its declaration, health and redacted config', async () => {
    server = await startFakeServer();
    const since = server.received.length;
    sdk = await startSdkAgent(server, dir.path, [service()]);
    const report = (await server.next('report', since)).message;
    expect(report.type === 'report' && report.services).toEqual([
      expect.objectContaining({
        name: 'app',
        kind: 'node',
        version: '1.2.3',
        health: { status: 'degraded', message: 'warming up' },
        config: [
          { key: 'port', value: '8080' },
          { key: 'api_token', value: '[redacted]', secret: true },
        ],
      }),
    ]);
    const services = report.type === 'report' ? report.services : [];
    const greet = services[0]!.actions.find((a) => a.name === 'greet')!;
    expect(greet).toMatchObject({ risk: 'low', timeoutSeconds: 30, description: 'Say hello' });
    serverCompiles(greet.params);
    expect(JSON.stringify(server.received)).not.toContain('hunter2');
  });

  it('succeeds with the parsed params (defaults applied), its log lines and returned text as output', async () => {
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service()]);
    const command = server.command({ action: 'greet', params: { name: 'ada', times: 2 } });
    server.send(command);
    expect(await outcomeOf(server, command.envelope.commandId)).toMatchObject({
      type: 'command_finished',
      outcome: 'succeeded',
      exitCode: 0,
    });
    expect(outputOf(server, command.envelope.commandId, 'stdout')).toBe('hello ada\nhello ada\ndone\n');
    expect(outputOf(server, command.envelope.commandId, 'stderr')).toBe('warning: careful\n');
    const defaults = server.command({ action: 'greet', params: { name: 'bob' } });
    server.send(defaults);
    await outcomeOf(server, defaults.envelope.commandId);
    expect(calls).toEqual([
      { name: 'ada', times: 2 },
      { name: 'bob', times: 1 },
    ]);
    // Journaled like any command: the same id is refused as replayed.
    server.send(defaults);
    await server.waitFor((m) => m.type === 'command_refused' && m.commandId === defaults.envelope.commandId);
  });

  it('is cancelled: the cancel aborts its signal and it ends cancelled', async () => {
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service()]);
    const command = server.command({ action: 'wait', params: {}, timeoutSeconds: 60 });
    server.send(command);
    await server.waitFor((m) => m.type === 'command_output' && m.commandId === command.envelope.commandId, 0);
    server.send({ v: 1, type: 'cancel', commandId: command.envelope.commandId });
    expect(await outcomeOf(server, command.envelope.commandId)).toMatchObject({
      outcome: 'cancelled',
      exitCode: null,
    });
    expect(signals[0]!.aborted).toBe(true);
    expect((signals[0]!.reason as DOMException).name).toBe('AbortError');
  });

  it('times out: the execution timeout of the envelope aborts its signal and it ends timed_out', async () => {
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service()]);
    const command = server.command({ action: 'wait', params: {}, timeoutSeconds: 1 });
    const started = Date.now();
    server.send(command);
    expect(await outcomeOf(server, command.envelope.commandId)).toMatchObject({ outcome: 'timed_out' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect((signals[0]!.reason as DOMException).name).toBe('TimeoutError');
  });

  it('that ignores its signal is reported anyway after the grace period, and the agent log says so', async () => {
    server = await startFakeServer();
    sdk = await startSdkAgent(server, dir.path, [service()], { graceMs: 200 });
    // High: one approval by someone else, as the server sends it.
    const command = server.command({ action: 'stuck', params: {}, approvedBy: ['usr_bob'] });
    server.send(command);
    await server.next('command_started', 0);
    server.send({ v: 1, type: 'cancel', commandId: command.envelope.commandId });
    const finished = await outcomeOf(server, command.envelope.commandId);
    expect(finished).toMatchObject({ outcome: 'cancelled' });
    expect(finished.message).toMatch(/did not stop/);
    expect(signals[0]!.aborted).toBe(true);
    expect(sdk.lines.join('')).toContain('the action handler did not stop within the grace period');
    // Stopping the agent does not wait for the abandoned handler.
    await sdk.stop();
    sdk = undefined;
  });
});
