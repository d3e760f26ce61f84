import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { loadConfig } from '../../server/src/config.js';
import { openSqlite } from '../../server/src/db/database.js';
import { createCredentialSeals } from '../../server/src/identity/credential-seals.js';
import { createDataKeyring } from '../../server/src/secrets/data-keyring.js';
import { createDataKeysStore } from '../../server/src/secrets/data-keys.store.js';
import { createLocalKeyProvider } from '../../server/src/secrets/key-provider.js';
import { reloadMasterKeys } from '../../server/src/secrets/master-key.js';
import {
  addVirtualAuthenticator,
  CHROMIUM,
  hasChromium,
  launchChromium,
  passkeyOrigin,
  requireChromiumInCi,
} from '../../server/src/test-support/browser.js';
import {
  runScript,
  type ServerProcess,
  startServerProcess,
} from '../../server/src/test-support/processes.js';

export { addVirtualAuthenticator, CHROMIUM, hasChromium, launchChromium, passkeyOrigin, requireChromiumInCi };

/**
 * The console end to end: the real server process (serving the built console), real agents (the
 * `bulwark-agent` CLI), and Debian's Chromium driven by playwright-core. Never a downloaded browser.
 */

const AGENT_CLI = fileURLToPath(new URL('../../agent/dist/cli.js', import.meta.url));
const OUTPUT = path.join(
  process.env.BULWARK_TEST_OUTPUT ?? path.join(tmpdir(), 'bulwark-test-output'),
  'console',
);

export interface ConsoleWorld {
  server: ServerProcess;
  ownerEmail: string;
  /** The one-time password the server printed at first start. */
  firstPassword: string;
  dir: string;
  browser: Browser;
  /** Console errors, script errors and CSP violations seen on any page of any context. */
  problems: string[];
  /**
   * 4xx answers the browser logged as network errors, by path. Expected ones are the API saying no
   * (the anonymous session check, a wrong password); the test says which it expects.
   */
  refusals: string[];
  /** A new browser window; `origin` names the server otherwise than by its address (passkeys need localhost). */
  newPage(
    viewport?: { width: number; height: number },
    origin?: string,
  ): Promise<{ context: BrowserContext; page: Page }>;
  /** `health`: what its service `web` reports (up unless said). */
  startAgent(
    token: string,
    name: string,
    actions: AgentAction[],
    health?: { status: 'up' | 'degraded' | 'down' | 'unknown'; message?: string },
  ): Promise<ChildProcess>;
  /** Starts again the process of an agent `startAgent` registered (once stopped): it connects anew. */
  restartAgent(name: string): ChildProcess;
  /**
   * Makes the user's live sessions look as if they signed in `minutes` earlier, by moving the
   * sign-in time in the server's database: what the passing of time would do, without waiting for
   * it. The sign-in time is part of a session's seal, so the rows are sealed again with the server's
   * own code and master key, as the server would have sealed them. The server's step-up check runs
   * unchanged on what it reads.
   */
  ageSignIns(email: string, minutes: number): Promise<void>;
  screenshot(page: Page, name: string): Promise<void>;
  close(): Promise<void>;
}

export interface AgentAction {
  name: string;
  description: string;
  risk: 'low' | 'medium' | 'high' | 'critical';
  params: Record<string, unknown>;
  /** The program and arguments, run without a shell; `{{param}}` placeholders are whole arguments. */
  argv: string[];
}

