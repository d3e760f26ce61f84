import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Page, Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type ConsoleWorld,
  hasChromium,
  requireChromiumInCi,
  signInFirstOwner,
  startConsoleWorld,
} from './support.js';

/**
 * Approvals as they happen, in two browsers at once: the requester asks for a high-risk action, and
 * the approver's badge and inbox show it without a reload; the requester is offered no way to approve
 * it; a rejection without a word is refused, in words; the approval moves the requester's command
 * page, still open, to its end. Everything arrives over each tab's one live stream of the
 * organization: nothing polls. An agent going and coming back moves its row on the agents list, last
 * seen included, with no request; a running command counts its time until it ends.
 */

requireChromiumInCi('the live approvals tests');

const OWNER_PASSWORD = 'Tr4il-Harbor-Quartz-81!';
const APPROVER = { email: 'approver@example.test', name: 'Ada Approver', password: 'Vq7-coastal-Lantern-92' };
const NODE = process.execPath;

let world: ConsoleWorld;
let requester: Page;
let approver: Page;
let org = '';
let agent: ChildProcess;
/** The file whose creation lets the `drain` action end: the test says when it finishes. */
let release = '';

const waitUntil = (check: () => Promise<void>) => vi.waitFor(check, { timeout: 20_000, interval: 200 });

