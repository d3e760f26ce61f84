import type { Browser, BrowserContext, CDPSession, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openPostgres, openSqlite } from '../db/database.js';
import {
  addVirtualAuthenticator,
  hasChromium,
  launchChromium,
  passkeyOrigin,
  requireChromiumInCi,
} from '../test-support/browser.js';
import { BACKENDS, MEMBER_PASSWORD, type OrgWorld, OWNER, startOrgWorld } from '../test-support/org-world.js';

/**
 * Passkeys (MFA-2), with Chromium's virtual authenticator (DevTools protocol) as the real
 * authenticator and the real browser as the client, attacked from the outside:
 * - someone who captured a passkey's answer replays it, to finish another sign-in;
 * - someone who copied a passkey's private key (a cloned authenticator) signs in with the copy;
 * - someone who knows a member's password finishes the member's sign-in with their own passkey;
 * - a deployment reached by IP address would bind passkeys to a guessed name: it is refused.
 */

type ErrorBody = { error: { code: string; fields?: Array<{ path: string }> } };
type SessionBody = { secondFactorRequired: boolean; csrfToken: string };
type Json = Record<string, unknown>;

// The browser's own globals, as far as these tests use them (the test project has no DOM types).
declare const PublicKeyCredential: {
  parseCreationOptionsFromJSON(options: unknown): unknown;
  parseRequestOptionsFromJSON(options: unknown): unknown;
};
declare const navigator: {
  credentials: {
    create(options: { publicKey: unknown }): Promise<{ toJSON(): Json }>;
    get(options: { publicKey: unknown }): Promise<{ toJSON(): Json }>;
  };
};

/** A browser tab at the console's origin with its own virtual authenticator. */
interface Tab {
  page: Page;
  context: BrowserContext;
  cdp: CDPSession;
  authenticatorId: string;
  /** Calls the API from the page (its cookie, its CSRF token, its Origin), as the console does. */
  json<T = Json>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  signIn(email: string, password: string): Promise<SessionBody>;
  /** Runs navigator.credentials.create() with options from the server; the authenticator answers. */
  create(options: unknown): Promise<Json>;
  /** Runs navigator.credentials.get(); the authenticator signs the challenge. */
  get(options: unknown): Promise<Json>;
}

requireChromiumInCi('the passkey tests');

let browser: Browser;
let world: OrgWorld | undefined;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  if (hasChromium) browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
});
afterEach(async () => {
  for (const context of contexts.splice(0)) await context.close();
  await world?.close();
  world = undefined;
});

async function openTab(): Promise<Tab> {
  const context = await browser.newContext({ baseURL: passkeyOrigin(world!.server.url) });
  contexts.push(context);
  const page = await context.newPage();
  await page.goto('/healthz');
  const { cdp, authenticatorId } = await addVirtualAuthenticator(context, page);
  let csrf: string | undefined;
  const tab: Tab = {
    page,
    context,
    cdp,
    authenticatorId,
    async json<T>(method: string, path: string, body?: unknown) {
      const result = await page.evaluate(
        async (request) => {
          const response = await fetch(request.path, {
            method: request.method,
            headers: {
              ...(request.body === undefined ? {} : { 'content-type': 'application/json' }),
              ...(request.csrf ? { 'x-csrf-token': request.csrf } : {}),
            },
            ...(request.body === undefined ? {} : { body: JSON.stringify(request.body) }),
          });
          const text = await response.text();
          return { status: response.status, body: text ? JSON.parse(text) : undefined };
        },
        { method, path, body, csrf },
      );
      const token = (result.body as { csrfToken?: unknown } | undefined)?.csrfToken;
      if (result.status < 300 && typeof token === 'string') csrf = token;
      return result as { status: number; body: T };
    },
    async signIn(email, password) {
      const response = await tab.json<SessionBody>('POST', '/api/auth/login', { email, password });
      expect(response.status).toBe(200);
      return response.body;
    },
    create: (options) =>
      page.evaluate(async (json) => {
        const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(json);
        return (await navigator.credentials.create({ publicKey })).toJSON();
      }, options),
    get: (options) =>
      page.evaluate(async (json) => {
        const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(json);
        return (await navigator.credentials.get({ publicKey })).toJSON();
      }, options),
  };
  return tab;
}

