import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { NodeCryptoPlugin } from '@otplib/plugin-crypto-node';
import { generate } from 'otplib';
import type { Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCli } from '../../server/src/test-support/processes.js';
import { measureFirstLoad } from './first-load.js';
import {
  addVirtualAuthenticator,
  type ConsoleWorld,
  hasChromium,
  passkeyOrigin,
  requireChromiumInCi,
  signIn,
  startConsoleWorld,
  unnamedControls,
} from './support.js';

/**
 * The console in a real browser against a real server and a real agent (UI-1, UI-2): the flows an
 * operator goes through, in order, each step through the screens only. The whole run must see zero
 * CSP violations and zero console errors.
 */

requireChromiumInCi('the console tests');

const OWNER_PASSWORD = 'Tr4il-Harbor-Quartz-81!';
const OPERATOR = { email: 'operator@example.test', name: 'Olu Operator', password: 'Vq7-coastal-Lantern-92' };
const NODE = process.execPath;
const BUILT_ASSETS = new URL('../dist/assets/', import.meta.url);

let world: ConsoleWorld;
let owner: Page;
let operator: Page;
let org = '';

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 20_000, interval: 200 });

/** Presses Tab until `target` has the focus (as a keyboard user would), or fails after 60 presses. */
async function tabTo(page: Page, target: Locator): Promise<void> {
  for (let presses = 0; presses < 60; presses++) {
    if (
      await target.evaluate((element) => element.ownerDocument.activeElement === element).catch(() => false)
    )
      return;
    await page.keyboard.press('Tab');
  }
  throw new Error(`Tab never reached ${target}`);
}