describe.skipIf(!hasChromium)('live approvals in Chromium', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    world = await startConsoleWorld();
    requester = (await world.newPage()).page;
    org = await signInFirstOwner(world, requester, OWNER_PASSWORD);

    // The approver joins in a browser of their own.
    await requester.goto(`/orgs/${org}/invitations`);
    await requester.getByRole('button', { name: 'Invite someone' }).click();
    await requester.getByLabel('Email').fill(APPROVER.email);
    await requester.getByLabel('Role').selectOption('operator');
    await requester.getByRole('button', { name: 'Create invitation' }).click();
    const link = await requester.getByLabel('Invitation link').inputValue();
    await requester.getByRole('button', { name: 'Done' }).click();
    approver = (await world.newPage()).page;
    await approver.goto(link);
    await approver.getByLabel('Display name').fill(APPROVER.name);
    await approver.getByLabel('Password', { exact: true }).fill(APPROVER.password);
    await approver.getByLabel('Password again').fill(APPROVER.password);
    await approver.getByRole('button', { name: 'Create account and join' }).click();
    await approver.waitForURL(`**/orgs/${org}`);

    // A real agent, with a high-risk action.
    await requester.goto(`/orgs/${org}/agents`);
    await requester.getByRole('button', { name: 'New registration token' }).click();
    await requester.getByRole('button', { name: 'Create token' }).click();
    const token = await requester.getByLabel('Registration token', { exact: true }).inputValue();
    await requester.getByRole('button', { name: 'Done' }).click();
    release = path.join(world.dir, 'drain-released');
    agent = await world.startAgent(token, 'web-1', [
      {
        name: 'restart',
        description: 'Restarts the web service',
        risk: 'high',
        params: { type: 'object', properties: {}, additionalProperties: false },
        argv: [NODE, '-e', 'process.stdout.write("restarted\\n")'],
      },
      {
        name: 'wipe',
        description: 'Wipes the cache',
        risk: 'critical',
        params: { type: 'object', properties: {}, additionalProperties: false },
        argv: [NODE, '-e', 'console.log("wiped")'],
      },
      {
        name: 'drain',
        description: 'Drains the connections, until told they are gone',
        risk: 'low',
        params: { type: 'object', properties: {}, additionalProperties: false },
        argv: [
          NODE,
          '-e',
          'const fs = require("node:fs"); process.stdout.write("draining\\n"); const check = setInterval(() => { if (fs.existsSync(process.argv[1])) { clearInterval(check); process.stdout.write("drained\\n"); } }, 50);',
          release,
        ],
      },
    ]);
    // The agents list shows it online as it connects: the live stream says so, nobody reloads.
    await waitUntil(async () =>
      expect(await requester.getByRole('row', { name: /web-1/ }).textContent()).toContain('online'),
    );
  }, 120_000);
  afterAll(async () => {
    await world?.close();
  });

  /** The EventSources open in the requester's tab now (its pages count them as they are made). */
  const openStreams = () =>
    requester.evaluate(() =>
      [...((window as unknown as { liveSources?: Set<EventSource> }).liveSources ?? [])]
        .filter((source) => source.readyState !== EventSource.CLOSED)
        .map(
          (source) => new URL(source.url).pathname + new URL(source.url).search.replace(/ticket=[^&]*&?/, ''),
        ),
    );
  const commandStreams: string[] = [];
  /** Whether the requester's tab's stream is open and has said `ready`. */
  const streamReady = () =>
    requester.evaluate(() =>
      [
        ...((window as unknown as { liveSources?: Set<EventSource & { readySeen?: true }> }).liveSources ??
          []),
      ].some((source) => source.readyState === EventSource.OPEN && source.readySeen),
    );

  it('shows the request in the approver’s badge and inbox as it is made, and not to the requester', async () => {
    // Every EventSource the requester's tab makes is counted, to show it keeps one.
    await requester.addInitScript(() => {
      const Native = window.EventSource;
      const sources = new Set<EventSource>();
      (window as unknown as { liveSources: Set<EventSource> }).liveSources = sources;
      window.EventSource = class extends Native {
        constructor(url: string | URL, init?: EventSourceInit) {
          super(url, init);
          sources.add(this);
          // Whether the server said `ready`: the screens' reloads on (re)opening are then under way.
          this.addEventListener('ready', () => Object.assign(this, { readySeen: true }));
        }
      };
    });
    requester.on('request', (request) => {
      if (/\/commands\/cmd_\w+\/events/.test(new URL(request.url()).pathname))
        commandStreams.push(request.url());
    });
    // The approver's tab opens its one live stream once, and keeps it.
    const streams: string[] = [];
    approver.on('request', (request) => {
      const url = new URL(request.url());
      if (url.pathname === `/api/orgs/${org}/events`) streams.push(url.pathname);
    });
    await approver.goto(`/orgs/${org}/approvals`);
    await approver.getByText('Nothing is waiting for you.').waitFor();
    const badge = approver.getByTestId('approvals-count');
    expect(await badge.count()).toBe(0);

    await requester.goto(`/orgs/${org}/services`);
    await requester.getByRole('link', { name: 'Run restart on web (web-1)' }).click();
    await requester.getByRole('button', { name: 'Review and run' }).click();
    // Approvals are required by policy: confirming asks for them, it runs nothing yet.
    const dialog = requester.getByRole('dialog', { name: 'Request approval to run restart?' });
    expect(await dialog.getByRole('button', { name: /^Run/ }).count()).toBe(0);
    await dialog.getByRole('button', { name: 'Request approval' }).click();
    await requester.waitForURL(/\/commands\/cmd_/);
    await requester.getByText('You asked for this command').waitFor();
    expect(await requester.getByRole('button', { name: 'Approve' }).count()).toBe(0);
    expect(await requester.getByRole('button', { name: 'Reject' }).count()).toBe(0);
    // One stream in the tab, focused on this command.
    await waitUntil(async () =>
      expect(await openStreams()).toEqual([expect.stringMatching(/\/events\?command=cmd_/)]),
    );
    // Not started: the page says so rather than "never".
    expect(await requester.locator('dl.summary').textContent()).not.toContain('never');

    // No reload on the approver's side.
    const card = approver.getByRole('article', { name: 'web/restart' });
    await card.waitFor();
    await waitUntil(async () => expect((await badge.textContent())?.trim()).toMatch(/^1\b/));
    // Names, not ids; the id is on hover.
    const requestedBy = card.locator('.person').first();
    expect(await requestedBy.textContent()).toContain(world.ownerEmail);
    expect(await requestedBy.getAttribute('title')).toMatch(/^usr_/);
    expect(await card.textContent()).toContain('web-1');
    expect(streams.length).toBe(1);
  });

  it('refuses a rejection without a comment, in words', async () => {
    const card = approver.getByRole('article', { name: 'web/restart' });
    await card.getByRole('button', { name: 'Reject' }).click();
    const alert = card.getByRole('alert');
    await alert.waitFor();
    expect(await alert.textContent()).toContain('Comment is needed to reject: say why');
    await world.screenshot(approver, 'live-approvals-reject-refused');
  });

  it('approves, and the requester’s open command page moves to its end live', async () => {
    const card = approver.getByRole('article', { name: 'web/restart' });
    await card.getByLabel('Comment').fill('change window open');
    await card.getByRole('button', { name: 'Approve' }).click();
    // Decided: the card leaves the approver's inbox, and the badge goes.
    await approver.getByText('Nothing is waiting for you.').waitFor();
    await waitUntil(async () => expect(await approver.getByTestId('approvals-count').count()).toBe(0));

    await waitUntil(async () =>
      expect(await requester.locator('.toolbar .badge').last().textContent()).toBe('succeeded'),
    );
    await waitUntil(async () =>
      expect(await requester.getByLabel('Command output').textContent()).toContain('restarted'),
    );
    // The output came over the tab's one stream: no second EventSource, no per-command stream.
    expect(await openStreams()).toEqual([expect.stringMatching(/\/events\?command=cmd_/)]);
    expect(commandStreams).toEqual([]);
    // Each line of output carries the time it arrived; started and finished say when, the exact time on hover.
    const stamp = requester.getByLabel('Command output').locator('time.stamp').first();
    expect(await stamp.textContent()).toMatch(/\d{1,2}:\d{2}:\d{2}/);
    const summary = await requester.locator('dl.summary').textContent();
    expect(summary).toMatch(/Started.*(ago|now)/s);
    expect(summary).toContain('took');
    expect(await requester.locator('dl.summary time').first().getAttribute('title')).toBeTruthy();
    // The approver, by name.
    const approvals = requester.getByRole('region', { name: /Approvals/ });
    expect(await approvals.textContent()).toContain(APPROVER.name);
    await world.screenshot(requester, 'live-approvals-succeeded');
  });

  it('asks for a reason before a critical action can be requested', async () => {
    await requester.goto(`/orgs/${org}/services`);
    await requester.getByRole('link', { name: 'Run wipe on web (web-1)' }).click();
    await requester.getByRole('button', { name: 'Review and run' }).click();
    const reason = requester.getByLabel('Reason (required)');
    expect(await reason.getAttribute('aria-invalid')).toBe('true');
    await requester.getByText('Say why this critical action should run.').waitFor();
    expect(await requester.getByRole('dialog').count()).toBe(0);
    await reason.fill('cache poisoned by the bad deploy');
    await requester.getByRole('button', { name: 'Review and run' }).click();
    const dialog = requester.getByRole('dialog', { name: 'Request approval to run wipe?' });
    expect(await dialog.textContent()).toContain('cache poisoned by the bad deploy');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
  });

  it('shows an agent going and coming back, and its last seen, on the open agents list with no request', async () => {
    // Within the page, not a reload: the stream said `ready` before the list was there, so the list
    // has no reload on (re)opening to make.
    await waitUntil(async () => expect(await streamReady()).toBe(true));
    await requester
      .getByRole('navigation', { name: 'Sections' })
      .getByRole('link', { name: 'Agents' })
      .click();
    const row = requester.getByRole('row', { name: /web-1/ });
    await waitUntil(async () => expect(await row.textContent()).toContain('online'));
    const lastSeen = row.locator('td').nth(3).locator('time');
    const seenBefore = await lastSeen.getAttribute('datetime');
    expect(seenBefore).toBeTruthy();
    // From here, the tab asks the API nothing of agents and opens no stream: whatever moves arrives
    // on the stream it has.
    const asked: string[] = [];
    const count = (request: Request) => {
      const url = new URL(request.url());
      if (
        url.pathname.startsWith(`/api/orgs/${org}/agents`) ||
        url.pathname.startsWith(`/api/orgs/${org}/events`)
      )
        asked.push(`${request.method()} ${url.pathname}`);
    };
    requester.on('request', count);
    try {
      expect(await openStreams()).toEqual([`/api/orgs/${org}/events?`]);

      agent.kill('SIGTERM');
      await once(agent, 'exit');
      await waitUntil(async () => expect(await row.textContent()).toContain('offline'));

      agent = world.restartAgent('web-1');
      await waitUntil(async () => expect(await row.textContent()).toContain('online'));
      // Seen again as it reconnected: later than before, and so shown.
      await waitUntil(async () =>
        expect(Date.parse((await lastSeen.getAttribute('datetime')) ?? '')).toBeGreaterThan(
          Date.parse(seenBefore ?? ''),
        ),
      );
      expect(asked).toEqual([]);
      expect(await openStreams()).toEqual([`/api/orgs/${org}/events?`]);
    } finally {
      requester.off('request', count);
    }
  });

  it('counts a running command’s time while it runs, and says how long it took once it ends', async () => {
    await requester.goto(`/orgs/${org}/services`);
    await requester.getByRole('link', { name: 'Run drain on web (web-1)' }).click();
    await requester.getByRole('button', { name: 'Review and run' }).click();
    await requester
      .getByRole('dialog', { name: 'Run drain?' })
      .getByRole('button', { name: 'Run drain' })
      .click();
    await requester.waitForURL(/\/commands\/cmd_/);
    const summary = requester.locator('dl.summary');
    const status = requester.locator('.toolbar .badge').last();
    await waitUntil(async () =>
      expect(await requester.getByLabel('Command output').textContent()).toContain('draining'),
    );
    expect(await status.textContent()).toBe('running');
    // Running: the time so far, ticking, never "Finished: never".
    await summary.getByText('Running for').waitFor();
    const elapsed = summary.locator('.elapsed');
    const first = await elapsed.textContent();
    expect(first).toMatch(/^\d+ s$/);
    await waitUntil(async () => expect(await elapsed.textContent()).not.toBe(first));
    expect(await summary.textContent()).not.toMatch(/Finished|never/);

    // The test lets it end; the page moves to the end by itself.
    await writeFile(release, '');
    await waitUntil(async () => expect(await status.textContent()).toBe('succeeded'));
    await waitUntil(async () =>
      expect(await requester.getByLabel('Command output').textContent()).toContain('drained'),
    );
    const ended = await summary.textContent();
    expect(ended).toMatch(/Finished.*took \d+ s/s);
    expect(ended).not.toContain('Running for');
    expect(await elapsed.count()).toBe(0);
  });

  it('saw no console error and only the refusal the test provoked', () => {
    expect(world.problems).toEqual([]);
    expect(world.refusals.map((r) => r.replace(/\/cmd_\w+/, '/cmd_…'))).toEqual([
      `422 /api/orgs/${org}/commands/cmd_…/reject`,
    ]);
  });
});
