import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AGENT_VERSION } from '../../agent/src/version.js';
import { SessionClient } from '../../server/src/test-support/session-client.js';
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
const MEMBER = { email: 'nora@example.test', name: 'Nora Operator', password: 'Willow-Quartz-Beacon-58!' };
const NODE = process.execPath;

let world: ConsoleWorld;
let owner: Page;
let org = '';
const ids: Record<string, string> = {};
/** People's user ids: the owner's and the member's. */
const people: Record<string, string> = {};

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
        {
          name: 'flush-cache',
          description: 'Flushes the cache',
          risk: 'low',
          params: { type: 'object', properties: {}, additionalProperties: false },
          argv: [NODE, '-e', 'process.stdout.write("flushed\\n")'],
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

    // Commands by two people: the owner on web-alpha and web-bravo, a member on web-bravo.
    const invited = await call<{ token: string }>('POST', `/api/orgs/${org}/invitations`, {
      email: MEMBER.email,
      role: 'operator',
    });
    expect(invited.status).toBe(201);
    const member = new SessionClient(world.server.url);
    const joined = await member.json<{ user: { id: string } }>('POST', '/api/invitations/accept', {
      token: invited.body.token,
      displayName: MEMBER.name,
      password: MEMBER.password,
    });
    expect(joined.status).toBe(200);
    people.member = joined.body.user.id;
    people.owner = (await call<{ user: { id: string } }>('GET', '/api/auth/session')).body.user.id;
    const run = async (agent: string, action: string, by: 'owner' | 'member') => {
      const body = { agent: ids[agent], service: 'web', action, params: {} };
      const created =
        by === 'owner'
          ? await call<{ id: string }>('POST', `/api/orgs/${org}/commands`, body)
          : await member.json<{ id: string }>('POST', `/api/orgs/${org}/commands`, body);
      expect(created.status).toBe(201);
      return created.body.id;
    };
    const commands = [
      await run('web-alpha', 'rotate-logs', 'owner'),
      await run('web-bravo', 'flush-cache', 'owner'),
      await run('web-bravo', 'rotate-logs', 'member'),
    ];
    await waitUntil(async () => {
      for (const id of commands)
        expect((await call<{ status: string }>('GET', `/api/orgs/${org}/commands/${id}`)).body.status).toBe(
          'succeeded',
        );
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

  it('keeps the filters of services, commands and members in the URL', async () => {
    // Services: a link searching "ha" (web-alpha, web-charlie) sorted by agent, Z–A.
    await owner.goto(`/orgs/${org}/services?q=ha&sort=-agent`);
    const cards = owner.locator('article.card h2');
    await waitUntil(async () =>
      expect(await cards.allTextContents()).toEqual(['web on web-charlie', 'web on web-alpha']),
    );
    expect(await owner.getByLabel('Search services').inputValue()).toBe('ha');
    expect(await owner.getByLabel('Sort by').inputValue()).toBe('-agent');
    await owner.getByLabel('Health').selectOption('down');
    await owner.waitForURL((url) => url.searchParams.get('health') === 'down');
    expect(new URL(owner.url()).searchParams.get('q')).toBe('ha');
    await owner.getByText('No services match.').waitFor();

    // Commands: a link searching "rotate", sorted by action.
    await owner.goto(`/orgs/${org}/commands?q=rotate&sort=action`);
    const commands = owner.getByRole('table', { name: 'Commands' });
    await waitUntil(async () =>
      expect((await commands.locator('tbody tr td:first-child').allTextContents()).sort()).toEqual([
        'web/rotate-logs on web-alpha',
        'web/rotate-logs on web-bravo',
      ]),
    );
    expect(await owner.getByLabel('Search commands').inputValue()).toBe('rotate');
    expect(await commands.locator('th[aria-sort="ascending"]').textContent()).toContain('Action');
    await owner.getByLabel('Status').selectOption('failed');
    await owner.waitForURL((url) => url.searchParams.get('status') === 'failed');
    expect(new URL(owner.url()).searchParams.get('q')).toBe('rotate');
    await owner.getByText('No commands.').waitFor();

    // Members: a link searching "example.test", sorted by email Z–A; then narrowed to operators.
    await owner.goto(`/orgs/${org}/members?q=example.test&sort=-email`);
    const members = owner.getByRole('table', { name: 'Members' });
    await waitUntil(async () =>
      expect(await members.locator('tbody tr td:nth-child(2)').allTextContents()).toEqual([
        world.ownerEmail,
        MEMBER.email,
      ]),
    );
    expect(await owner.getByLabel('Search members').inputValue()).toBe('example.test');
    expect(await members.locator('th[aria-sort="descending"]').textContent()).toContain('Email');
    // The member by name, the id on hover.
    const nora = members.getByRole('cell', { name: MEMBER.name });
    expect(await nora.getAttribute('title')).toBe(people.member);
    await owner.getByLabel('Role').selectOption('operator');
    await owner.waitForURL((url) => url.searchParams.get('role') !== null);
    expect(new URL(owner.url()).searchParams.get('q')).toBe('example.test');
    await waitUntil(async () =>
      expect(await members.locator('tbody tr td:nth-child(2)').allTextContents()).toEqual([MEMBER.email]),
    );
  });

  it('shows the commands of several people from one list request, each by name with the id on hover', async () => {
    // Every API request the page makes while it loads and shows the list.
    const asked: string[] = [];
    const record = (request: { url(): string }) => {
      const url = new URL(request.url());
      if (url.pathname.startsWith('/api/')) asked.push(`${url.pathname}${url.search}`);
    };
    owner.on('request', record);
    await owner.goto(`/orgs/${org}/commands`);
    const table = owner.getByRole('table', { name: 'Commands' });
    const requesters = table.locator('tbody tr td:nth-child(4) .person');
    await waitUntil(async () => expect(await requesters.count()).toBe(3));
    // The names are shown: whatever the page needed for them has been asked by now.
    const shown = await requesters.evaluateAll((spans) =>
      spans.map((span) => ({ text: span.textContent, id: span.getAttribute('title') })),
    );
    owner.off('request', record);
    expect(shown.filter((p) => p.id === people.member).map((p) => p.text)).toEqual([
      `${MEMBER.name} (${MEMBER.email})`,
    ]);
    expect(shown.filter((p) => p.id === people.owner).map((p) => p.text?.includes(world.ownerEmail))).toEqual(
      [true, true],
    );
    // One request for the rows, and none per row: no person, agent or command fetched one by one.
    expect(asked.filter((path) => path.startsWith(`/api/orgs/${org}/commands`))).toHaveLength(1);
    expect(asked.filter((path) => /usr_|agt_|cmd_|\/members|\/users/.test(path))).toEqual([]);
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
    expect(text).toContain(`Agent version${AGENT_VERSION}`);
    expect(text).not.toContain('known while connected');
    expect(await facts.count()).toBeGreaterThan(5);
    // Its recent commands: the one run on it, not those of the other agents.
    await owner.getByRole('heading', { name: 'Recent commands' }).waitFor();
    const recent = owner.getByRole('table', { name: 'Commands' });
    expect(await recent.locator('tbody tr td:first-child').allTextContents()).toEqual([
      'web/rotate-logs on web-alpha',
    ]);
    expect(await recent.locator('tbody tr').first().textContent()).toContain('succeeded');
    // Its service, and the way to its run history.
    await owner.getByRole('heading', { name: /^web on web-alpha/ }).waitFor();
    await owner.getByRole('link', { name: /Run history of web on web-alpha/ }).click();
    await owner.waitForURL(`**/services/${ids['web-alpha']}/web`);
    await owner.getByRole('heading', { level: 1, name: /Run history of web/ }).waitFor();
    const history = owner.getByRole('table', { name: 'Commands' });
    await history.waitFor();
    expect(await history.locator('tbody tr td:first-child').allTextContents()).toEqual([
      'web/rotate-logs on web-alpha',
    ]);
    const row = (await history.locator('tbody tr').first().textContent()) ?? '';
    expect(row).toContain('succeeded');
    expect(row).toContain(world.ownerEmail);
    await world.screenshot(owner, 'agent-page');
    // Narrowed to a state none of its commands is in: said so, in the URL.
    await owner.getByLabel('Status').selectOption('failed');
    await owner.waitForURL(/[?&]status=failed/);
    await owner.getByText('No command has been run on this service in this state.').waitFor();
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
