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
 * A bulk run (CMD-8) from the console, on three real agent processes: the form previews the agents
 * the selector picks, the run is started once for all, and its page follows every target to its end
 * from the organization's live stream alone (the page is never reloaded).
 */

requireChromiumInCi('the bulk-run console tests');

const OWNER_PASSWORD = 'Granite-Ferry-Orchard-27!';
const NODE = process.execPath;

let world: ConsoleWorld;
let owner: Page;
let org = '';

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 60_000, interval: 200 });

describe.skipIf(!hasChromium)('bulk runs in the console', { timeout: 180_000 }, () => {
  beforeAll(async () => {
    world = await startConsoleWorld();
    owner = (await world.newPage()).page;
    org = await signInFirstOwner(world, owner, OWNER_PASSWORD);

    // One token for three agents labelled env=prod, and the three agents, real processes.
    await owner.goto(`/orgs/${org}/agents`);
    await owner.getByRole('button', { name: 'New registration token' }).click();
    await owner.getByLabel('Labels for the agents it registers').fill('env=prod');
    await owner.getByLabel('Registrations allowed').fill('3');
    await owner.getByRole('button', { name: 'Create token' }).click();
    const token = await owner.getByLabel('Registration token', { exact: true }).inputValue();
    await owner.getByRole('button', { name: 'Done' }).click();
    for (const name of ['prod-a', 'prod-b', 'prod-c'])
      await world.startAgent(token, name, [
        {
          name: 'rotate-logs',
          description: 'Rotates the logs',
          risk: 'low',
          params: { type: 'object', properties: {}, additionalProperties: false },
          // A little work, so that the run is seen going target by target.
          argv: [NODE, '-e', 'setTimeout(() => console.log("rotated"), 300)'],
        },
      ]);
    // Each agent reports its service once connected: the services list shows all three in the end.
    await waitUntil(async () => {
      await owner.goto(`/orgs/${org}/services`);
      await owner.getByRole('heading', { level: 1 }).waitFor();
      expect(await owner.getByRole('link', { name: /^Run rotate-logs/ }).count()).toBe(3);
    });
  }, 180_000);
  afterAll(async () => {
    await world?.close();
  });

  it('previews the targets, starts the run once, and follows each target live to its end', async () => {
    await owner.goto(`/orgs/${org}/bulk-runs`);
    await owner.getByRole('button', { name: 'New bulk run' }).click();
    const form = owner.getByRole('dialog', { name: 'New bulk run' });
    await form.getByLabel('Agents (label selector)').fill('env in (prod, canary)');
    await form.getByLabel('Service').selectOption('web');
    await form.getByLabel('Action').selectOption('rotate-logs');
    await form.getByLabel('At most at once').fill('1');
    await form.getByText('Matches 3 agents; 3 can run web/rotate-logs.').waitFor();
    await form.getByRole('button', { name: 'Run on 3 agents' }).click();
    await owner.waitForURL(/\/bulk-runs\/blk_/);
    const url = owner.url();

    // From here on the page is only told, never reloaded: the targets end one after another.
    const targets = owner.getByRole('table', { name: 'Targets' });
    await waitUntil(async () =>
      expect(await targets.getByText('succeeded', { exact: true }).count()).toBe(3),
    );
    await owner.getByText('3 succeeded of 3').waitFor();
    expect(owner.url()).toBe(url);
    for (const name of ['prod-a', 'prod-b', 'prod-c'])
      expect(await targets.getByRole('link', { name }).count()).toBe(1);
    await world.screenshot(owner, 'bulk-run');

    // The list shows the run with its progress.
    await owner.goto(`/orgs/${org}/bulk-runs`);
    const runs = owner.getByRole('table', { name: 'Bulk runs' });
    await runs.getByText('3 succeeded').waitFor();
    expect(world.problems).toEqual([]);
  });

  it('photographs the main screens at 1280×800 and 390×844 (for docs/console.md)', async () => {
    const screens: Array<[string, string]> = [
      ['dashboard', `/orgs/${org}`],
      ['agents', `/orgs/${org}/agents`],
      ['services', `/orgs/${org}/services`],
      ['commands', `/orgs/${org}/commands`],
      ['bulk-runs', `/orgs/${org}/bulk-runs`],
      ['approvals', `/orgs/${org}/approvals`],
      ['audit', `/orgs/${org}/audit`],
      ['members', `/orgs/${org}/members`],
      ['profile', '/profile'],
    ];
    // The pages of one agent and one command, found as a person would: from the lists.
    await owner.goto(`/orgs/${org}/agents`);
    const agentPage = await owner.getByRole('link', { name: 'prod-a' }).first().getAttribute('href');
    await owner.goto(`/orgs/${org}/commands`);
    await owner.getByRole('heading', { level: 1 }).waitFor();
    const commandPage = await owner.locator('a[href*="/commands/cmd_"]').first().getAttribute('href');
    screens.push(['agent', agentPage!], ['command', commandPage!]);
    for (const [size, viewport] of [
      ['desktop', { width: 1280, height: 800 }],
      ['phone', { width: 390, height: 844 }],
    ] as const) {
      await owner.setViewportSize(viewport);
      for (const [name, path] of screens) {
        await owner.goto(path);
        await owner.getByRole('heading', { level: 1 }).first().waitFor();
        await waitUntil(async () => expect(await owner.getByText(/^Loading .*…$/).count()).toBe(0));
        await world.screenshot(owner, `screens/${name}-${size}`);
      }
    }
    await owner.setViewportSize({ width: 1280, height: 800 });
    expect(world.problems).toEqual([]);
  });
});
