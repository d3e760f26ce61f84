import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasChromium, launchChromium, requireChromiumInCi } from '../test-support/browser.js';
import { startTestServer, type TestServer } from '../test-support/server.js';
import { PERMISSIONS_POLICY } from './security-headers.js';

/**
 * Attack (NET-2): a script runs in the console's origin (an injection that got past the CSP, or a
 * compromised dependency) and asks the browser for what a person would grant the console without
 * thinking: the camera, the microphone, their location, the clipboard's contents, a payment, a USB
 * or serial device. The Permissions-Policy header turns those off for the origin, so the browser
 * refuses before anyone is asked; what the console needs (passkeys, copying a token) stays on for
 * its own origin. Checked in Debian's Chromium, which enforces the header.
 */

// The browser's own globals, as far as this test uses them (the test project has no DOM types).
declare const document: {
  featurePolicy: { features(): string[]; allowsFeature(feature: string): boolean };
};

requireChromiumInCi('the Permissions-Policy test');

let browser: Browser | undefined;
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer();
  if (hasChromium) browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await server?.close();
});

const listed = PERMISSIONS_POLICY.split(', ').map((rule) => {
  const [feature = '', allow = ''] = rule.split('=');
  return { feature, self: allow === '(self)' };
});

describe.skipIf(!hasChromium)('Permissions-Policy in the browser', () => {
  // An API answer opened as a page, and a link into the console: every document of the origin.
  it.each(['/healthz', '/orgs/acme/commands'])('%s: only what the console uses is allowed', async (path) => {
    const context = await browser!.newContext();
    try {
      const page = await context.newPage();
      const warnings: string[] = [];
      page.on('console', (message) => {
        if (message.text().includes('Permissions-Policy')) warnings.push(message.text());
      });
      await page.goto(`${server.url}${path}`);
      const { known, allowed } = await page.evaluate(
        (features) => ({
          known: document.featurePolicy.features(),
          allowed: features.filter((feature) => document.featurePolicy.allowsFeature(feature)),
        }),
        listed.map((rule) => rule.feature),
      );
      // Every name in the header means something to the browser (no "unrecognized feature" warning).
      expect(listed.map((rule) => rule.feature).filter((feature) => !known.includes(feature))).toEqual([]);
      expect(warnings).toEqual([]);
      expect(allowed.sort()).toEqual(
        ['clipboard-write', 'publickey-credentials-create', 'publickey-credentials-get'].sort(),
      );
      for (const feature of ['camera', 'microphone', 'geolocation', 'clipboard-read', 'payment', 'usb'])
        expect(listed).toContainEqual({ feature, self: false });
    } finally {
      await context.close();
    }
  });
});
