import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
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
  /**
   * An access token the provider issues to an API client for `account`, for the API named
   * `resource` (a JWT; an opaque token when it ends in /opaque), through a real authorization code
   * flow with PKCE.
   */
  accessToken(account: ProviderAccount, resource: string): Promise<string>;
  /** Revokes a token at the provider (RFC 7009). */
  revoke(token: string): Promise<void>;
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

  const basic = `Basic ${Buffer.from(`${OIDC_CLIENT.id}:${OIDC_CLIENT.secret}`).toString('base64')}`;

  async function accessToken(account: ProviderAccount, resource: string): Promise<string> {
    await control('/_test/next-account', account);
    const redirectUri = `${redirectPrefix}api-client/callback`;
    const verifier = randomBytes(32).toString('base64url');
    const authorize = new URL('/auth', issuer);
    for (const [name, value] of Object.entries({
      client_id: OIDC_CLIENT.id,
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: 'openid api',
      resource,
      state: randomUUID(),
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    }))
      authorize.searchParams.set(name, value);
    // Through the provider's redirects (it signs in the account at once) until it sends the code back.
    const cookies = new Map<string, string>();
    let url = authorize.href;
    for (let hop = 0; hop < 10 && !url.startsWith(redirectUri); hop++) {
      const response = await fetch(url, {
        redirect: 'manual',
        headers: { cookie: [...cookies].map(([n, v]) => `${n}=${v}`).join('; ') },
      });
      for (const header of response.headers.getSetCookie()) {
        const [pair = ''] = header.split(';');
        const at = pair.indexOf('=');
        const value = pair.slice(at + 1);
        if (value === '' || /expires=Thu, 01 Jan 1970/i.test(header)) cookies.delete(pair.slice(0, at));
        else cookies.set(pair.slice(0, at), value);
      }
      const next = response.headers.get('location');
      if (!next)
        throw new Error(`the provider stopped at ${url} with ${response.status}: ${await response.text()}`);
      url = new URL(next, url).href;
    }
    const code = new URL(url).searchParams.get('code');
    if (!code) throw new Error(`the provider sent no code: ${url}`);
    const token = await fetch(new URL('/token', issuer), {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        redirect_uri: redirectUri,
        code_verifier: verifier,
        resource,
      }),
    });
    const body = (await token.json()) as { access_token?: string };
    if (!body.access_token) throw new Error(`no access token: ${JSON.stringify(body)}`);
    return body.access_token;
  }

  await launch(0);
  return {
    accessToken,
    async revoke(token) {
      const response = await fetch(new URL('/token/revocation', issuer), {
        method: 'POST',
        headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }),
      });
      if (!response.ok) throw new Error(`revocation answered ${response.status}`);
    },
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
