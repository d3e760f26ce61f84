import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
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
 * from the organization's live stream alone (the page is never reloaded). A run that passes its error
 * threshold stops, and the targets it never sent are shown skipped.
 */

requireChromiumInCi('the bulk-run console tests');

const OWNER_PASSWORD = 'Granite-Ferry-Orchard-27!';
const NODE = process.execPath;

let world: ConsoleWorld;
let owner: Page;
let org = '';

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 60_000, interval: 200 });

/** Where the photographs go: test-output/console/screens/, which CI keeps (.ci/run). */
const SCREENS = path.join(
  process.env.BULWARK_TEST_OUTPUT ?? path.join(tmpdir(), 'bulwark-test-output'),
  'console',
  'screens',
);

/** A PNG's width and height in pixels, from its IHDR chunk (the first, right after the signature). */
async function pngSize(file: string): Promise<{ width: number; height: number }> {
  const png = await readFile(file);
  expect(png.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
  expect(png.subarray(12, 16).toString('latin1')).toBe('IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

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
        {
          name: 'check-disk',
          description: 'Fails: the disk is full',
          risk: 'low',
          params: { type: 'object', properties: {}, additionalProperties: false },
          argv: [NODE, '-e', 'console.error("disk full"); process.exit(3)'],
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
    // Only this run's photographs count: none is left over from an earlier one.
    await rm(SCREENS, { recursive: true, force: true });
    const sizes = [
      ['desktop', { width: 1280, height: 800 }],
      ['phone', { width: 390, height: 844 }],
    ] as const;
    for (const [size, viewport] of sizes) {
      await owner.setViewportSize(viewport);
      for (const [name, screen] of screens) {
        await owner.goto(screen);
        await owner.getByRole('heading', { level: 1 }).first().waitFor();
        await waitUntil(async () => expect(await owner.getByText(/^Loading .*…$/).count()).toBe(0));
        // The viewport, not the whole page: what a person sees at that size, top of the screen.
        await owner.screenshot({ path: path.join(SCREENS, `${name}-${size}.png`), fullPage: false });
      }
    }
    await owner.setViewportSize({ width: 1280, height: 800 });
    for (const [size, viewport] of sizes)
      for (const [name] of screens)
        expect({ name, ...(await pngSize(path.join(SCREENS, `${name}-${size}.png`))) }).toEqual({
          name,
          ...viewport,
        });
    expect(world.problems).toEqual([]);
  });

  it('stops a run at its error threshold and shows the targets it never sent as skipped', async () => {
    // One at a time, and none may fail: the first target fails, and the other two are never sent.
    await owner.goto(`/orgs/${org}/bulk-runs`);
    await owner.getByRole('button', { name: 'New bulk run' }).click();
    const form = owner.getByRole('dialog', { name: 'New bulk run' });
    await form.getByLabel('Agents (label selector)').fill('env=prod');
    await form.getByLabel('Service').selectOption('web');
    await form.getByLabel('Action').selectOption('check-disk');
    await form.getByLabel('At most at once').fill('1');
    await form.getByLabel('Stop after more than … failures').fill('0');
    await form.getByText('Matches 3 agents; 3 can run web/check-disk.').waitFor();
    await form.getByRole('button', { name: 'Run on 3 agents' }).click();
    await owner.waitForURL(/\/bulk-runs\/blk_/);

    // Told live, as above: one failed, two skipped, each saying why, and the run says it stopped.
    const targets = owner.getByRole('table', { name: 'Targets' });
    await waitUntil(async () => {
      expect(await targets.getByText('failed', { exact: true }).count()).toBe(1);
      expect(await targets.getByText('skipped', { exact: true }).count()).toBe(2);
    });
    expect(
      await targets
        .getByText('skipped: the run stopped after 1 failed target(s), more than the 0 it allows')
        .count(),
    ).toBe(2);
    await owner.getByText('1 failed · 2 skipped of 3').waitFor();
    await owner.getByText(/^Stopped: more targets failed than the run allows\./).waitFor();
    expect(world.problems).toEqual([]);
  });
});
