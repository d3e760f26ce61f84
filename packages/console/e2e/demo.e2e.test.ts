import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { bannerField, type DemoRun, runDemo } from '../../agent/src/test-support/demo.js';
import { hasChromium, launchChromium, requireChromiumInCi, signIn, watchPage } from './support.js';

/**
 * `npm run demo` as a newcomer meets it (issue 5, line 8): they open the printed URL in a browser,
 * sign in with the printed owner account, and drive the example service's actions through the
 * console; a high-risk one waits until one of the printed approvers approves it in another browser.
 */

requireChromiumInCi('the demo test');

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 30_000, interval: 200 });

let scratch = '';
let demo: DemoRun;
let banner = '';
let browser: Browser;
const problems: string[] = [];
const refusals: string[] = [];

async function openConsole(): Promise<Page> {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    baseURL: bannerField(banner, 'console'),
  });
  const page = await context.newPage();
  watchPage(page, problems, refusals);
  return page;
}

async function signInAt(page: Page, email: string, password: string): Promise<void> {
  await signIn(page, email, password);
  await page.waitForURL('**/orgs/default');
}

const commandStatus = (page: Page) => page.locator('.toolbar .badge').last();

describe.skipIf(!hasChromium)('npm run demo, in the console', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), 'bulwark-demo-'));
    demo = runDemo(scratch, path.join(scratch, 'demo-data'));
    banner = await demo.ready();
    browser = await launchChromium();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    if (demo && demo.child.exitCode === null && demo.child.signalCode === null) {
      demo.child.kill('SIGINT');
      await demo.exited;
    }
    await rm(scratch, { recursive: true, force: true });
  });

  it('shows the example service and runs its actions, a high-risk one once an approver approves it', async () => {
    const owner = await openConsole();
    // The printed URL, as the newcomer opens it, asks them to sign in.
    await owner.goto('/');
    await owner.waitForURL('**/login');
    await signInAt(owner, bannerField(banner, 'email'), bannerField(banner, 'password'));

    await owner.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Services' }).click();
    for (const action of ['status', 'restart', 'rotate-logs', 'drop-cache'])
      await owner.getByRole('link', { name: new RegExp(`^Run ${action} on example `) }).waitFor();

    // The low-risk action: its output arrives on the command page.
    await owner.getByRole('link', { name: /^Run status on example / }).click();
    await owner.getByRole('button', { name: 'Review and run' }).click();
    await owner
      .getByRole('dialog', { name: 'Run status?' })
      .getByRole('button', { name: 'Run status' })
      .click();
    await owner.waitForURL(/\/commands\/cmd_/);
    await waitUntil(async () => expect(await commandStatus(owner).textContent()).toBe('succeeded'));
    // The output arrives over the page's event stream, which may come after the status.
    await waitUntil(async () =>
      expect(await owner.getByLabel('Command output').textContent()).toMatch(/uptime: \d+ s/),
    );

    // The high-risk action waits for someone else.
    await owner.goto('/orgs/default/services');
    await owner.getByRole('link', { name: /^Run rotate-logs on example / }).click();
    await owner.getByRole('button', { name: 'Review and run' }).click();
    // It asks for approval: nothing runs yet, and the button says so.
    const confirm = owner.getByRole('dialog', { name: 'Request approval to run rotate-logs?' });
    expect(await confirm.textContent()).toContain('1 approval by someone other than you');
    await confirm.getByRole('button', { name: 'Request approval' }).click();
    await owner.waitForURL(/\/commands\/cmd_/);
    await waitUntil(async () => expect(await commandStatus(owner).textContent()).toBe('awaiting approval'));

    const [, approverEmail, approverPassword] = /^\s+approver:\s+(\S+)\s+(\S+)/m.exec(banner) ?? [];
    const approver = await openConsole();
    await signInAt(approver, approverEmail!, approverPassword!);
    await approver
      .getByRole('navigation', { name: 'Sections' })
      .getByRole('link', { name: 'Approvals' })
      .click();
    const card = approver.getByRole('article', { name: 'example/rotate-logs' });
    await card.getByLabel('Comment').fill('fine by me');
    await card.getByRole('button', { name: 'Approve' }).click();

    await owner.reload();
    await waitUntil(async () => expect(await commandStatus(owner).textContent()).toBe('succeeded'));
    await waitUntil(async () =>
      expect(await owner.getByLabel('Command output').textContent()).toContain('rotated; keeping 3'),
    );

    // A newcomer's first session logs no error and no refused request.
    expect(problems).toEqual([]);
    expect(refusals).toEqual([]);
  });
});
