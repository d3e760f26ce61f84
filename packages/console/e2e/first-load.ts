import type { Browser } from 'playwright-core';

/**
 * What a browser with an empty cache downloads to show one console page, as Chromium's network
 * layer counts it (DevTools protocol): bytes on the wire per response, headers included, and the
 * decoded size of each body. Shared by the e2e budget test and `bench/console`.
 */

export interface LoadedResource {
  path: string;
  type: string;
  /** Bytes on the wire, headers included. */
  transferred: number;
  /** Body bytes after decoding. */
  decoded: number;
  encoding: string;
}

export interface FirstLoad {
  resources: LoadedResource[];
  /** JavaScript only: the budget of issue 6 is about these. */
  script: { transferred: number; decoded: number; files: number };
  /** From navigation start until the element `readySelector` names is visible. */
  readyMs: number;
}

interface Pending {
  path: string;
  type: string;
  decoded: number;
  encoding: string;
}

export async function measureFirstLoad(
  browser: Browser,
  url: string,
  readySelector: string,
): Promise<FirstLoad> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const page = await context.newPage();
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
      });
    });
    cdp.on('Network.dataReceived', ({ requestId, dataLength }) => {
      const entry = pending.get(requestId);
      if (entry) entry.decoded += dataLength;
    });
    cdp.on('Network.loadingFinished', ({ requestId, encodedDataLength }) => {
      const entry = pending.get(requestId);
      if (entry) resources.push({ ...entry, transferred: encodedDataLength });
      pending.delete(requestId);
    });

    const started = performance.now();
    await page.goto(url);
    await page.locator(readySelector).waitFor({ state: 'visible' });
    const readyMs = performance.now() - started;
    // Whatever the page fetched on its own after showing the form (a lazy chunk) counts too.
    await page.waitForLoadState('networkidle');
    const scripts = resources.filter((resource) => resource.type === 'Script');
    return {
      resources,
      script: {
        transferred: scripts.reduce((sum, resource) => sum + resource.transferred, 0),
        decoded: scripts.reduce((sum, resource) => sum + resource.decoded, 0),
        files: scripts.length,
      },
      readyMs,
    };
  } finally {
    await context.close();
  }
}
