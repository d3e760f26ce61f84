import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AxeResults } from 'axe-core';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type ConsoleWorld,
  hasChromium,
  requireChromiumInCi,
  signInFirstOwner,
  startConsoleWorld,
} from './support.js';

/**
 * UI-2: every screen of the console passes axe-core's checks (WCAG 2.x A and AA, and axe's best
 * practices) with no violation of serious or critical impact — at desktop width and at phone width,
 * where tables scroll sideways and a scrollable region must be reachable from the keyboard — and in
 * the states a screen opens into: the notifications panel, the audit event drawer, the create
 * dialogs, an invitation link signed in and signed out. Plus the skip link: the first thing Tab
 * reaches, and it moves the focus to the screen's content.
 */

requireChromiumInCi('the accessibility tests');

const OWNER_PASSWORD = 'Lantern-Quay-Basalt-64!';
const NODE = process.execPath;
const PHONE = { width: 390, height: 844 };

let world: ConsoleWorld;
let owner: Page;
let org = '';

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 30_000, interval: 200 });

const TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'];
/** axe-core's own bundle (the minified build of the same release), injected into the page under test. */
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/**
 * The serious and critical violations axe finds on the page as it is now, as readable lines.
 *
 * axe runs in the page itself (what @axe-core/playwright calls legacy mode): its default mode also
 * opens a blank page per analysis to merge per-frame results, and the console has no frames, which
 * this checks, so nothing goes unexamined. Only violations are asked for in full: for passes and
 * incomplete results axe skips building selectors, the slow part that nothing here reads; every
 * rule still runs on every element.
 */
async function violations(page: Page): Promise<string[]> {
  expect(page.frames()).toHaveLength(1);
  // Injected once per document: a navigation starts a fresh one, a viewport change does not.
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE_SOURCE);
  const results = await page.evaluate(
    (tags) =>
      (
        window as unknown as { axe: { run(context: Document, options: object): Promise<AxeResults> } }
      ).axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] }),
    TAGS,
  );
  return results.violations
    .filter((violation) => violation.impact === 'serious' || violation.impact === 'critical')
    .map(
      (violation) =>
        `${new URL(page.url()).pathname}: ${violation.id} (${violation.impact}) ${violation.help}: ${violation.nodes
          .slice(0, 3)
          .map((node) => node.target.join(' '))
          .join(' | ')}`,
    );
}

/** Opens a screen and waits until it has drawn its heading (the screens load their data after). */
async function visit(page: Page, path: string): Promise<void> {
  await page.goto(path);
  await page.getByRole('heading', { level: 1 }).first().waitFor();
  // Lists and details arrive after the heading: wait until nothing says it is loading.
  await waitUntil(async () => expect(await page.getByText(/^Loading .*…$/).count()).toBe(0));
}