/** Adds a passkey for whoever is signed in in the tab (a fresh sign-in is recent enough for step-up). */
async function addPasskey(tab: Tab, name: string) {
  const options = await tab.json<Json>('POST', '/api/auth/mfa/passkeys/options');
  expect(options.status).toBe(200);
  const response = await tab.create(options.body);
  const added = await tab.json<{ factor: { id: string; type: string }; recoveryCodes?: string[] }>(
    'POST',
    '/api/auth/mfa/passkeys',
    { name, response },
  );
  expect(added.status).toBe(201);
  return { ...added.body, response };
}

/** A fresh sign-in in the tab, waiting for its second factor, and the passkey's answer to its challenge. */
async function passwordThenAssertion(tab: Tab, email: string, password: string) {
  expect((await tab.signIn(email, password)).secondFactorRequired).toBe(true);
  const challenge = await tab.json<Json>('POST', '/api/auth/mfa/passkey-challenge');
  expect(challenge.status).toBe(200);
  return { options: challenge.body, assertion: await tab.get(challenge.body) };
}

async function failureReasons(): Promise<string[]> {
  const exported = await world!.cli('audit', 'export', '--org', 'instance', '--action', 'auth.mfa_failed');
  expect(exported.code, exported.stderr).toBe(0);
  return exported.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => (JSON.parse(line) as { details: { reason: string } }).details.reason);
}

