/**
 * Workload identity on the agent (SEC-4). Attacks: a token meant for one action reaching another
 * action's process (a server bug, or a compromised gateway attaching a token to a command for an
 * action that never asked for one); a token box lifted from another command or sealed to another
 * agent; an action that asked for a token running without one, as if nothing were missing; the token
 * printed by the action leaving the host in its output. The token must reach only the process of the
 * action whose own agent.yaml declares `workloadIdentity`, and be masked in what it prints.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { rawPublicKey, sealSecrets, WORKLOAD_IDENTITY_TOKEN_ENV } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvcmc6YWNtZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg';
let dir: Awaited<ReturnType<typeof tempDir>>;
let server: FakeServer;
let agent: CommandAgent;
const marker = (name: string) => path.join(dir.path, `received-${name}`);

// Writes what the process got in its environment to a marker file, and prints it.
const WRITE = `const t = process.env.${WORKLOAD_IDENTITY_TOKEN_ENV} ?? 'none';
require('fs').writeFileSync(process.argv[1], t); console.log('token=' + t);`;

beforeAll(async () => {
  dir = await tempDir();
  server = await startFakeServer();
  const params = { type: 'object', additionalProperties: false };
  agent = await startCommandAgent(
    server,
    dir.path,
    appConfig([
      {
        ...execAction('assume', params, { argv: [NODE, '-e', WRITE, marker('assume')] }),
        workloadIdentity: { audience: 'sts.amazonaws.com' },
      },
      execAction('plain', params, { argv: [NODE, '-e', WRITE, marker('plain')] }),
    ]),
  );
});
afterAll(async () => {
  await agent?.stop();
  await server?.close();
  await dir?.remove();
});

const agentKey = () => rawPublicKey(createPublicKey(agent.state.encryptionKey));
/** A command for `action` carrying a token box sealed for `binding` (this command and agent by default). */
function withToken(action: string, binding?: { commandId: string; agentId: string }, recipient?: string) {
  const unsealed = server.command({ action, params: {} });
  const box = sealSecrets(
    recipient ?? agentKey(),
    { [WORKLOAD_IDENTITY_TOKEN_ENV]: TOKEN },
    binding ?? { commandId: unsealed.envelope.commandId, agentId: unsealed.envelope.agentId },
  );
  return server.command({ ...unsealed.envelope, workloadIdentity: box });
}

describe('a workload-identity token on the agent', () => {
  it("reaches the declaring action's process in its environment, and is masked in its output", async () => {
    const command = withToken('assume');
    server.send(command);
    expect(await outcomeOf(server, command.envelope.commandId)).toMatchObject({ outcome: 'succeeded' });
    expect(readFileSync(marker('assume'), 'utf8')).toBe(TOKEN);
    const output = outputOf(server, command.envelope.commandId);
    expect(output).toContain('token=[masked]');
    expect(output).not.toContain(TOKEN);
    expect(agent.lines.join('\n')).not.toContain(TOKEN);
  });

  it('is refused for an action that does not declare it, and its absence for one that does', async () => {
    const stray = withToken('plain');
    server.send(stray);
    expect(await outcomeOf(server, stray.envelope.commandId)).toMatchObject({ reason: 'bad_secrets' });
    expect(existsSync(marker('plain'))).toBe(false);

    const bare = server.command({ action: 'assume', params: {} });
    server.send(bare);
    expect(await outcomeOf(server, bare.envelope.commandId)).toMatchObject({ reason: 'bad_secrets' });
  });

  it("is refused when lifted from another command or sealed to another agent's key", async () => {
    const lifted = withToken('assume', {
      commandId: 'cmd_01JB0000000000000000000009',
      agentId: agent.state.agentId,
    });
    const other = rawPublicKey(generateKeyPairSync('x25519').publicKey);
    const elsewhere = withToken('assume', undefined, other);
    for (const command of [lifted, elsewhere]) {
      server.send(command);
      expect(await outcomeOf(server, command.envelope.commandId)).toMatchObject({ reason: 'bad_secrets' });
    }
  });
});
