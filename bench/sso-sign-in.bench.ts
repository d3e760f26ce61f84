/**
 * sso-sign-in: the server-side work of an OIDC sign-in, beside a password sign-in in the same run.
 *
 * The OIDC figure is the time of the provider's redirect back to Bulwark (`GET
 * /api/auth/sso/oidc/<connection>/callback`), which is all the server does for the sign-in: take the sign-in
 * under way, exchange the code with the provider (a real oidc-provider process on loopback,
 * `client_secret_basic` and PKCE), check the ID token's signature and claims, look up the linked
 * person, start a session, and commit it with its audit events. The browser's trip through the
 * provider is not timed. The password figure is `POST /api/auth/login` with the right password:
 * one argon2id verification, the session and its events. Both run one at a time, after a warm-up,
 * for the same person each time (a returning user, not a first sign-in).
 */
import { performance } from 'node:perf_hooks';
import { OIDC_CLIENT, startOidcProvider } from '../packages/server/src/test-support/oidc-provider.js';
import { ssoBrowser } from '../packages/server/src/test-support/sso-browser.js';
import { fmt, machine, OWNER, send, signIn, startBulwark } from './http-support.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 200);
const WARMUP = 10;

const bulwark = await startBulwark({ BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '1000000' });
const provider = await startOidcProvider(`${bulwark.url}/api/auth/sso/oidc/`);
try {
  const owner = await signIn(bulwark.url, OWNER.email, OWNER.password);
  const connection = await send<{ id: string }>(
    bulwark.url,
    owner,
    'POST',
    '/api/orgs/default/sso/connections',
    {
      name: 'Bench IdP',
      kind: 'oidc',
      config: {
        issuer: provider.issuer,
        clientId: OIDC_CLIENT.id,
        clientSecret: OIDC_CLIENT.secret,
        defaultRole: 'viewer',
      },
    },
  );
  const browser = ssoBrowser(bulwark.url, provider);
  const account = { sub: 'bench-user', email: 'bench-user@bench.test', name: 'Bench', amr: ['pwd', 'mfa'] };

  async function oidcCallback(): Promise<number> {
    const { browser: jar, callbackUrl } = await browser.toCallback(connection.id, account);
    const started = performance.now();
    const finished = await browser.finish(jar, callbackUrl);
    const elapsed = performance.now() - started;
    if (finished.location !== '/agents') throw new Error(`the sign-in was refused: ${finished.location}`);
    return elapsed;
  }
  async function passwordSignIn(): Promise<number> {
    const started = performance.now();
    const response = await fetch(`${bulwark.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(OWNER),
    });
    await response.arrayBuffer();
    const elapsed = performance.now() - started;
    if (response.status !== 200) throw new Error(`password sign-in answered ${response.status}`);
    return elapsed;
  }

  const percentile = (values: number[], p: number) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
  };
  const line = (label: string, values: number[]) =>
    `${label.padEnd(42)} p50 ${percentile(values, 50).toFixed(1)} ms, p95 ${percentile(values, 95).toFixed(1)} ms, max ${Math.max(...values).toFixed(1)} ms`;

  for (let i = 0; i < WARMUP; i++) {
    await oidcCallback();
    await passwordSignIn();
  }
  // Interleaved, so that both see the same machine at the same moments.
  const oidc: number[] = [];
  const password: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    oidc.push(await oidcCallback());
    password.push(await passwordSignIn());
  }
  const print = (line: string) => process.stdout.write(`${line}\n`);
  print(machine());
  print(`${fmt(ROUNDS)} sign-ins of each kind, one at a time, after ${WARMUP} of each to warm up`);
  print(line('password sign-in (baseline)', password));
  print(line('OIDC callback (code exchange, ID token)', oidc));
  print(`OIDC / password, p50: ${(percentile(oidc, 50) / percentile(password, 50)).toFixed(2)}`);
} finally {
  await provider.stop();
  await bulwark.close();
}
