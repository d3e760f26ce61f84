/**
 * Attack: making an agent run a command the server did not authorize for it. An attacker who can
 * inject messages on the agent's channel (a compromised proxy, a bug in the server's gateway, a
 * stolen database row) sends a command signed with a key of their own; or lifts a genuine command
 * addressed to another agent; or replays a stored command after its delivery window; or sends a
 * command the agent already ran (to run a "restart" or a "migrate" twice), also after the agent
 * restarted; or names an action the operator never declared; or stuffs shell syntax or options into
 * a parameter (argv injection). Stopped by CMD-2, CMD-6, CMD-7 and EXEC-1: the agent verifies the
 * signature with the key it pinned, the target, the expiry and its journal, validates the params
 * again, and passes each parameter as exactly one argument, never through a shell. Every refusal is
 * proved by a marker file the command would have written and that must not exist.
 */
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { newId } from '@bulwark/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from './config.js';
import { journalFileFor } from './journal.js';
import { tempDir } from './test-support/agent-state.js';
import {
  appConfig,
  type CommandAgent,
  execAction,
  NODE,
  outcomeOf,
  outputOf,
  startCommandAgent,
} from './test-support/command-agent.js';
import { type FakeServer, startFakeServer } from './test-support/fake-server.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let server: FakeServer;
let agent: CommandAgent | undefined;
let marker: string;

beforeAll(async () => {
  dir = await tempDir();
  marker = path.join(dir.path, 'ran');
});
afterAll(async () => {
  await dir.remove();
});
afterEach(async () => {
  await agent?.stop();
  agent = undefined;
  await server?.close();
});

// `run` appends its argument to the marker file: if the file exists, something ran.
const APPEND = "require('fs').appendFileSync(process.argv[1], process.argv[2] + '\\n')";
// `echo` prints its arguments as JSON: exactly what the process received.
const ECHO = 'process.stdout.write(JSON.stringify(process.argv.slice(1)))';

function config(): string {
  return appConfig([
    execAction(
      'run',
      {
        type: 'object',
        required: ['word'],
        properties: { word: { type: 'string', pattern: '^[a-z]+$', maxLength: 16 } },
        additionalProperties: false,
      },
      { argv: [NODE, '-e', APPEND, marker, '{{word}}'] },
    ),
    // The same program, declared critical in this agent's own configuration.
    {
      ...execAction(
        'guarded',
        { type: 'object', additionalProperties: false },
        { argv: [NODE, '-e', APPEND, `${marker}-guarded`, 'guarded'] },
      ),
      risk: 'critical',
    },
    execAction(
      'echo',
      {
        type: 'object',
        required: ['text'],
        // Anything but a leading dash (an option), up to 200 characters.
        properties: { text: { type: 'string', pattern: '^[^-].*$', maxLength: 200 } },
      },
      { argv: [NODE, '-e', ECHO, '{{text}}'] },
    ),
  ]);
}

async function online(): Promise<void> {
  server = await startFakeServer();
  agent = await startCommandAgent(server, dir.path, config());
}