/** `env`: more server settings (BULWARK_*) for this world. */
export async function startConsoleWorld(env: Record<string, string> = {}): Promise<ConsoleWorld> {
  const dir = await mkdtemp(path.join(tmpdir(), 'bulwark-console-'));
  const ownerEmail = 'owner@example.test';
  const server = await startServerProcess({
    cwd: dir,
    env: {
      BULWARK_DATA_DIR: path.join(dir, 'data'),
      BULWARK_BOOTSTRAP_EMAIL: ownerEmail,
      BULWARK_BOOTSTRAP_MFA_REQUIRED: 'false',
      // Every browser context and agent comes from 127.0.0.1: one client as far as the limits see.
      BULWARK_RATE_LIMIT_READ_PER_MINUTE: '100000',
      BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '100000',
      BULWARK_RATE_LIMIT_AUTH_PER_MINUTE: '10000',
      ...env,
    },
  });
  const firstPassword = /password:\s+(\S+)/.exec(server.output())?.[1];
  if (!firstPassword) throw new Error(`the server printed no one-time password:\n${server.output()}`);
  const browser = await launchChromium();
  const problems: string[] = [];
  const refusals: string[] = [];
  const agents: ChildProcess[] = [];
  await mkdir(OUTPUT, { recursive: true });
  const runAgent = (name: string) => {
    const home = path.join(dir, `agent-${name}`);
    const child = spawn(process.execPath, [AGENT_CLI, 'run', '--config', path.join(home, 'agent.yaml')], {
      cwd: home,
      env: { PATH: process.env.PATH ?? '', HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.resume();
    child.stderr?.resume();
    agents.push(child);
    return child;
  };

  return {
    server,
    ownerEmail,
    firstPassword,
    dir,
    browser,
    problems,
    refusals,
    async newPage(viewport = { width: 1280, height: 800 }, origin = server.url) {
      const context = await browser.newContext({ viewport, baseURL: origin });
      const page = await context.newPage();
      watchPage(page, problems, refusals);
      return { context, page };
    },
    async startAgent(token, name, actions, health = { status: 'up' }) {
      const home = path.join(dir, `agent-${name}`);
      await mkdir(home, { recursive: true });
      const state = path.join(home, 'state.json');
      const registered = await runScript(
        AGENT_CLI,
        ['register', '--server', server.url, '--name', name, '--state', state],
        { cwd: home, env: { BULWARK_REGISTRATION_TOKEN: token } },
      );
      if (registered.code !== 0) throw new Error(`agent registration failed: ${registered.stderr}`);
      const config = {
        stateFile: state,
        services: [
          {
            name: 'web',
            kind: 'http',
            version: '1.4.2',
            health,
            config: [{ key: 'listen', value: ':8080' }],
            actions: actions.map(({ argv, ...declared }) => ({
              ...declared,
              timeoutSeconds: 30,
              exec: { argv },
            })),
          },
        ],
      };
      await writeFile(path.join(home, 'agent.yaml'), JSON.stringify(config));
      return runAgent(name);
    },
    restartAgent: runAgent,
    async ageSignIns(email, minutes) {
      const dataDir = path.join(dir, 'data');
      const config = loadConfig({ env: { BULWARK_DATA_DIR: dataDir }, cwd: dir });
      const keys = reloadMasterKeys({ fromEnv: undefined, file: config.masterKeyFile });
      const database = openSqlite({ file: path.join(dataDir, 'bulwark.db'), busyTimeoutMs: 5000 });
      try {
        const seals = createCredentialSeals({
          dataKeys: createDataKeyring({
            store: createDataKeysStore(database.db),
            provider: createLocalKeyProvider(keys, () => keys),
            clock: Date.now,
          }),
        });
        const live = await database.db
          .selectFrom('sessions')
          .innerJoin('users', 'users.id', 'sessions.user_id')
          .selectAll('sessions')
          .where('users.email', '=', email)
          .where('sessions.revoked_at', 'is', null)
          .execute();
        if (live.length === 0) throw new Error(`${email} has no live session to age`);
        for (const session of live) {
          const aged = { ...session, authenticated_at: session.authenticated_at - minutes * 60_000 };
          await database.db
            .updateTable('sessions')
            .set({ authenticated_at: aged.authenticated_at, seal: await seals.seal('session', aged) })
            .where('id', '=', session.id)
            .execute();
        }
      } finally {
        await database.close();
      }
    },
    async screenshot(page, name) {
      await page.screenshot({ path: path.join(OUTPUT, `${name}.png`), fullPage: true });
    },
    async close() {
      for (const agent of agents) {
        if (agent.exitCode === null && agent.signalCode === null) {
          agent.kill('SIGTERM');
          await once(agent, 'exit');
        }
      }
      await browser.close();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Records what the page logs as errors: a CSP violation is reported on the console as an error, so
 * is any script error (into `problems`); a 4xx answer is logged as a failed resource load (into
 * `refusals`, as `status path`).
 */
export function watchPage(page: Page, problems: string[], refusals: string[]): void {
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const refused = /^Failed to load resource: the server responded with a status of (4\d\d)/.exec(
      message.text(),
    );
    if (refused) refusals.push(`${refused[1]} ${new URL(message.location().url).pathname}`);
    else problems.push(`${page.url()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`${page.url()}: ${error.message}`));
}

const CONTROL_ROLES = new Set([
  'button',
  'link',
  'textbox',
  'searchbox',
  'combobox',
  'listbox',
  'checkbox',
  'radio',
  'switch',
  'slider',
  'spinbutton',
  'menuitem',
  'tab',
]);

/**
 * The controls on the page that a screen reader would announce without a name, as Chromium's own
 * accessibility tree computes names (labels, aria-label, aria-labelledby, content): `role <html>`.
 */
export async function unnamedControls(page: Page): Promise<string[]> {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { nodes } = (await cdp.send('Accessibility.getFullAXTree')) as {
      nodes: Array<{
        ignored: boolean;
        role?: { value?: string };
        name?: { value?: string };
        backendDOMNodeId?: number;
      }>;
    };
    const unnamed: string[] = [];
    for (const node of nodes) {
      const role = String(node.role?.value ?? '');
      if (node.ignored || !CONTROL_ROLES.has(role) || String(node.name?.value ?? '').trim() !== '') continue;
      const { outerHTML } = (await cdp.send('DOM.getOuterHTML', {
        backendNodeId: node.backendDOMNodeId,
      })) as {
        outerHTML: string;
      };
      unnamed.push(`${role} ${outerHTML.slice(0, 160)}`);
    }
    return unnamed;
  } finally {
    await cdp.detach();
  }
}

/** Signs in through the login screen. */
export async function signIn(page: Page, email: string, password: string): Promise<void> {
  await page.goto('/login');
  // Exact: the single sign-on form below asks for a "work email" too.
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/**
 * The first owner's first sign-in, with the password the server printed, through the forced
 * password change to the organization's dashboard: the start of most browser tests. Returns the
 * organization's slug.
 */
export async function signInFirstOwner(
  world: ConsoleWorld,
  page: Page,
  newPassword: string,
): Promise<string> {
  await signIn(page, world.ownerEmail, world.firstPassword);
  await page.waitForURL('**/change-password');
  await page.getByLabel('Current password').fill(world.firstPassword);
  await page.getByLabel('New password', { exact: true }).fill(newPassword);
  await page.getByLabel('New password again').fill(newPassword);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.waitForURL(/\/orgs\/[^/]+$/);
  return new URL(page.url()).pathname.split('/')[2]!;
}
