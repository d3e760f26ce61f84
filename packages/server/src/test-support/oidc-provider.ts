import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './temp.js';

const FIXTURE = fileURLToPath(new URL('./oidc-provider.fixture.mjs', import.meta.url));

/** The client the fixture registers for Bulwark. */
export const OIDC_CLIENT = { id: 'bulwark', secret: 'bulwark-client-secret-for-tests' };

export type TamperMode =
  | 'none'
  | 'forge'
  | 'alg-none'
  | 'expired'
  | 'wrong-audience'
  | 'other-nonce'
  | 'stale-auth-time'
  | 'silent';

export interface ProviderAccount {
  sub: string;
  email?: string;
  email_verified?: boolean;
  name?: string;
  groups?: string[];
  /** How the person authenticated at the provider (RFC 8176), e.g. ['pwd', 'mfa']. */
  amr?: string[];
  acr?: string;
}

function signingKey(): Record<string, unknown> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

export interface OidcProvider {
  issuer: string;
  /** Who signs in at the provider's next login. */
  nextAccount(account: ProviderAccount): Promise<void>;
  /** How the provider answers token requests from now on. */
  tamper(mode: TamperMode): Promise<void>;
  /** Stops and starts again on the same address with a new signing key only: a key rotation. */
  rotateKey(): Promise<void>;
  stop(): Promise<void>;
}

/** A real oidc-provider process on a free loopback port (test-support/oidc-provider.fixture.mjs). */
/** `redirectPrefix`: the address under which Bulwark's per-connection callbacks live. */
export async function startOidcProvider(redirectPrefix: string): Promise<OidcProvider> {
  const dir = await tempDir('oidc-provider');
  const keysFile = path.join(dir.path, 'keys.json');
  let child: ChildProcess | undefined;
  let issuer = '';

  async function launch(port: number) {
    // A new signing key at every launch; the forger's key is one the provider never published.
    await writeFile(keysFile, JSON.stringify({ keys: [{ private: signingKey() }], forger: signingKey() }));
    child = spawn(process.execPath, [FIXTURE, String(port), redirectPrefix, keysFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = once(child, 'exit');
    issuer = await new Promise<string>((resolve, reject) => {
      child!.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const match = /listening (\S+)/.exec(output);
        if (match) resolve(match[1]!);
      });
      exited.then(([code]) => reject(new Error(`the OIDC provider exited with ${code}:\n${output}`)));
    });
  }

  async function control(route: string, body: unknown) {
    const response = await fetch(`${issuer}${route}`, { method: 'POST', body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`${route} answered ${response.status}`);
  }

  async function stopChild() {
    if (!child || child.exitCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  }

  await launch(0);
  return {
    get issuer() {
      return issuer;
    },
    nextAccount: (account) => control('/_test/next-account', account),
    tamper: (mode) => control('/_test/tamper', { mode }),
    async rotateKey() {
      const port = Number(new URL(issuer).port);
      await stopChild();
      await launch(port);
    },
    async stop() {
      await stopChild();
      await dir.remove();
    },
  };
}
