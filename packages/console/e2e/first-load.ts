import type { Browser, BrowserContext, Page } from 'playwright-core';

/**
 * What a browser with an empty cache downloads to show one console page, as Chromium's network
 * layer counts it (DevTools protocol): bytes on the wire per response, headers included, and the
 * decoded size of each body. Shared by the e2e budget tests and `bench/console`. `measureFirstLoad`
 * counts one page's scripts; `measureSignInToDashboard` counts scripts and stylesheets from the
 * sign-in page to the drawn dashboard (login → dashboard), the path every session starts with.
 */

export interface LoadedResource {
  path: string;
  type: string;
  /** Bytes on the wire, headers included. */
  transferred: number;
  /** Bytes of the body on the wire (compressed), without the response headers. */
  body: number;
  /** Body bytes after decoding. */
  decoded: number;
  encoding: string;
}

export interface FirstLoad {
  resources: LoadedResource[];
  /** JavaScript only: the budget of issue 6 is about these. */
  script: { transferred: number; body: number; decoded: number; files: number };
  /** From navigation start until the element `readySelector` names is visible. */
  readyMs: number;
}

interface Pending {
  path: string;
  type: string;
  decoded: number;
  encoding: string;
  /** What had arrived when the response began: its headers. */
  headerBytes: number;
}

/** Records every response the page receives, as Chromium's network layer counts it. */
async function recordResources(context: BrowserContext, page: Page): Promise<LoadedResource[]> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  const pending = new Map<string, Pending>();
  const resources: LoadedResource[] = [];
  cdp.on('Network.responseReceived', ({ requestId, type, response }) => {
    const headers = Object.fromEntries(
      Object.entries(response.headers).map(([name, value]) => [name.toLowerCase(), String(value)]),
    );
    pending.set(requestId, {
      path: new URL(response.url).pathname,
      type,
      decoded: 0,
      encoding: headers['content-encoding'] ?? 'identity',
      headerBytes: response.encodedDataLength,
    });
  });
  cdp.on('Network.dataReceived', ({ requestId, dataLength }) => {
    const entry = pending.get(requestId);
    if (entry) entry.decoded += dataLength;
  });
  cdp.on('Network.loadingFinished', ({ requestId, encodedDataLength }) => {
    const entry = pending.get(requestId);
    if (entry) {
      const { headerBytes, ...resource } = entry;
      resources.push({
        ...resource,
        transferred: encodedDataLength,
        body: Math.max(0, encodedDataLength - headerBytes),
      });
    }
    pending.delete(requestId);
  });
  return resources;
}

const totalOf = (resources: LoadedResource[]) => ({
  transferred: resources.reduce((sum, resource) => sum + resource.transferred, 0),
  body: resources.reduce((sum, resource) => sum + resource.body, 0),
  decoded: resources.reduce((sum, resource) => sum + resource.decoded, 0),
  files: resources.length,
});

export async function measureFirstLoad(
  browser: Browser,
  url: string,
  readySelector: string,
): Promise<FirstLoad> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const page = await context.newPage();
    const resources = await recordResources(context, page);
    const started = performance.now();
    await page.goto(url);
    await page.locator(readySelector).waitFor({ state: 'visible' });
    const readyMs = performance.now() - started;
    // Whatever the page fetched on its own after showing the form (a lazy chunk) counts too.
    await page.waitForLoadState('networkidle');
    return {
      resources,
      script: totalOf(resources.filter((resource) => resource.type === 'Script')),
      readyMs,
    };
  } finally {
    await context.close();
  }
}

export interface SignInLoad extends FirstLoad {
  /** JavaScript and CSS together: what the dashboard's budget (issue 20) is about. */
  scriptAndStyle: { transferred: number; body: number; decoded: number; files: number };
}

/**
 * What a person with an empty cache downloads from opening the sign-in page to seeing the dashboard:
 * the sign-in screen, the sign-in itself, and the dashboard's lazy chunks (uPlot and its CSS among
 * them), until the network is idle. `readySelector` names what shows the dashboard has drawn.
 */
export async function measureSignInToDashboard(
  browser: Browser,
  origin: string,
  credentials: { email: string; password: string },
  readySelector: string,
  /** Ask for this encoding only (`gzip`: the budget's unit), instead of the browser's best (brotli). */
  encoding?: 'gzip',
): Promise<SignInLoad> {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    baseURL: origin,
    ...(encoding ? { extraHTTPHeaders: { 'accept-encoding': encoding } } : {}),
  });
  try {
    const page = await context.newPage();
    const resources = await recordResources(context, page);
    const started = performance.now();
    await page.goto('/login');
    await page.getByLabel('Email', { exact: true }).fill(credentials.email);
    await page.getByLabel('Password', { exact: true }).fill(credentials.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator(readySelector).waitFor({ state: 'visible' });
    const readyMs = performance.now() - started;
    await page.waitForLoadState('networkidle');
    const scripts = resources.filter((resource) => resource.type === 'Script');
    const styles = resources.filter((resource) => resource.type === 'Stylesheet');
    return {
      resources,
      script: totalOf(scripts),
      scriptAndStyle: totalOf([...scripts, ...styles]),
      readyMs,
    };
  } finally {
    await context.close();
  }
}
