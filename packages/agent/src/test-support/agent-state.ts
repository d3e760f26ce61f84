import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentState } from '../state.js';
import { publicKeyOf } from '../state.js';
import { type FakeServer, TEST_AGENT_ID } from './fake-server.js';

/** The built CLI, as operators run it; tests that spawn it need `npm run build` first. */
export const AGENT_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export async function tempDir(): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'bulwark-agent-test-'));
  return { path: dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A registered agent's state, known to `server` (its public key accepted for proofs). */
export function agentStateFor(server: FakeServer, overrides: Partial<AgentState> = {}): AgentState {
  const signing = generateKeyPairSync('ed25519');
  const encryption = generateKeyPairSync('x25519');
  const state: AgentState = {
    agentId: TEST_AGENT_ID,
    org: { id: 'org_01JB0000000000000000000000', slug: 'acme' },
    name: 'test-agent',
    server: server.url,
    serverSigningKey: server.serverSigningKey,
    signingKey: signing.privateKey,
    encryptionKey: encryption.privateKey,
    registeredAt: Date.now(),
    ...overrides,
  };
  server.agents.set(state.agentId, publicKeyOf(state.signingKey));
  return state;
}

/** Every printable form of the private keys: none may ever appear in output. */
export function keyForms(state: AgentState): string[] {
  const forms: string[] = [];
  for (const key of [state.signingKey, state.encryptionKey] as KeyObject[]) {
    const der = key.export({ format: 'der', type: 'pkcs8' });
    const seed = der.subarray(der.length - 32);
    forms.push(
      der.toString('base64'),
      seed.toString('base64url'),
      seed.toString('base64'),
      seed.toString('hex'),
    );
    const { d } = key.export({ format: 'jwk' });
    if (d) forms.push(d);
  }
  // Long enough to be unique, short enough to catch a truncated print.
  return forms.map((form) => form.slice(-24));
}