describe.skipIf(!hasChromium)('the console is accessible', { timeout: 600_000 }, () => {
  beforeAll(async () => {
    world = await startConsoleWorld();
    owner = (await world.newPage()).page;
    org = await signInFirstOwner(world, owner, OWNER_PASSWORD);

    // A real agent with an action, and one command run, so the action and command screens exist.
    // Labelled, so that a bulk run can pick it.
    await owner.goto(`/orgs/${org}/agents`);
    await owner.getByRole('button', { name: 'New registration token' }).click();
    await owner.getByLabel('Labels for the agents it registers').fill('env=prod');
    await owner.getByRole('button', { name: 'Create token' }).click();
    const token = await owner.getByLabel('Registration token', { exact: true }).inputValue();
    await owner.getByRole('button', { name: 'Done' }).click();
    await world.startAgent(token, 'web-1', [
      {
        name: 'hello',
        description: 'Says hello',
        risk: 'low',
        params: {
          type: 'object',
          properties: { greeting: { type: 'string', enum: ['hello', 'hi'] } },
          required: ['greeting'],
          additionalProperties: false,
        },
        argv: [NODE, '-e', 'console.log(process.argv[1] + " from web")', '{{greeting}}'],
      },
    ]);
    await owner.goto(`/orgs/${org}/services`);
    await waitUntil(async () => {
      await owner.goto(`/orgs/${org}/services`);
      await owner.getByRole('link', { name: 'Run hello on web (web-1)' }).waitFor({ timeout: 2000 });
    });
    await owner.getByRole('link', { name: 'Run hello on web (web-1)' }).click();
    await owner.getByLabel('greeting').selectOption('hello');
    await owner.getByRole('button', { name: 'Review and run' }).click();
    await owner
      .getByRole('dialog', { name: 'Run hello?' })
      .getByRole('button', { name: 'Run hello' })
      .click();
    await owner.waitForURL(/\/commands\/cmd_/);
  }, 300_000);
  afterAll(async () => {
    await world?.close();
  });

  it('finds no serious or critical violation on any screen, at 1280×800 and at phone width', async () => {
    const commandPage = new URL(owner.url()).pathname;
    await owner.goto(`/orgs/${org}/services`);
    const runAction = await owner
      .getByRole('link', { name: 'Run hello on web (web-1)' })
      .getAttribute('href');
    // The run link is /orgs/<org>/services/<agent>/web/hello: the agent's page and the service's
    // run history are found from it.
    const agentId = /\/services\/([^/]+)\/web\/hello$/.exec(runAction!)![1];
    const found: string[] = [];

    // The dialogs are checked at desktop width only (they are one column at any width): a bulk run
    // over the agent, started from its dialog, checked open and filled in with its preview shown.
    await visit(owner, `/orgs/${org}/bulk-runs`);
    await owner.getByRole('button', { name: 'New bulk run' }).click();
    const form = owner.getByRole('dialog', { name: 'New bulk run' });
    await form.getByLabel('Agents (label selector)').fill('env=prod');
    await form.getByLabel('Service').selectOption('web');
    await form.getByLabel('Action').selectOption('hello');
    await form.getByLabel('greeting').selectOption('hi');
    await form.getByText('Matches 1 agent; 1 can run web/hello.').waitFor();
    found.push(...(await violations(owner)));
    await form.getByRole('button', { name: 'Run on 1 agent' }).click();
    await owner.waitForURL(/\/bulk-runs\/blk_/);
    const bulkRunPage = new URL(owner.url()).pathname;
    await owner.getByText('1 succeeded of 1').waitFor();
    // The registration-token dialogs: the form, then the token with its install command.
    await visit(owner, `/orgs/${org}/agents`);
    await owner.getByRole('button', { name: 'New registration token' }).click();
    const tokenForm = owner.getByRole('dialog', { name: 'New registration token' });
    await tokenForm.getByRole('button', { name: 'Create token' }).waitFor();
    found.push(...(await violations(owner)));
    await tokenForm.getByRole('button', { name: 'Create token' }).click();
    const created = owner.getByRole('dialog', { name: 'Registration token created' });
    await created.getByLabel('Registration token', { exact: true }).waitFor();
    found.push(...(await violations(owner)));
    await created.getByRole('button', { name: 'Done' }).click();
    await created.waitFor({ state: 'detached' });
    // An invitation link opened by someone signed in (the token is only read when accepting).
    await visit(owner, '/invitations/accept#an-invitation-token');
    await owner.getByRole('button', { name: 'Accept invitation' }).waitFor();
    found.push(...(await violations(owner)));

    const screens = [
      ...[
        '',
        '/agents',
        '/services',
        '/commands',
        '/bulk-runs',
        '/approvals',
        '/audit',
        '/members',
        '/invitations',
        '/teams',
        '/roles',
        '/secrets',
        '/api-keys',
        '/security',
        '/profile',
        '/no-such-screen',
      ].map((path) => `/orgs/${org}${path}`),
      `/orgs/${org}/agents/${agentId}`,
      `/orgs/${org}/services/${agentId}/web`,
      runAction!,
      commandPage,
      bulkRunPage,
      '/no-such-page',
    ];
    for (const viewport of [{ width: 1280, height: 800 }, PHONE]) {
      await owner.setViewportSize(viewport);
      for (const screen of screens) {
        await visit(owner, screen);
        found.push(...(await violations(owner)));
      }
      // The notifications panel, open.
      await visit(owner, `/orgs/${org}`);
      await owner.getByRole('button', { name: /^Notifications/ }).click();
      await owner.getByRole('heading', { name: 'Notifications' }).waitFor();
      found.push(...(await violations(owner)));
      // An audit event's detail drawer, open over the scrollable table.
      await visit(owner, `/orgs/${org}/audit`);
      await owner
        .getByRole('button', { name: /^Open event #/ })
        .first()
        .click();
      await owner
        .getByRole('dialog', { name: /^Event / })
        .getByText('Position in the chain')
        .waitFor();
      found.push(...(await violations(owner)));
    }
    await owner.setViewportSize({ width: 1280, height: 800 });

    // The sign-in screen, to someone signed out.
    const { context, page: visitor } = await world.newPage();
    await visitor.goto('/login');
    await visitor.getByRole('button', { name: 'Sign in' }).waitFor();
    found.push(...(await violations(visitor)));
    await visitor.setViewportSize(PHONE);
    found.push(...(await violations(visitor)));
    // An invitation link opened by someone without an account: the form that creates one.
    await visitor.setViewportSize({ width: 1280, height: 800 });
    await visitor.goto('/invitations/accept#an-invitation-token');
    await visitor.getByRole('button', { name: 'Create account and join' }).waitFor();
    found.push(...(await violations(visitor)));
    await visitor.setViewportSize(PHONE);
    found.push(...(await violations(visitor)));
    await context.close();

    expect(found).toEqual([]);
  });

  it('puts a skip link first on every frame; it takes the keyboard to the screen’s content', async () => {
    for (const screen of [`/orgs/${org}/agents`, '/no-such-page']) {
      await visit(owner, screen);
      await owner.keyboard.press('Tab');
      const skip = owner.getByRole('link', { name: 'Skip to content' });
      expect(await skip.evaluate((element) => element === document.activeElement)).toBe(true);
      // Visible once focused, not only present.
      const box = await skip.boundingBox();
      expect(box && box.y >= 0 && box.height > 0).toBe(true);
      await owner.keyboard.press('Enter');
      expect(await owner.evaluate(() => document.activeElement?.id)).toBe('main');
      // The next Tab lands inside the content, past the header and the sections.
      await owner.keyboard.press('Tab');
      expect(await owner.evaluate(() => Boolean(document.activeElement?.closest('main')))).toBe(true);
    }
  });

  it('saw no CSP violation and no console error', () => {
    expect(world.problems).toEqual([]);
  });
});