describe.skipIf(!hasChromium).each(BACKENDS)('passkeys on %s', (backend) => {
  it('adds passkeys from two authenticators, signs in and steps up with either; a captured answer opens nothing again', async () => {
    world = await startOrgWorld({}, backend);
    const laptop = await openTab();
    await laptop.signIn(OWNER.email, OWNER.password);
    const first = await addPasskey(laptop, 'Laptop');
    expect(first.factor.type).toBe('webauthn');
    // The first factor comes with the recovery codes.
    expect(first.recoveryCodes).toHaveLength(10);

    // The registration's challenge was spent: the same answer cannot register again.
    const again = await laptop.json<ErrorBody>('POST', '/api/auth/mfa/passkeys', {
      name: 'Again',
      response: first.response,
    });
    expect([again.status, again.body.error.code]).toEqual([409, 'passkey_ceremony_expired']);

    // A second authenticator, elsewhere: signed in there with a recovery code, it adds its own passkey.
    const phone = await openTab();
    await phone.signIn(OWNER.email, OWNER.password);
    expect((await phone.json('POST', '/api/auth/mfa/verify', { code: first.recoveryCodes![0] })).status).toBe(
      200,
    );
    const second = await addPasskey(phone, 'Phone');
    expect(second.recoveryCodes).toBeUndefined();
    const factors = await phone.json<{ factors: Array<{ name: string; type: string }> }>(
      'GET',
      '/api/auth/mfa',
    );
    expect(factors.body.factors.map((f) => `${f.type} ${f.name}`)).toEqual([
      'webauthn Laptop',
      'webauthn Phone',
    ]);

    // Each authenticator finishes a password sign-in on its own.
    for (const tab of [laptop, phone]) {
      const { options, assertion } = await passwordThenAssertion(tab, OWNER.email, OWNER.password);
      expect((options.allowCredentials as unknown[]).length).toBe(2);
      expect((await tab.json('GET', '/api/orgs/acme/members')).status).toBe(401);
      const verified = await tab.json<SessionBody>('POST', '/api/auth/mfa/verify', { passkey: assertion });
      expect([verified.status, verified.body.secondFactorRequired]).toEqual([200, false]);
      expect((await tab.json('GET', '/api/orgs/acme/members')).status).toBe(200);
    }

    // Attack: an answer captured on the wire is replayed to finish another password sign-in.
    const captured = await passwordThenAssertion(laptop, OWNER.email, OWNER.password);
    expect((await laptop.json('POST', '/api/auth/mfa/verify', { passkey: captured.assertion })).status).toBe(
      200,
    );
    await laptop.signIn(OWNER.email, OWNER.password);
    // Without a challenge of its own the session has nothing for the answer to match...
    const replayed = await laptop.json<ErrorBody>('POST', '/api/auth/mfa/verify', {
      passkey: captured.assertion,
    });
    expect([replayed.status, replayed.body.error.fields?.[0]?.path]).toEqual([422, 'body.passkey']);
    // ...and with one, the answer signs another challenge.
    await laptop.json('POST', '/api/auth/mfa/passkey-challenge');
    expect((await laptop.json('POST', '/api/auth/mfa/verify', { passkey: captured.assertion })).status).toBe(
      422,
    );
    expect((await laptop.json('GET', '/api/orgs/acme/members')).status).toBe(401);
    expect(await failureReasons()).toEqual(['passkey_no_challenge', 'passkey_invalid_assertion']);

    // Step-up (MFA-5): the password with the passkey, never the password alone.
    const stepUp = await passwordThenAssertion(phone, OWNER.email, OWNER.password);
    await phone.json('POST', '/api/auth/mfa/verify', { passkey: stepUp.assertion });
    const passwordOnly = await phone.json<ErrorBody>('POST', '/api/auth/reauth', {
      password: OWNER.password,
    });
    expect([passwordOnly.status, passwordOnly.body.error.fields?.[0]?.path]).toEqual([422, 'body.code']);
    const challenge = await phone.json<Json>('POST', '/api/auth/mfa/passkey-challenge');
    const reauth = await phone.json('POST', '/api/auth/reauth', {
      password: OWNER.password,
      passkey: await phone.get(challenge.body),
    });
    expect(reauth.status).toBe(200);
  });

  it('refuses a copy of a passkey whose signature counter does not rise: a cloned authenticator', async () => {
    world = await startOrgWorld({}, backend);
    const laptop = await openTab();
    await laptop.signIn(OWNER.email, OWNER.password);
    await addPasskey(laptop, 'Laptop');
    const signedIn = await passwordThenAssertion(laptop, OWNER.email, OWNER.password);
    expect((await laptop.json('POST', '/api/auth/mfa/verify', { passkey: signedIn.assertion })).status).toBe(
      200,
    );

    // Attack: the private key was copied out of the authenticator. The copy's counter lags the
    // original's, so its next signature carries a counter the server has already seen.
    const { credentials } = await laptop.cdp.send('WebAuthn.getCredentials', {
      authenticatorId: laptop.authenticatorId,
    });
    expect(credentials).toHaveLength(1);
    const original = credentials[0]!;
    expect(original.signCount).toBeGreaterThan(0);
    const thief = await openTab();
    await thief.cdp.send('WebAuthn.addCredential', {
      authenticatorId: thief.authenticatorId,
      credential: { ...original, signCount: original.signCount - 1 },
    });
    const cloned = await passwordThenAssertion(thief, OWNER.email, OWNER.password);
    const refused = await thief.json<ErrorBody>('POST', '/api/auth/mfa/verify', {
      passkey: cloned.assertion,
    });
    expect([refused.status, refused.body.error.fields?.[0]?.path]).toEqual([422, 'body.passkey']);
    expect((await thief.json('GET', '/api/orgs/acme/members')).status).toBe(401);
    expect(await failureReasons()).toEqual(['passkey_counter_not_increased']);

    // The genuine authenticator, whose counter moves on, still signs in.
    const genuine = await passwordThenAssertion(laptop, OWNER.email, OWNER.password);
    expect((await laptop.json('POST', '/api/auth/mfa/verify', { passkey: genuine.assertion })).status).toBe(
      200,
    );
  });

  it("does not let someone with a member's password finish the member's sign-in with their own passkey", async () => {
    world = await startOrgWorld({}, backend);
    await world.join('dana@acme.test', 'operator');
    const dana = await openTab();
    await dana.signIn('dana@acme.test', MEMBER_PASSWORD);
    await addPasskey(dana, 'Dana’s key');

    // The attacker has a passkey of their own account here, and Dana's password.
    const attacker = await openTab();
    await attacker.signIn(OWNER.email, OWNER.password);
    const own = await addPasskey(attacker, 'Attacker’s key');
    const { options } = await passwordThenAssertionAllowed(attacker, 'dana@acme.test');
    // Their authenticator signs Dana's challenge with their own key, the only one it holds.
    const assertion = await attacker.get({
      ...options,
      allowCredentials: [{ id: own.response.id, type: 'public-key' }],
    });
    const refused = await attacker.json<ErrorBody>('POST', '/api/auth/mfa/verify', { passkey: assertion });
    expect(refused.status).toBe(422);
    expect((await attacker.json('GET', '/api/orgs/acme/members')).status).toBe(401);
    expect(await failureReasons()).toEqual(['passkey_unknown_passkey']);
  });

  it("does not let someone who can also write the database move their own passkey onto the member's account", async () => {
    world = await startOrgWorld({}, backend);
    const dana = await world.join('dana@acme.test', 'operator');
    const danaTab = await openTab();
    await danaTab.signIn(dana.email, MEMBER_PASSWORD);
    await addPasskey(danaTab, 'Dana’s key');

    // The attacker registers a passkey on their own account, then writes its row over to Dana: the
    // credential id and public key are theirs, the row now says it is Dana's.
    const attacker = await openTab();
    await attacker.signIn(OWNER.email, OWNER.password);
    const own = await addPasskey(attacker, 'Attacker’s key');
    const config = world.server.config.database;
    const writer =
      config.kind === 'sqlite'
        ? openSqlite({ file: config.file, busyTimeoutMs: 10_000 })
        : openPostgres({ url: config.url, poolMax: 1 });
    try {
      await writer.db
        .updateTable('mfa_factors')
        .set({ user_id: dana.id })
        .where('id', '=', own.factor.id)
        .execute();
    } finally {
      await writer.db.destroy();
    }
    const { options } = await passwordThenAssertionAllowed(attacker, dana.email);
    const assertion = await attacker.get({
      ...options,
      allowCredentials: [{ id: own.response.id, type: 'public-key' }],
    });
    const refused = await attacker.json<ErrorBody>('POST', '/api/auth/mfa/verify', { passkey: assertion });
    expect(refused.status).toBe(422);
    expect((await attacker.json('GET', '/api/orgs/acme/members')).status).toBe(401);
    expect(await failureReasons()).toEqual(['passkey_passkey_integrity']);
  });

  it('offers no passkey ceremony at a host name it was not told, such as an IP address', async () => {
    world = await startOrgWorld({}, backend);
    // The owner's client talks to http://127.0.0.1:<port>: no relying party can be named for it.
    const options = await world.owner.client.json<ErrorBody>('POST', '/api/auth/mfa/passkeys/options');
    expect([options.status, options.body.error.code]).toEqual([409, 'public_url_required']);
    // Codes work on any host all the same.
    const totp = await world.owner.client.json('POST', '/api/auth/mfa/totp', { name: 'phone' });
    expect(totp.status).toBe(201);
  });
});

/** Signs in with the password only (the second factor is the attacker's problem) and takes a challenge. */
async function passwordThenAssertionAllowed(tab: Tab, email: string) {
  expect((await tab.signIn(email, MEMBER_PASSWORD)).secondFactorRequired).toBe(true);
  const challenge = await tab.json<Json>('POST', '/api/auth/mfa/passkey-challenge');
  expect(challenge.status).toBe(200);
  return { options: challenge.body };
}
