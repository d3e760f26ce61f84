import { existsSync } from 'node:fs';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

/** Debian's Chromium, driven by playwright-core. Never a downloaded browser. */
export const CHROMIUM = '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);

/**
 * On a laptop without Chromium the browser suites skip; in CI (BULWARK_TEST_REQUIRE_SERVICES=1, which
 * installs it) a skip would hide a failure, so the missing browser fails the run instead.
 */
export function requireChromiumInCi(suite: string): void {
  if (process.env.BULWARK_TEST_REQUIRE_SERVICES === '1' && !hasChromium)
    throw new Error(`CI needs ${CHROMIUM} for ${suite}`);
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Gives a page Chromium's virtual authenticator (DevTools protocol): a platform authenticator with
 * user verification that answers every WebAuthn prompt by itself. Returns the DevTools session and
 * the authenticator's id, to read or plant credentials.
 */
export async function addVirtualAuthenticator(context: BrowserContext, page: Page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, authenticatorId };
}

/**
 * The origin a browser must use for passkeys: `localhost` at the server's port (an IP address cannot
 * be a relying party). The test servers listen on 127.0.0.1, which localhost reaches.
 */
export const passkeyOrigin = (serverUrl: string) => serverUrl.replace('127.0.0.1', 'localhost');
