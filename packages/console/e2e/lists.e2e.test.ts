import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type ConsoleWorld,
  hasChromium,
  requireChromiumInCi,
  signIn,
  signInFirstOwner,
  startConsoleWorld,
} from './support.js';

/**
 * The console's lists in a real browser, against the real server and real agent processes (UI-1):
 * search, sort and page are kept in the URL (a reload or a shared link shows the same page), an
 * agent's page shows what is known of it, and a disabled agent's service says it cannot run and why.
 */

requireChromiumInCi('the list console tests');

const OWNER_PASSWORD = 'Lantern-Quarry-Meadow-64!';
const NODE = process.execPath;

let world: ConsoleWorld;
let owner: Page;
let org = '';
const ids: Record<string, string> = {};

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 60_000, interval: 200 });

/** Calls the API from the signed-in page, as the console does (the session cookie and its CSRF token). */
async function call<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  return owner.evaluate(
    async ({ method, path, body }) => {
      const { csrfToken } = (await (await fetch('/api/auth/session')).json()) as { csrfToken: string };
      const response = await fetch(path, {
        method,
        headers: {
          'x-csrf-token': csrfToken,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: response.status, body: (await response.json()) as T };
    },
    { method, path, body },
  );
}

/** The agent names in the Agents table, top to bottom. */
async function agentRows(): Promise<string[]> {
  const table = owner.getByRole('table', { name: 'Agents' });
  await table.waitFor();
  return table.locator('tbody tr td:first-child').allTextContents();
}

describe.skipIf(!hasChromium)('lists in the console', { timeout: 180_000 }, () => {
  beforeAll(async () => {
    world = await startConsoleWorld();
    owner = (await world.newPage()).page;
    org = await signInFirstOwner(world, owner, OWNER_PASSWORD);

    const token = await call<{ token: string }>('POST', `/api/orgs/${org}/agent-registration-tokens`, {
      labels: { env: 'staging' },
      uses: 3,
    });
    expect(token.status).toBe(201);
    for (const name of ['web-alpha', 'web-bravo', 'web-charlie'])
      await world.startAgent(token.body.token, name, [
        {
          name: 'rotate-logs',
          description: 'Rotates the logs',
          risk: 'low',
          params: { type: 'object', properties: {}, additionalProperties: false },
          argv: [NODE, '-e', 'console.log("rotated")'],
        },
      ]);
    await waitUntil(async () => {
      const listed = await call<{ agents: Array<{ id: string; name: string; status: string }> }>(
        'GET',
        `/api/orgs/${org}/agents`,
      );
      expect(listed.body.agents.filter((a) => a.status === 'online')).toHaveLength(3);
      for (const agent of listed.body.agents) ids[agent.name] = agent.id;
    });
    await waitUntil(async () => {
      const services = await call<{ services: unknown[] }>('GET', `/api/orgs/${org}/services`);
      expect(services.body.services).toHaveLength(3);
    });
  }, 180_000);
  afterAll(async () => {
    await world?.close();
  });

  it('keeps search, sort and page in the URL, through a reload', async () => {
    await owner.goto(`/orgs/${org}/agents`);
    await owner.getByLabel('Search agents').fill('BRAVO');
    await owner.waitForURL(/[?&]q=BRAVO/);
    await waitUntil(async () => expect(await agentRows()).toEqual(['web-bravo']));
    await owner.reload();
    expect(await owner.getByLabel('Search agents').inputValue()).toBe('BRAVO');
    await waitUntil(async () => expect(await agentRows()).toEqual(['web-bravo']));

    // Sorted by name, descending, two to a page (a page size kept in the URL as well).
    await owner.goto(`/orgs/${org}/agents?limit=2`);
    await waitUntil(async () => expect(await agentRows()).toEqual(['web-alpha', 'web-bravo']));
    const table = owner.getByRole('table', { name: 'Agents' });
    await table.getByRole('button', { name: /^Name/ }).click();
    await owner.waitForURL(/[?&]sort=-name/);
    await waitUntil(async () => expect(await agentRows()).toEqual(['web-charlie', 'web-bravo']));
    expect(await table.locator('th[aria-sort="descending"]').textContent()).toContain('Name');
    await owner.getByRole('button', { name: 'Next page' }).click();
    await owner.waitForURL(/[?&]after=/);
    await waitUntil(async () => expect(await agentRows()).toEqual(['web-alpha']));
    const second = owner.url();

    await owner.reload();
    expect(owner.url()).toBe(second);
    await waitUntil(async () => expect(await agentRows()).toEqual(['web-alpha']));
    expect(await owner.locator('th[aria-sort="descending"]').textContent()).toContain('Name');
    expect(await owner.getByRole('button', { name: 'Next page' }).isDisabled()).toBe(true);
    // The pages before this one are remembered through the reload too.
    await owner.getByRole('button', { name: 'Previous page' }).click();
    await waitUntil(async () => expect(await agentRows()).toEqual(['web-charlie', 'web-bravo']));
    expect(new URL(owner.url()).searchParams.get('after')).toBeNull();

    // A shared link opens on the same page in a new window.
    const other = await world.newPage();
    await signIn(other.page, world.ownerEmail, OWNER_PASSWORD);
    await other.page.waitForURL(/\/orgs\//);
    await other.page.goto(second);
    const shared = other.page.getByRole('table', { name: 'Agents' });
    await waitUntil(async () =>
      expect(await shared.locator('tbody tr td:first-child').allTextContents()).toEqual(['web-alpha']),
    );
    await other.context.close();
    await world.screenshot(owner, 'agents-list');
  });

  it("shows an agent's facts on its own page", async () => {
    await owner.goto(`/orgs/${org}/agents?q=alpha`);
    await owner.getByRole('link', { name: 'web-alpha' }).click();
    await owner.waitForURL(`**/orgs/${org}/agents/${ids['web-alpha']}`);
    const facts = owner.getByRole('definition');
    await owner.getByRole('heading', { level: 1, name: /web-alpha/ }).waitFor();
    const summary = owner.locator('dl[aria-label="Agent facts"]');
    await waitUntil(async () => expect(await summary.textContent()).toContain('online'));
    const text = (await summary.textContent()) ?? '';
    expect(text).toContain('127.0.0.1');
    expect(text).toContain('env=staging');
    expect(text).toContain(ids['web-alpha']);
    expect(text).toMatch(/Connected since.*\(up \d+/);
    expect(text).not.toContain('known while connected');
    expect(await facts.count()).toBeGreaterThan(5);
    // Its service, and the way to its run history.
    await owner.getByRole('heading', { name: /^web on web-alpha/ }).waitFor();
    await owner.getByRole('link', { name: /Run history of web on web-alpha/ }).click();
    await owner.waitForURL(`**/services/${ids['web-alpha']}/web`);
    await owner.getByRole('heading', { level: 1, name: /Run history of web/ }).waitFor();
    await owner.getByText('No command has been run on this service.').waitFor();
    await world.screenshot(owner, 'agent-page');
  });

  it("shows a disabled agent's service as unavailable, Run disabled with the reason", async () => {
    expect((await call('POST', `/api/orgs/${org}/agents/${ids['web-charlie']}/disable`)).status).toBe(200);
    const reason = /The agent is disabled/;

    await owner.goto(`/orgs/${org}/services?q=charlie`);
    const card = owner.getByRole('article', { name: /web on web-charlie/ });
    await card.waitFor();
    await card.getByText(reason).first().waitFor();
    const run = card.getByRole('button', { name: /Run rotate-logs on web \(web-charlie\)/ });
    expect(await run.isDisabled()).toBe(true);
    expect(await run.getAttribute('aria-describedby')).toBeTruthy();
    expect(await card.getByRole('link', { name: /^Run rotate-logs/ }).count()).toBe(0);
    // A healthy agent's service still offers Run.
    await owner.goto(`/orgs/${org}/services?q=bravo`);
    await owner.getByRole('link', { name: 'Run rotate-logs on web (web-bravo)' }).waitFor();

    // The agent's own page, and the run form reached by its address, say the same.
    await owner.goto(`/orgs/${org}/agents/${ids['web-charlie']}`);
    await owner.getByRole('note').filter({ hasText: reason }).first().waitFor();
    await owner.goto(`/orgs/${org}/services/${ids['web-charlie']}/web/rotate-logs`);
    await owner.getByText(reason).waitFor();
    expect(await owner.getByRole('button', { name: 'Run rotate-logs' }).isDisabled()).toBe(true);
    expect(await owner.getByRole('button', { name: 'Review and run' }).count()).toBe(0);
    await world.screenshot(owner, 'disabled-service');
    expect(world.problems).toEqual([]);
  });
});