describe('a command the agent must not run', () => {
  it('is refused when signed by any key but the pinned one (bad_signature)', async () => {
    await online();
    const forged = server.command({ params: { word: 'forged' } }, generateKeyPairSync('ed25519').privateKey);
    server.send(forged);
    expect(await outcomeOf(server, forged.envelope.commandId)).toMatchObject({
      type: 'command_refused',
      reason: 'bad_signature',
    });
    // A genuine signature over different params does not carry over either.
    const genuine = server.command({ params: { word: 'genuine' } });
    const tampered = { ...genuine, envelope: { ...genuine.envelope, params: { word: 'tampered' } } };
    server.send(tampered);
    expect(await outcomeOf(server, genuine.envelope.commandId)).toMatchObject({ reason: 'bad_signature' });
    expect(existsSync(marker)).toBe(false);
  });

  it("is refused when it is another agent's (wrong_agent)", async () => {
    await online();
    const other = server.command({ agentId: 'agt_01JB0000000000000000000001', params: { word: 'other' } });
    server.send(other);
    expect(await outcomeOf(server, other.envelope.commandId)).toMatchObject({ reason: 'wrong_agent' });
    expect(existsSync(marker)).toBe(false);
  });

  it('is refused after its expiry (expired)', async () => {
    await online();
    const stale = server.command({ expiresAt: Date.now() - 1, params: { word: 'stale' } });
    server.send(stale);
    expect(await outcomeOf(server, stale.envelope.commandId)).toMatchObject({ reason: 'expired' });
    expect(existsSync(marker)).toBe(false);
  });

  it('is refused with fewer approvals than the risk this agent declares asks for (insufficient_approvals)', async () => {
    // Attack: someone who can write the server's database lowers the action's risk in the services
    // table (or the required approvals of a command), so the server seals and signs it with no
    // approval. The signature is genuine; the agent holds it to the floor of its own declared risk.
    await online();
    const none = server.command({ action: 'guarded', params: {} });
    const one = server.command({ action: 'guarded', params: {}, approvedBy: ['usr_bob'] });
    // The requester approving their own command, or one person twice, does not count.
    const self = server.command({
      action: 'guarded',
      params: {},
      approvedBy: ['usr_alice', 'usr_bob', 'usr_bob'],
    });
    for (const c of [none, one, self]) server.send(c);
    for (const c of [none, one, self])
      expect(await outcomeOf(server, c.envelope.commandId)).toMatchObject({
        reason: 'insufficient_approvals',
      });
    expect(existsSync(marker)).toBe(false);
    // Two approvals by others: it runs.
    const approved = server.command({ action: 'guarded', params: {}, approvedBy: ['usr_bob', 'usr_carol'] });
    server.send(approved);
    expect(await outcomeOf(server, approved.envelope.commandId)).toMatchObject({
      type: 'command_finished',
      outcome: 'succeeded',
    });
    expect(readFileSync(`${marker}-guarded`, 'utf8')).toBe('guarded\n');
  });

  it('for an undeclared action or service, or invalid params, is refused', async () => {
    await online();
    const unknown = server.command({ action: 'format-disk', params: {} });
    const otherService = server.command({ service: 'db', params: { word: 'x' } });
    const invalid = server.command({ params: { word: 'NOT lower case' } });
    const extra = server.command({ params: { word: 'ok', more: 'x' } });
    for (const c of [unknown, otherService, invalid, extra]) server.send(c);
    expect(await outcomeOf(server, unknown.envelope.commandId)).toMatchObject({ reason: 'unknown_action' });
    expect(await outcomeOf(server, otherService.envelope.commandId)).toMatchObject({
      reason: 'unknown_action',
    });
    expect(await outcomeOf(server, invalid.envelope.commandId)).toMatchObject({
      reason: 'invalid_params',
      message: expect.stringMatching(/\/word must match pattern/),
    });
    expect(await outcomeOf(server, extra.envelope.commandId)).toMatchObject({ reason: 'invalid_params' });
    expect(existsSync(marker)).toBe(false);
  });

  it('runs once, and a replay of its id is refused, also after the agent restarts from its journal', async () => {
    await online();
    const once = server.command({ params: { word: 'once' } });
    server.send(once);
    expect(await outcomeOf(server, once.envelope.commandId)).toMatchObject({
      type: 'command_finished',
      outcome: 'succeeded',
    });
    const start = server.received.length;
    server.send(once);
    // The same id with a fresh signature and nonce (a server bug re-dispatching it) is refused too.
    const again = server.command({ ...once.envelope, nonce: 'A'.repeat(43) });
    server.send(again);
    const refused = await server.waitFor((m) => m.type === 'command_refused', start);
    expect(refused.message).toMatchObject({ reason: 'replayed', commandId: once.envelope.commandId });
    await server.waitFor((m) => m.type === 'command_refused', server.received.indexOf(refused) + 1);

    // Restart: a new agent process would open the same journal.
    const state = agent!.state;
    await agent!.stop();
    agent = await startCommandAgent(server, dir.path, config(), { state });
    const afterRestart = server.received.length;
    server.send(once);
    const replayed = await server.waitFor((m) => m.type === 'command_refused', afterRestart);
    expect(replayed.message).toMatchObject({ reason: 'replayed' });
    expect(readFileSync(marker, 'utf8')).toBe('once\n');
  });

  it('with shell syntax in a parameter passes it as one literal argument, never to a shell', async () => {
    await online();
    const attempts = [
      `x; touch ${marker}-semicolon`,
      `$(touch ${marker}-subshell)`,
      `\`touch ${marker}-backtick\``,
      `a b  c | touch ${marker}-pipe && echo "quoted" 'single' > ${marker}-redirect`,
      '--help',
    ];
    const sent = attempts.map((text) => server.command({ action: 'echo', params: { text } }));
    for (const c of sent) server.send(c);
    for (const [i, c] of sent.entries()) {
      const outcome = await outcomeOf(server, c.envelope.commandId);
      if (attempts[i] === '--help') {
        // The schema forbids a leading dash: an option never reaches the program.
        expect(outcome).toMatchObject({ type: 'command_refused', reason: 'invalid_params' });
        continue;
      }
      expect(outcome).toMatchObject({ type: 'command_finished', outcome: 'succeeded' });
      expect(JSON.parse(outputOf(server, c.envelope.commandId, 'stdout'))).toEqual([attempts[i]]);
    }
    for (const suffix of ['-semicolon', '-subshell', '-backtick', '-pipe', '-redirect']) {
      expect(existsSync(marker + suffix)).toBe(false);
    }
  });
});

describe('the command states an agent reports as it comes online', () => {
  it('ends its list with a shorter message, an empty one when the states fill whole messages', async () => {
    // The server learns that the list has ended from a message shorter than a full one (1,000
    // states), and only then sends again what the agent's journal never received. 1,000 final
    // states not yet acknowledged fill exactly one message: an empty one must follow.
    const own = await tempDir();
    try {
      // The journal as the agent left it (its own line format), written at once rather than
      // through 2,000 synchronous appends.
      const file = path.join(own.path, 'agent.yaml');
      const at = Date.now();
      const lines = Array.from({ length: 1000 }, () => {
        const commandId = newId('cmd');
        return [
          { event: 'started', commandId, expiresAt: at + 3_600_000, at },
          { event: 'finished', commandId, outcome: 'succeeded', exitCode: 0, message: '', at },
        ];
      }).flat();
      await writeFile(
        journalFileFor(parseConfig(config(), file).stateFile),
        lines.map((line) => `${JSON.stringify(line)}\n`).join(''),
        { mode: 0o600 },
      );
      server = await startFakeServer();
      const since = server.received.length;
      agent = await startCommandAgent(server, own.path, config());
      const first = await server.next('command_states', since);
      const second = await server.next('command_states', server.received.indexOf(first) + 1);
      const sizes = [first, second].map((m) => (m.message as { commands: unknown[] }).commands.length);
      expect(sizes).toEqual([1000, 0]);
    } finally {
      await agent?.stop();
      agent = undefined;
      await own.remove();
    }
  }, 60_000);
});
