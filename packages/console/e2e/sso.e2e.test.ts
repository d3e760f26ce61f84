import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  OIDC_CLIENT,
  type OidcProvider,
  startOidcProvider,
} from '../../server/src/test-support/oidc-provider.js';
import { SessionClient } from '../../server/src/test-support/session-client.js';
import { connectProvider } from '../../server/src/test-support/sso-browser.js';
import { type ConsoleWorld, hasChromium, requireChromiumInCi, signIn, startConsoleWorld } from './support.js';

/**
 * Single sign-on from the sign-in page, in Chromium, against a real OpenID provider process (SSO-1,
 * UI-1): a new person signs in through their organization's provider and lands in the console as a
 * member (just in time); a refusal is explained in words on the sign-in page. No console error and
 * no CSP violation on the way, the provider's own pages aside.
 */

requireChromiumInCi('the console SSO tests');

const OWNER_PASSWORD = 'Tr4il-Harbor-Quartz-81!';

describe.skipIf(!hasChromium)('single sign-on in the console', { timeout: 120_000 }, () => {
  let world: ConsoleWorld;
  let provider: OidcProvider;
  let slug: string;

  beforeAll(async () => {
    world = await startConsoleWorld({ BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1' });
    provider = await startOidcProvider(`${world.server.url}/api/auth/sso/oidc/`);
    // The owner sets the connection up through the API (the console's forms are exercised elsewhere).
    const owner = new SessionClient(world.server.url);
    expect((await owner.login(world.ownerEmail, world.firstPassword)).status).toBe(200);
    const changed = await owner.json<{ memberships: Array<{ slug: string }> }>('POST', '/api/auth/password', {
      currentPassword: world.firstPassword,
      newPassword: OWNER_PASSWORD,
    });
    expect(changed.status).toBe(200);
    slug = changed.body.memberships[0]!.slug;
    const created = await connectProvider(owner, slug, provider, 'Acme Identity', {
      defaultRole: 'operator',
    });
    expect(created.status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    await provider?.stop();
    await world?.close();
  });

  /** From the sign-in page, through the organization's provider, as a person would click it. */
  async function signInWithSso(page: Page) {
    await page.goto('/login');
    await page.getByRole('textbox', { name: 'Organization' }).fill(slug);
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('button', { name: 'Sign in with Acme Identity' }).click();
  }

  it('signs a new person in through the provider, as a member with the connection’s role', async () => {
    await provider.nextAccount({ sub: 'maria', email: 'maria@example.test', name: 'Maria Lopez' });
    const { page } = await world.newPage();
    await signInWithSso(page);
    // Back from the provider, signed in: the console's navigation, and the person's own profile.
    await page.getByRole('navigation').first().waitFor();
    expect(new URL(page.url()).pathname).not.toBe('/login');
    const session = (await page.evaluate(async () => (await fetch('/api/auth/session')).json())) as {
      user: { email: string };
      memberships: unknown[];
    };
    expect(session.user.email).toBe('maria@example.test');
    expect(session.memberships).toEqual([expect.objectContaining({ slug, role: 'operator' })]);
  });

  it('explains a refused sign-in in words on the sign-in page', async () => {
    // Someone at the provider with the owner's email is not the owner: refused, and said so.
    await provider.nextAccount({ sub: 'mallory', email: world.ownerEmail });
    const { page } = await world.newPage();
    await signInWithSso(page);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    expect(await alert.textContent()).toContain('An account with your email address exists');
    expect(new URL(page.url()).pathname).toBe('/login');
  });

  it('lets the owner connect a provider from the Security page, and test it in words', async () => {
    const { page } = await world.newPage();
    await signIn(page, world.ownerEmail, OWNER_PASSWORD);
    await page.getByRole('navigation').first().waitFor();
    await page.goto(`/orgs/${slug}/security`);
    await page.getByRole('heading', { name: 'Single sign-on' }).waitFor();
    await page.getByRole('button', { name: 'Connect an identity provider' }).click();
    const dialog = page.getByRole('dialog', { name: 'Connect an identity provider' });
    await dialog.getByRole('textbox', { name: 'Name' }).fill('Backup IdP');
    await dialog.getByRole('textbox', { name: 'Issuer URL' }).fill(provider.issuer);
    await dialog.getByRole('textbox', { name: 'Client ID' }).fill(OIDC_CLIENT.id);
    await dialog.getByLabel('Client secret').fill(OIDC_CLIENT.secret);
    await dialog.getByRole('button', { name: 'Connect' }).click();
    // Its own redirect URI, to register at the provider, is on the page.
    const item = page.getByRole('listitem').filter({ hasText: 'Backup IdP' });
    expect(await item.locator('code').textContent()).toMatch(
      new RegExp(`^${world.server.url}/api/auth/sso/oidc/sso_\\w+/callback$`),
    );
    await page.getByRole('button', { name: 'Test Backup IdP' }).click();
    await page.getByRole('status').filter({ hasText: 'Works' }).waitFor();
    // The secret went in and does not come back out.
    expect(await page.content()).not.toContain(OIDC_CLIENT.secret);
  });

  it('saw no console error and no CSP violation on the way', () => {
    expect(world.problems).toEqual([]);
  });
});