describe.skipIf(!hasChromium)('the console in Chromium', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    world = await startConsoleWorld();
    owner = (await world.newPage()).page;
  }, 120_000);
  afterAll(async () => {
    await world?.close();
  });

  /**
   * A page whose session a test has just ended may still ask for what it shows (its live view, the
   * approvals badge) before it learns it was signed out: those 401s, logged since `from`, are the
   * ones that test provoked, and the page's way to the sign-in screen.
   */
  function forgetSignedOutRefusals(from: number): void {
    const since = world.refusals.splice(from);
    world.refusals.push(...since.filter((refusal) => !refusal.startsWith('401 ')));
  }

  it('signs the first owner in with the printed password and forces a new one first', async () => {
    await owner.goto('/');
    await owner.waitForURL('**/login');
    await world.screenshot(owner, 'login');
    await signIn(owner, world.ownerEmail, 'not-the-password');
    await owner.getByRole('alert').waitFor();
    expect(await owner.getByRole('alert').textContent()).toMatch(/email or password/i);

    await signIn(owner, world.ownerEmail, world.firstPassword);
    await owner.waitForURL('**/change-password');
    await owner.getByLabel('Current password').fill(world.firstPassword);
    await owner.getByLabel('New password', { exact: true }).fill(OWNER_PASSWORD);
    await owner.getByLabel('New password again').fill(OWNER_PASSWORD);
    await owner.getByRole('button', { name: 'Change password' }).click();
    await owner.waitForURL(/\/orgs\/[^/]+$/);
    org = new URL(owner.url()).pathname.split('/')[2]!;
    await owner.getByRole('heading', { level: 1 }).waitFor();
    await world.screenshot(owner, 'dashboard');
  });

  it('loads the sign-in page with under 250 KB of compressed JavaScript, and no screen it does not show', async () => {
    const load = await measureFirstLoad(
      world.browser,
      `${world.server.url}/login`,
      'button:has-text("Sign in")',
    );
    expect(load.script.transferred).toBeGreaterThan(0);
    expect(load.script.transferred).toBeLessThan(250 * 1024);
    const scripts = load.resources.filter((resource) => resource.type === 'Script');
    expect(scripts.every((script) => script.encoding === 'br' || script.encoding === 'gzip')).toBe(true);
    // Code-split: the other screens are chunks of their own, and the sign-in page fetches none of them.
    const chunks = (await readdir(BUILT_ASSETS)).filter((file) => file.endsWith('.js'));
    expect(chunks.length).toBeGreaterThan(10);
    expect(scripts.length).toBeLessThan(chunks.length);
    expect(scripts.some((script) => /\/assets\/(audit|agents|roles)-/.test(script.path))).toBe(false);
  });

  it('invites a member with a bounded role, who accepts in another browser', async () => {
    await owner.goto(`/orgs/${org}/invitations`);
    await owner.getByRole('button', { name: 'Invite someone' }).click();
    await owner.getByLabel('Email').fill(OPERATOR.email);
    await owner.getByLabel('Role').selectOption('operator');
    await owner.getByRole('button', { name: 'Create invitation' }).click();
    const link = await owner.getByLabel('Invitation link').inputValue();
    expect(link).toContain('/invitations/accept');
    await world.screenshot(owner, 'invitation-created');
    await owner.getByRole('button', { name: 'Done' }).click();

    operator = (await world.newPage()).page;
    await operator.goto(link);
    await operator.getByLabel('Display name').fill(OPERATOR.name);
    await operator.getByLabel('Password', { exact: true }).fill(OPERATOR.password);
    await operator.getByLabel('Password again').fill(OPERATOR.password);
    await operator.getByRole('button', { name: 'Create account and join' }).click();
    await operator.waitForURL(`**/orgs/${org}`);
    // The operator role does not invite people: that section is not offered.
    await operator.getByRole('navigation', { name: 'Sections' }).waitFor();
    expect(await operator.getByRole('link', { name: 'Invitations' }).count()).toBe(0);
    expect(await operator.getByRole('link', { name: 'Approvals' }).count()).toBe(1);
  });

  it('creates a registration token shown once, registers a real agent with it, and shows it online', async () => {
    await owner.goto(`/orgs/${org}/agents`);
    await owner.getByRole('button', { name: 'New registration token' }).click();
    await owner.getByRole('button', { name: 'Create token' }).click();
    const install = await owner.getByLabel('Install command').inputValue();
    const token = await owner.getByLabel('Registration token', { exact: true }).inputValue();
    expect(token).toMatch(/^bwr_\S+$/);
    expect(install).toContain(`--server ${world.server.url} --token-stdin`);
    // The copied line never carries the token: it would land in `ps` and shell history on the host.
    expect(install).not.toContain(token);
    await world.screenshot(owner, 'registration-token');
    await owner.getByRole('button', { name: 'Done' }).click();

    await world.startAgent(token!, 'web-1', [
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
      {
        name: 'restart',
        description: 'Restarts the web service',
        risk: 'high',
        params: { type: 'object', properties: {}, additionalProperties: false },
        argv: [NODE, '-e', 'console.log("restarted")'],
      },
    ]);
    const row = owner.getByRole('row', { name: /web-1/ });
    await waitUntil(async () => {
      await owner.getByRole('button', { name: 'Refresh' }).first().click();
      expect(await row.textContent()).toContain('online');
    });
    await world.screenshot(owner, 'agents');
  });

  it('runs a low-risk action from a generated form, confirmed by name, and shows its output live', async () => {
    await owner.goto(`/orgs/${org}/services`);
    await owner.getByRole('link', { name: 'Run hello on web (web-1)' }).click();
    await owner.getByRole('button', { name: 'Review and run' }).click();
    // Inline validation: the required parameter is refused before anything is sent.
    expect(await owner.getByLabel('greeting').getAttribute('aria-invalid')).toBe('true');
    await owner.getByLabel('greeting').selectOption('hello');
    await owner.getByRole('button', { name: 'Review and run' }).click();
    const dialog = owner.getByRole('dialog', { name: 'Run hello?' });
    const summary = await dialog.textContent();
    for (const named of ['web-1', 'web', 'hello', '"greeting":"hello"']) expect(summary).toContain(named);
    await world.screenshot(owner, 'run-action-confirm');
    // NET-5: the page opens the live stream with a single-use ticket, never with its cookie alone.
    const streams: URL[] = [];
    const onRequest = (request: { url(): string }) => {
      const url = new URL(request.url());
      if (url.pathname.endsWith('/events')) streams.push(url);
    };
    owner.on('request', onRequest);
    await dialog.getByRole('button', { name: 'Run hello' }).click();
    await owner.waitForURL(/\/commands\/cmd_/);
    await waitUntil(async () =>
      expect(await owner.getByLabel('Command output').textContent()).toContain('hello from web'),
    );
    await waitUntil(async () =>
      expect(await owner.locator('.toolbar .badge').last().textContent()).toBe('succeeded'),
    );
    owner.off('request', onRequest);
    expect(streams.length).toBeGreaterThan(0);
    for (const url of streams) expect(url.searchParams.get('ticket')).toMatch(/^bwt_/);
    await world.screenshot(owner, 'command-detail');
  });

  it('holds a high-risk action for another person’s approval; the requester cannot approve it', async () => {
    await owner.goto(`/orgs/${org}/services`);
    await owner.getByRole('link', { name: 'Run restart on web (web-1)' }).click();
    await owner.getByRole('button', { name: 'Review and run' }).click();
    const dialog = owner.getByRole('dialog', { name: 'Request approval to run restart?' });
    expect(await dialog.textContent()).toContain('1 approval by someone other than you');
    await dialog.getByRole('button', { name: 'Request approval' }).click();
    await owner.waitForURL(/\/commands\/cmd_/);
    const commandUrl = owner.url();
    await waitUntil(async () =>
      expect(await owner.locator('.toolbar .badge').last().textContent()).toBe('awaiting approval'),
    );
    // The requester is offered no way to approve their own command (the server refuses it anyway).
    await owner.getByText('You asked for this command').waitFor();
    expect(await owner.getByRole('button', { name: 'Approve' }).count()).toBe(0);

    await operator.goto(`/orgs/${org}/approvals`);
    const card = operator.getByRole('article', { name: 'web/restart' });
    await card.getByLabel('Comment').fill('change window open');
    await world.screenshot(operator, 'approvals');
    await card.getByRole('button', { name: 'Approve' }).click();

    await owner.goto(commandUrl);
    await waitUntil(async () =>
      expect(await owner.locator('.toolbar .badge').last().textContent()).toBe('succeeded'),
    );
    // The output comes over the page's event stream, which may land after the status.
    await waitUntil(async () =>
      expect(await owner.getByLabel('Command output').textContent()).toContain('restarted'),
    );
    expect(await owner.getByRole('heading', { name: /Approvals/ }).textContent()).toContain('1 of 1');
  });

  it('filters the audit log, verifies its chain and exports what the filter selects', async () => {
    await owner.goto(`/orgs/${org}/audit`);
    await owner.getByText(/Chain verified/).waitFor();
    await owner.getByLabel('Event type').selectOption('command.created');
    await owner.getByRole('button', { name: 'Apply filters' }).click();
    await waitUntil(async () => {
      const actions = await owner.locator('table[aria-label="Audit events"] tbody td code').allTextContents();
      expect(actions.length).toBe(2);
      expect(new Set(actions)).toEqual(new Set(['command.created']));
    });
    await world.screenshot(owner, 'audit');
    const [download] = await Promise.all([
      owner.waitForEvent('download'),
      owner.getByRole('button', { name: 'Export CSV' }).click(),
    ]);
    const csv = await readFile((await download.path())!, 'utf8');
    const lines = csv.trim().split('\n');
    expect(lines).toHaveLength(3); // a header and the two commands
    expect(lines.slice(1).every((line) => line.includes('command.created'))).toBe(true);
  });

  it('runs an action with the keyboard alone, from sign-in to its output', async () => {
    const { page } = await world.newPage();
    await page.goto('/login');
    await tabTo(page, page.getByLabel('Email', { exact: true }));
    await page.keyboard.type(OPERATOR.email);
    await page.keyboard.press('Tab');
    await page.keyboard.type(OPERATOR.password);
    await page.keyboard.press('Enter');
    await page.waitForURL(`**/orgs/${org}`);

    await tabTo(
      page,
      page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Services' }),
    );
    await page.keyboard.press('Enter');
    await tabTo(page, page.getByRole('link', { name: 'Run hello on web (web-1)' }));
    await page.keyboard.press('Enter');
    const greeting = page.getByLabel('greeting');
    await tabTo(page, greeting);
    await page.keyboard.press('ArrowDown');
    expect(await greeting.inputValue()).not.toBe('');
    await tabTo(page, page.getByRole('button', { name: 'Review and run' }));
    await page.keyboard.press('Enter');
    // The confirmation takes the focus; Tab stays inside it (the page behind is inert).
    const dialog = page.getByRole('dialog', { name: 'Run hello?' });
    await tabTo(page, dialog.getByRole('button', { name: 'Run hello' }));
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/commands\/cmd_/);
    await waitUntil(async () =>
      expect(await page.locator('.toolbar .badge').last().textContent()).toBe('succeeded'),
    );
    await waitUntil(async () =>
      expect(await page.getByLabel('Command output').textContent()).toMatch(/(hello|hi) from web/),
    );
    await page.context().close();
  });

  it('makes a team, a custom role scoped by agent labels, and binds the role to the team', async () => {
    await owner.goto(`/orgs/${org}/teams`);
    await owner.getByRole('button', { name: 'New team' }).click();
    const teamDialog = owner.getByRole('dialog', { name: 'New team' });
    await teamDialog.getByLabel('Name').fill('sre');
    await teamDialog.getByLabel('Description').fill('Site reliability');
    await teamDialog.getByRole('button', { name: 'Create team' }).click();
    await owner.getByRole('button', { name: 'Add member to sre' }).click();
    const addDialog = owner.getByRole('dialog', { name: 'Add a member to sre' });
    await addDialog.getByLabel('Member').selectOption({ label: `${OPERATOR.name} (${OPERATOR.email})` });
    await addDialog.getByRole('button', { name: 'Add member' }).click();
    await waitUntil(async () =>
      expect(
        await owner.getByRole('table', { name: 'Teams' }).getByRole('row', { name: /sre/ }).textContent(),
      ).toContain(OPERATOR.email),
    );
    await world.screenshot(owner, 'teams');

    await owner.goto(`/orgs/${org}/roles`);
    await owner.getByRole('button', { name: 'New custom role' }).click();
    const roleDialog = owner.getByRole('dialog', { name: 'New custom role' });
    await roleDialog.getByRole('textbox', { name: 'Name', exact: true }).fill('web-restarter');
    for (const permission of ['agents:read', 'services:read', 'commands:read', 'commands:create'])
      await roleDialog.getByRole('checkbox', { name: new RegExp(`^${permission} `) }).check();
    await roleDialog.getByRole('button', { name: 'Create role' }).click();
    await owner
      .getByRole('table', { name: 'Roles' })
      .getByRole('row', { name: /web-restarter/ })
      .waitFor();

    await owner.getByRole('button', { name: 'New role binding' }).click();
    const bindingDialog = owner.getByRole('dialog', { name: 'New role binding' });
    await bindingDialog.getByLabel('Role').selectOption({ label: 'web-restarter (custom)' });
    await bindingDialog.getByLabel('Granted to').selectOption('team');
    await bindingDialog.getByLabel('Team').selectOption({ label: 'sre' });
    await bindingDialog.getByLabel('Only on agents matching (optional)').fill('env=prod');
    await bindingDialog.getByRole('button', { name: 'Create binding' }).click();
    const binding = owner
      .getByRole('table', { name: 'Role bindings' })
      .getByRole('row', { name: /web-restarter/ });
    await waitUntil(async () => {
      const text = await binding.textContent();
      expect(text).toContain('sre');
      expect(text).toContain('env=prod');
    });
    await world.screenshot(owner, 'roles');
  });

  it('hides from the operator what it may not do, and the server refuses those calls all the same', async () => {
    await operator.goto(`/orgs/${org}/agents`);
    await operator.getByRole('row', { name: /web-1/ }).waitFor();
    // Not offered: managing agents, and inviting people.
    expect(await operator.getByRole('button', { name: /^(Disable|Revoke) web-1$/ }).count()).toBe(0);
    expect(await operator.getByRole('link', { name: 'Invitations' }).count()).toBe(0);
    // Attack: the operator calls the API the hidden controls would have called, from the same
    // signed-in browser, with a valid CSRF token. The server refuses both.
    const agentId = await operator.getByRole('row', { name: /web-1/ }).getAttribute('data-agent');
    const refused = await operator.evaluate(
      async ({ org, agentId }) => {
        const { csrfToken } = (await (await fetch('/api/auth/session')).json()) as { csrfToken: string };
        const post = (path: string, body: unknown) =>
          fetch(path, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-csrf-token': csrfToken },
            body: JSON.stringify(body),
          }).then(async (response) => ({
            status: response.status,
            code: ((await response.json()) as { error?: { code?: string } }).error?.code,
          }));
        return [
          await post(`/api/orgs/${org}/agents/${agentId}/disable`, {}),
          await post(`/api/orgs/${org}/invitations`, { email: 'friend@example.test', role: 'viewer' }),
        ];
      },
      { org, agentId },
    );
    expect(refused).toEqual([
      { status: 403, code: 'forbidden' },
      { status: 403, code: 'forbidden' },
    ]);
    await operator.reload();
    expect(await operator.getByRole('row', { name: /web-1/ }).textContent()).not.toContain('disabled');
  });

  it('disables and enables an agent, and asks the owner to prove it is them before revoking one', async () => {
    await owner.goto(`/orgs/${org}/agents`);
    const row = owner.getByRole('row', { name: /web-1/ });
    await owner.getByRole('button', { name: 'Disable web-1' }).click();
    await owner
      .getByRole('dialog', { name: 'Disable agent web-1' })
      .getByRole('button', { name: 'Disable' })
      .click();
    await waitUntil(async () => expect(await row.textContent()).toContain('disabled'));
    await owner.getByRole('button', { name: 'Enable web-1' }).click();
    await owner
      .getByRole('dialog', { name: 'Enable agent web-1' })
      .getByRole('button', { name: 'Enable' })
      .click();
    await waitUntil(async () => expect(await row.textContent()).not.toContain('disabled'));

    await owner.getByRole('button', { name: 'New registration token' }).click();
    await owner.getByRole('button', { name: 'Create token' }).click();
    const token = await owner.getByLabel('Registration token', { exact: true }).inputValue();
    await owner.getByRole('button', { name: 'Done' }).click();
    await world.startAgent(token!, 'web-2', []);
    const second = owner.getByRole('row', { name: /web-2/ });
    await waitUntil(async () => {
      await owner.getByRole('button', { name: 'Refresh' }).first().click();
      expect(await second.textContent()).toContain('online');
    });

    // Twenty minutes later (the step-up window is 15), revoking is privileged: the server asks for
    // the password again, the console asks the owner, and the revocation goes through after it.
    await world.ageSignIns(world.ownerEmail, 20);
    await owner.getByRole('button', { name: 'Revoke web-2' }).click();
    await owner
      .getByRole('dialog', { name: 'Revoke agent web-2' })
      .getByRole('button', { name: 'Revoke for good' })
      .click();
    const stepUp = owner.getByRole('dialog', { name: 'Confirm it is you' });
    await stepUp.getByLabel('Password').fill(OWNER_PASSWORD);
    await world.screenshot(owner, 'step-up');
    await stepUp.getByRole('button', { name: 'Confirm' }).click();
    await waitUntil(async () => expect(await second.textContent()).toContain('revoked'));
    await world.screenshot(owner, 'agent-revoked');
  });

  it('lists the owner’s sessions on the profile and ends another one, which is then signed out', async () => {
    const { page: elsewhere } = await world.newPage();
    await signIn(elsewhere, world.ownerEmail, OWNER_PASSWORD);
    await elsewhere.waitForURL(`**/orgs/${org}`);

    await owner.goto('/profile');
    const sessions = owner.getByRole('table', { name: 'Your sessions' });
    await waitUntil(async () => expect(await sessions.getByRole('row').count()).toBe(3)); // a header and two
    expect(await sessions.getByText('This session').count()).toBe(1);
    await world.screenshot(owner, 'profile');
    const beforeRevoke = world.refusals.length;
    await sessions.getByRole('button', { name: /^Revoke/ }).click();
    await waitUntil(async () => expect(await sessions.getByRole('row').count()).toBe(2));

    await elsewhere.goto(`/orgs/${org}/agents`);
    await elsewhere.waitForURL('**/login');
    await elsewhere.context().close();
    forgetSignedOutRefusals(beforeRevoke);
  });

  it('switches between the organizations the owner belongs to', async () => {
    const created = await runCli(
      [
        'admin',
        'create-org',
        '--name',
        'Staging',
        '--slug',
        'staging',
        '--owner',
        world.ownerEmail,
        '--mfa-optional',
      ],
      { cwd: world.dir, env: { BULWARK_DATA_DIR: path.join(world.dir, 'data') } },
    );
    expect(created.code, created.stderr).toBe(0);
    await owner.goto(`/orgs/${org}`);
    const switcher = owner.getByLabel('Organization');
    await switcher.selectOption({ label: 'Staging' });
    await owner.waitForURL('**/orgs/staging');
    await owner.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Agents' }).click();
    // Another organization, another fleet: web-1 belongs to the first one only.
    await owner.getByText('No agents.').waitFor();
    await switcher.selectOption({ value: org });
    await owner.waitForURL(`**/orgs/${org}`);
  });

  it('names every control on every screen, and fits every screen at 1280×800 and at 390×844', async () => {
    await owner.goto(`/orgs/${org}/services`);
    const runForm = await owner.getByRole('link', { name: 'Run hello on web (web-1)' }).getAttribute('href');
    await owner.goto(`/orgs/${org}/commands`);
    const commandPage = await owner.getByRole('link', { name: 'web/hello' }).first().getAttribute('href');
    const screens = [
      '/profile',
      ...[
        '',
        '/agents',
        '/services',
        '/commands',
        '/approvals',
        '/audit',
        '/members',
        '/invitations',
        '/teams',
        '/roles',
        '/secrets',
        '/api-keys',
        '/security',
      ].map((section) => `/orgs/${org}${section}`),
      runForm!,
      commandPage!,
    ];
    const cookies = await owner.context().cookies();
    const problems: string[] = [];
    for (const viewport of [
      { width: 1280, height: 800 },
      { width: 390, height: 844 },
    ]) {
      // The owner's session in a window of each size: the owner sees every control there is.
      const { context, page } = await world.newPage(viewport);
      await context.addCookies(cookies);
      const heading = page.getByRole('heading', { level: 1 });
      let previousHeading: string | null = null;
      for (const screen of screens) {
        // Within the app, as its own links navigate: a full page load per screen would only
        // measure the start-up again.
        if (screen === screens[0]) await page.goto(screen);
        else
          await page.evaluate(
            `history.pushState(null, '', ${JSON.stringify(screen)}); dispatchEvent(new PopStateEvent('popstate'))`,
          );

        // Each screen has a heading of its own: once it shows, the screen has replaced the last one.
        await waitUntil(async () => expect(await heading.textContent()).not.toBe(previousHeading));
        previousHeading = await heading.textContent();
        await waitUntil(async () => expect(await page.getByText(/^Loading .*…$/).count()).toBe(0));
        for (const control of await unnamedControls(page)) problems.push(`${screen}: unnamed ${control}`);
        const width = (await page.evaluate('document.documentElement.scrollWidth')) as number;
        if (width > viewport.width) problems.push(`${screen} at ${viewport.width} px is ${width} px wide`);
      }
      await context.close();
    }
    expect(problems).toEqual([]);
  });

  it('works at phone width: the sections fold behind a menu and nothing overflows sideways', async () => {
    const { page } = await world.newPage({ width: 390, height: 844 });
    await signIn(page, OPERATOR.email, OPERATOR.password);
    await page.waitForURL(`**/orgs/${org}`);
    const sections = page.getByRole('navigation', { name: 'Sections' });
    expect(await sections.isVisible()).toBe(false);
    await page.getByRole('button', { name: 'Menu' }).click();
    await sections.getByRole('link', { name: 'Agents' }).click();
    await page.getByRole('row', { name: /web-1/ }).waitFor();
    await page.getByRole('table', { name: 'Registration tokens' }).waitFor();
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    await world.screenshot(page, 'agents-phone');
  });

  it('stores a secret it never shows again: no answer the browser receives carries the value', async () => {
    const value = 'pg-Secret-Value-7d1e93';
    const bodies: string[] = [];
    const collect = (response: import('playwright-core').Response) => {
      if (new URL(response.url()).pathname.startsWith('/api/'))
        void response.text().then(
          (text) => bodies.push(text),
          () => undefined,
        );
    };
    owner.on('response', collect);
    try {
      await owner.goto(`/orgs/${org}/secrets`);
      await owner.getByRole('button', { name: 'New secret' }).click();
      const create = owner.getByRole('dialog', { name: 'New secret' });
      await create.getByLabel('Name').fill('DB_PASSWORD');
      await create.getByLabel('Description').fill('The payments database');
      await create.getByLabel('Value').fill(value);
      await create.getByRole('button', { name: 'Store secret' }).click();
      const row = owner.getByRole('row', { name: /DB_PASSWORD/ });
      await waitUntil(async () => expect(await row.getByRole('cell').nth(2).textContent()).toBe('1'));

      await owner.getByRole('button', { name: 'New value DB_PASSWORD' }).click();
      const update = owner.getByRole('dialog', { name: 'New value for DB_PASSWORD' });
      await update.getByLabel('Value').fill(`${value}-2`);
      await update.getByRole('button', { name: 'Store new value' }).click();
      await waitUntil(async () => expect(await row.getByRole('cell').nth(2).textContent()).toBe('2'));
      await world.screenshot(owner, 'secrets');
      await owner.reload();
      await row.waitFor();

      await owner.getByRole('button', { name: 'Delete DB_PASSWORD' }).click();
      await owner
        .getByRole('dialog', { name: 'Delete secret DB_PASSWORD' })
        .getByRole('button', { name: 'Delete secret' })
        .click();
      await owner.getByText('No secrets yet.').waitFor();
    } finally {
      owner.off('response', collect);
    }
    expect(bodies.length).toBeGreaterThan(3);
    expect(bodies.filter((body) => body.includes(value))).toEqual([]);
  });

  it('creates an API key whose token is shown once and works from a script, then revokes it', async () => {
    await owner.goto(`/orgs/${org}/api-keys`);
    await owner.getByRole('button', { name: 'New API key' }).click();
    const dialog = owner.getByRole('dialog', { name: 'New API key' });
    await dialog.getByLabel('Name', { exact: true }).fill('deploy pipeline');
    await dialog.getByRole('checkbox', { name: /^agents:read / }).check();
    await dialog.getByRole('button', { name: 'Create key' }).click();
    const shown = owner.getByRole('dialog', { name: 'API key created' });
    const token = await shown.getByLabel('Token').inputValue();
    expect(token).toMatch(/^bwk_/);
    await shown.getByRole('button', { name: 'Done' }).click();
    const row = owner.getByRole('row', { name: /deploy pipeline/ });
    expect(await row.textContent()).toContain('agents:read');
    await world.screenshot(owner, 'api-keys');
    // The list shows a hint to tell keys apart, never the token.
    expect(await owner.getByRole('table', { name: 'API keys' }).textContent()).not.toContain(token);

    // A script uses it as a bearer token: what it was given, and nothing else.
    const asScript = (route: string) =>
      fetch(`${world.server.url}/api/orgs/${org}${route}`, { headers: { authorization: `Bearer ${token}` } });
    expect((await asScript('/agents')).status).toBe(200);
    expect((await asScript('/members')).status).toBe(403);
    await owner.reload();
    await waitUntil(async () => expect(await row.textContent()).toContain('from 127.0.0.1'));

    await owner.getByRole('button', { name: 'Revoke deploy pipeline' }).click();
    await owner
      .getByRole('dialog', { name: 'Revoke API key deploy pipeline' })
      .getByRole('button', { name: 'Revoke key' })
      .click();
    await waitUntil(async () => expect(await row.textContent()).toContain('revoked'));
    expect((await asScript('/agents')).status).toBe(401);
  });

  it('adds a passkey from the profile, signs in with it, and re-proves a privileged step with it', async () => {
    const { context, page } = await world.newPage(undefined, passkeyOrigin(world.server.url));
    await page.goto('/login');
    await addVirtualAuthenticator(context, page);
    await signIn(page, OPERATOR.email, OPERATOR.password);
    await page.waitForURL(`**/orgs/${org}`);
    await page.goto('/profile');
    const section = page.getByRole('region', { name: 'Two-factor authentication' });
    await section.getByLabel('Passkey name').fill('Work laptop');
    await section.getByRole('button', { name: 'Add a passkey' }).click();
    const codes = section.getByRole('list', { name: 'Recovery codes' }).getByRole('listitem');
    await waitUntil(async () => expect(await codes.count()).toBe(10));
    const row = section.getByRole('row', { name: /Work laptop/ });
    expect(await row.textContent()).toContain('Passkey');
    // AUTH-5: the operator is signed in elsewhere too (the other tests' windows); a new factor is the
    // moment to end those sessions, and the profile offers it.
    const beforeEnding = world.refusals.length;
    await section.getByRole('button', { name: 'End the other sessions' }).click();
    await section.getByRole('button', { name: 'End the other sessions' }).waitFor({ state: 'detached' });
    await operator.goto(`/orgs/${org}/agents`);
    await operator.waitForURL('**/login');
    forgetSignedOutRefusals(beforeEnding);

    // A new sign-in stops at the second factor; the passkey on this device finishes it.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await signIn(page, OPERATOR.email, OPERATOR.password);
    await page.getByRole('heading', { name: 'Two-factor authentication' }).waitFor();
    await page.getByRole('button', { name: 'Use a passkey' }).click();
    await page.waitForURL(`**/orgs/${org}`);

    // Twenty minutes on, removing the passkey is privileged: password and passkey re-prove it.
    await world.ageSignIns(OPERATOR.email, 20);
    await page.goto('/profile');
    await section.getByRole('button', { name: 'Remove Work laptop' }).click();
    const stepUp = page.getByRole('dialog', { name: 'Confirm it is you' });
    await stepUp.getByLabel('Password').fill(OPERATOR.password);
    await stepUp.getByRole('button', { name: 'Confirm with a passkey' }).click();
    await section.getByText('No second factor yet.', { exact: false }).waitFor();
    await context.close();
  });

  it('adds an authenticator from the profile, then asks for a code at sign-in; a recovery code works once', async () => {
    const { page } = await world.newPage();
    await signIn(page, world.ownerEmail, OWNER_PASSWORD);
    await page.waitForURL(`**/orgs/${org}`);
    await page.goto('/profile');
    const section = page.getByRole('region', { name: 'Two-factor authentication' });
    await section.getByRole('button', { name: 'Add an authenticator app' }).click();
    await section.getByRole('img', { name: 'QR code of the authenticator secret' }).waitFor();
    // What a phone would do with the QR code: compute the current code from the secret.
    const secret = (await section.getByTestId('totp-secret').textContent()) ?? '';
    await section
      .getByLabel('Code from the app')
      .fill(await generate({ secret, crypto: new NodeCryptoPlugin() }));
    await section.getByRole('button', { name: 'Confirm' }).click();
    const codes = section.getByRole('list', { name: 'Recovery codes' }).getByRole('listitem');
    await waitUntil(async () => expect(await codes.count()).toBe(10));
    const recoveryCode = (await codes.first().textContent()) ?? '';
    await section.getByRole('row', { name: /Authenticator app/ }).waitFor();
    await world.screenshot(page, 'two-factor');

    // A new sign-in stops at the code; the recovery code opens it, once.
    const { page: later } = await world.newPage();
    await signIn(later, world.ownerEmail, OWNER_PASSWORD);
    await later.getByRole('heading', { name: 'Two-factor authentication' }).waitFor();
    await later.getByLabel('Code').fill(recoveryCode);
    await later.getByRole('button', { name: 'Verify' }).click();
    await later.waitForURL(`**/orgs/${org}`);
  });

  it('requires two-factor authentication of every member once the owner (who has a factor now) turns it on, and warns when it is off', async () => {
    // The operator's window was signed out when they ended their other sessions: back in, no factor.
    // The sign-in takes them back where they were going. What that page loads is answered before the
    // policy changes (a request still on its way after would be refused, and logged as a refusal).
    const loaded = ['/agents', '/approvals', '/approvals/bulk-runs'].map((path) =>
      operator.waitForResponse((response) => new URL(response.url()).pathname === `/api/orgs/${org}${path}`),
    );
    await signIn(operator, OPERATOR.email, OPERATOR.password);
    await operator.waitForURL(`**/orgs/${org}/agents`);
    await Promise.all(loaded);
    await owner.goto(`/orgs/${org}/security`);
    // This installation started with the policy relaxed: the screen says what that means.
    await owner.getByRole('alert').getByText('Not required.').waitFor();
    await owner.getByRole('button', { name: 'Require two-factor authentication' }).click();
    await owner
      .getByRole('dialog', { name: 'Require two-factor authentication' })
      .getByRole('button', { name: 'Require it' })
      .click();
    await owner.getByText('Required.').waitFor();
    await world.screenshot(owner, 'security-policy');

    // The operator has no second factor: the organization now opens only the way to add one.
    await operator.goto(`/orgs/${org}/agents`);
    await operator.getByRole('link', { name: 'Open your profile' }).click();
    await operator.getByRole('button', { name: 'Add an authenticator app' }).waitFor();

    await owner.getByRole('button', { name: 'Stop requiring two-factor authentication' }).click();
    await owner
      .getByRole('dialog', { name: 'Stop requiring two-factor authentication' })
      .getByRole('button', { name: 'Stop requiring it' })
      .click();
    await owner.getByRole('alert').getByText('Not required.').waitFor();
    await operator.goto(`/orgs/${org}/agents`);
    await operator.getByRole('row', { name: /web-1/ }).waitFor();
  });

  it('saw no CSP violation and no console error on any page of the run', () => {
    expect(world.problems).toEqual([]);
    // The only refusals the browser logged are the ones the tests provoked: the wrong password, the
    // operator's two calls past hidden controls, the two
    // step-ups the server asked for, and the operator without a factor once the policy required one.
    expect(world.refusals.map((r) => r.replace(/\/(cmd|agt|mfa)_\w+/, '/$1_…'))).toEqual([
      '401 /api/auth/login',
      `403 /api/orgs/${org}/agents/agt_…/disable`,
      `403 /api/orgs/${org}/invitations`,
      `403 /api/orgs/${org}/agents/agt_…/revoke`,
      '403 /api/auth/mfa/factors/mfa_…',
      `403 /api/orgs/${org}/access/me`,
    ]);
  });
});
