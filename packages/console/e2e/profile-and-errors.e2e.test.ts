import { readFile } from 'node:fs/promises';
import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type ConsoleWorld,
  hasChromium,
  requireChromiumInCi,
  signIn,
  signInFirstOwner,
  startConsoleWorld,
  watchPage,
} from './support.js';

/**
 * The person's own screens inside the console's frame, and the console telling them things in words
 * (UI-1, UI-2, NOTIFY-1): the profile within the organization's layout with sessions named by device,
 * recovery codes that can be copied and saved, the notifications bell, form errors that name the
 * field by its label, and dead ends that keep the frame and offer the way back.
 */

requireChromiumInCi('the profile and errors tests');

const OWNER_PASSWORD = 'Cobalt-Meadow-Signal-37!';
const IPHONE =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';

let world: ConsoleWorld;
let owner: Page;
let org = '';

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 20_000, interval: 200 });
const sections = (page: Page) => page.getByRole('navigation', { name: 'Sections' });

describe.skipIf(!hasChromium)(
  'profile, notifications and errors in the console',
  { timeout: 120_000 },
  () => {
    beforeAll(async () => {
      world = await startConsoleWorld();
      owner = (await world.newPage()).page;
      org = await signInFirstOwner(world, owner, OWNER_PASSWORD);
    }, 120_000);
    afterAll(async () => {
      await world?.close();
    });

    it('opens the profile inside the organization’s frame, sessions named by browser and system', async () => {
      // A second session, from a phone.
      const phone = await world.browser.newContext({ baseURL: world.server.url, userAgent: IPHONE });
      const phonePage = await phone.newPage();
      watchPage(phonePage, world.problems, world.refusals);
      await signIn(phonePage, world.ownerEmail, OWNER_PASSWORD);
      await phonePage.waitForURL(`**/orgs/${org}`);
      await phone.close();

      await owner.goto('/profile');
      await owner.waitForURL(`**/orgs/${org}/profile`);
      await owner.getByRole('heading', { name: 'Your profile' }).waitFor();
      // The frame: the sections to go back to.
      await sections(owner).getByRole('link', { name: 'Agents' }).waitFor();
      const table = owner.getByRole('table', { name: 'Your sessions' });
      await table.getByRole('cell', { name: 'Mobile Safari 17 on iOS 17.5 (mobile)', exact: true }).waitFor();
      expect(await table.getByRole('cell', { name: /Chrom.* on Linux/ }).count()).toBe(1);
      await sections(owner).getByRole('link', { name: 'Agents' }).click();
      await owner.waitForURL(`**/orgs/${org}/agents`);
    });

    it('tells of the new device and the changed password on the bell, and marks them read', async () => {
      await owner.goto(`/orgs/${org}`);
      const bell = owner.getByRole('button', { name: /^Notifications/ });
      await waitUntil(async () => expect(await bell.textContent()).toContain('2 unread'));
      await bell.click();
      const panel = owner.getByRole('region', { name: 'Notifications' });
      // Each title is said twice: as the item's title, and in its "Mark read" button for screen readers.
      await panel.getByText('New sign-in from Mobile Safari 17 on iOS 17.5').first().waitFor();
      await panel.getByText('Your password was changed').first().waitFor();
      expect(await panel.getByText('New', { exact: true }).count()).toBe(2);
      await panel.getByRole('button', { name: 'Mark all read' }).click();
      await waitUntil(async () => expect(await bell.textContent()).not.toContain('unread'));
      expect(await panel.getByText('New', { exact: true }).count()).toBe(0);
      await bell.click();
      expect(await panel.isVisible()).toBe(false);
    });

    it('names the field by its label when the server refuses a form', async () => {
      await owner.goto(`/orgs/${org}/profile`);
      const form = owner.getByRole('region', { name: 'Change your password' });
      await form.getByLabel('Current password').fill('not-my-password-at-all');
      await form.getByLabel('New password', { exact: true }).fill('Harbor-Violet-Engine-52');
      await form.getByLabel('New password again').fill('Harbor-Violet-Engine-52');
      await form.getByRole('button', { name: 'Change password' }).click();
      const alert = form.getByRole('alert');
      await alert.waitFor();
      await waitUntil(async () =>
        expect(await alert.textContent()).toContain('Current password is not your current password.'),
      );
      // No machine path (`body.currentPassword`, `currentPassword`) reaches the person.
      expect(await alert.textContent()).not.toMatch(/currentPassword|body\./);
    });

    it('keeps the frame on a dead end and offers the way back', async () => {
      await owner.goto(`/orgs/${org}/no-such-screen`);
      await owner.getByRole('heading', { name: 'There is no such page' }).waitFor();
      await sections(owner).getByRole('link', { name: 'Agents' }).waitFor();
      await owner.getByRole('link', { name: 'Back to the dashboard' }).click();
      await owner.waitForURL(new RegExp(`/orgs/${org}$`));

      await owner.goto('/no-such-page');
      await owner.getByRole('heading', { name: 'There is no such page' }).waitFor();
      await owner.getByRole('button', { name: 'Sign out' }).waitFor();
      await owner.getByRole('link', { name: 'Back to the console' }).click();
      await owner.waitForURL(new RegExp(`/orgs/${org}$`));

      await owner.goto('/orgs/no-such-org/agents');
      await owner
        .getByText('There is no organization “no-such-org”, or you are not a member of it.')
        .waitFor();
      await owner.getByRole('link', { name: 'Your profile' }).click();
      await owner.waitForURL(`**/orgs/${org}/profile`);

      await owner.goto(`/orgs/${org}/commands/cmd_00000000000000000000000000`);
      await owner.getByRole('heading', { name: 'There is no such command' }).waitFor();
      await owner.getByRole('link', { name: 'Back to the dashboard' }).waitFor();
    });

    it('keeps the frame, and offers the way back, when a member opens a screen their role does not give', async () => {
      // A viewer joins: the audit log and the API keys are not theirs to see.
      const invitation = await owner.evaluate(async (org) => {
        const { csrfToken } = (await (await fetch('/api/auth/session')).json()) as { csrfToken: string };
        const response = await fetch(`/api/orgs/${org}/invitations`, {
          method: 'POST',
          headers: { 'x-csrf-token': csrfToken, 'content-type': 'application/json' },
          body: JSON.stringify({ email: 'vera@example.test', role: 'viewer' }),
        });
        return { status: response.status, body: (await response.json()) as { acceptPath: string } };
      }, org);
      expect(invitation.status).toBe(201);
      const { context, page: viewer } = await world.newPage();
      await viewer.goto(invitation.body.acceptPath);
      await viewer.getByLabel('Display name').fill('Vera Viewer');
      await viewer.getByLabel('Password', { exact: true }).fill('Meadow-Pylon-Harvest-73!');
      await viewer.getByLabel('Password again').fill('Meadow-Pylon-Harvest-73!');
      await viewer.getByRole('button', { name: 'Create account and join' }).click();
      await viewer.waitForURL(`**/orgs/${org}`);
      await sections(viewer).getByRole('link', { name: 'Agents' }).waitFor();
      expect(await sections(viewer).getByRole('link', { name: 'Audit log' }).count()).toBe(0);

      // A shared link to the audit log: said in words, inside the frame, without asking the API.
      const asked: string[] = [];
      viewer.on('request', (request) => asked.push(new URL(request.url()).pathname));
      await viewer.goto(`/orgs/${org}/audit?action=command.*`);
      await viewer.getByRole('heading', { level: 1, name: 'You do not have access to Audit log' }).waitFor();
      expect(await viewer.locator('main').textContent()).toContain(
        'does not give the permission “audit:read”',
      );
      await sections(viewer).getByRole('link', { name: 'Agents' }).waitFor();
      await viewer.getByRole('button', { name: 'Sign out' }).waitFor();
      expect(asked.filter((path) => path.startsWith(`/api/orgs/${org}/audit`))).toEqual([]);
      await viewer.getByRole('link', { name: 'Back to the dashboard' }).click();
      await viewer.waitForURL(new RegExp(`/orgs/${org}$`));

      // The same for another section reached by its address.
      await viewer.goto(`/orgs/${org}/api-keys`);
      await viewer.getByRole('heading', { level: 1, name: 'You do not have access to API keys' }).waitFor();
      await viewer.getByRole('link', { name: 'Back to the dashboard' }).waitFor();
      // What the role does give still opens.
      await sections(viewer).getByRole('link', { name: 'Security' }).click();
      await viewer.waitForURL(`**/orgs/${org}/security`);
      await viewer.getByRole('heading', { level: 1, name: 'Security' }).waitFor();
      expect(await viewer.getByRole('heading', { name: /^You do not have access/ }).count()).toBe(0);
      await context.close();
    });

    it('offers the recovery codes to copy and to save as a text file', async () => {
      await owner.goto(`/orgs/${org}/profile`);
      const section = owner.getByRole('region', { name: 'Two-factor authentication' });
      await section.getByRole('button', { name: 'Add an authenticator app' }).click();
      await section.getByRole('img', { name: 'QR code of the authenticator secret' }).waitFor();
      const secret = (await section.getByTestId('totp-secret').textContent()) ?? '';
      await section
        .getByLabel('Code from the app')
        .fill(await generate({ secret, crypto: new NodeCryptoPlugin() }));
      await section.getByRole('button', { name: 'Confirm' }).click();
      const items = section.getByRole('list', { name: 'Recovery codes' }).getByRole('listitem');
      await waitUntil(async () => expect(await items.count()).toBe(10));
      const codes = (await items.allTextContents()).map((code) => code.trim());

      // What reaches the clipboard (the page may write it, not read it back: Permissions-Policy).
      await owner.evaluate(() => {
        const copied: string[] = [];
        (window as unknown as { copied: string[] }).copied = copied;
        navigator.clipboard.writeText = async (text: string) => {
          copied.push(text);
        };
      });
      await section.getByRole('button', { name: 'Copy the codes' }).click();
      await section.getByRole('button', { name: /^Copied/ }).waitFor();
      expect(await owner.evaluate(() => (window as unknown as { copied: string[] }).copied)).toEqual([
        codes.join('\n'),
      ]);

      const [download] = await Promise.all([
        owner.waitForEvent('download'),
        section.getByRole('button', { name: 'Download as a text file' }).click(),
      ]);
      expect(download.suggestedFilename()).toBe('bulwark-recovery-codes.txt');
      const saved = await readFile((await download.path())!, 'utf8');
      for (const code of codes) expect(saved).toContain(code);
    });

    it('saw no CSP violation and no console error', () => {
      expect(world.problems).toEqual([]);
    });
  },
);
