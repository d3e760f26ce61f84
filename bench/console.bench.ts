/**
 * console: what the first load of the console's sign-in page costs a browser with an empty cache.
 * Debian's Chromium (never a downloaded one) opens `/login` on a real Bulwark server (the built
 * console, served compressed from memory) and the DevTools protocol counts every response: bytes on
 * the wire and decoded, per file. Baseline in the same run, with the same browser: a bare node:http
 * server answering a static HTML page with a sign-in form and no script, so the time to a visible
 * form is shown beside what the browser itself needs for a page.
 *
 * Goal (issue 6): the first load of the sign-in page transfers under 250 KB of JavaScript
 * (compressed). The e2e suite holds the same budget as a test.
 */
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type FirstLoad, measureFirstLoad } from '../packages/console/e2e/first-load.js';
import { CHROMIUM, launchChromium } from '../packages/console/e2e/support.js';
import { fmt, machine, median, startBulwark } from './http-support.js';

const LOADS = Number(process.env.BENCH_LOADS ?? 7);
const BUDGET_BYTES = 250 * 1024;
const SIGN_IN_BUTTON = 'button:has-text("Sign in")';

if (!existsSync(CHROMIUM)) {
  process.stderr.write(`bench/console needs ${CHROMIUM} (Debian: apt-get install -y chromium)\n`);
  process.exit(1);
}

const BARE_PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body><form><label>Email <input type="email"></label><label>Password <input type="password"></label>
<button type="submit">Sign in</button></form></body></html>`;
const bare = createServer((_request, response) => {
  response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(BARE_PAGE);
});
await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
const bareUrl = `http://127.0.0.1:${(bare.address() as AddressInfo).port}/login`;

const bulwark = await startBulwark({});
const browser = await launchChromium();
const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`;

try {
  // One load of each first, unmeasured: the server compresses each file on its first request.
  await measureFirstLoad(browser, `${bulwark.url}/login`, SIGN_IN_BUTTON);
  await measureFirstLoad(browser, bareUrl, SIGN_IN_BUTTON);
  const consoleLoads: FirstLoad[] = [];
  const bareLoads: FirstLoad[] = [];
  for (let round = 0; round < LOADS; round++) {
    consoleLoads.push(await measureFirstLoad(browser, `${bulwark.url}/login`, SIGN_IN_BUTTON));
    bareLoads.push(await measureFirstLoad(browser, bareUrl, SIGN_IN_BUTTON));
  }
  const first = consoleLoads[0]!;
  const sameEveryTime = consoleLoads.every((load) => load.script.transferred === first.script.transferred);

  process.stdout.write(`machine: ${machine()}, Chromium ${browser.version()}, ${LOADS} cold loads each\n\n`);
  process.stdout.write('sign-in page, first load, per file:\n');
  for (const resource of first.resources)
    process.stdout.write(
      `  ${resource.type.padEnd(11)} ${resource.path.padEnd(36)} ${kb(resource.transferred).padStart(9)} on the wire (${resource.encoding}), ${kb(resource.decoded).padStart(9)} decoded\n`,
    );
  process.stdout.write(
    `\nJavaScript on the wire: ${kb(first.script.transferred)} in ${first.script.files} file(s) (budget ${kb(BUDGET_BYTES)}: ${
      first.script.transferred < BUDGET_BYTES ? 'met' : 'NOT met'
    }); decoded ${kb(first.script.decoded)}${sameEveryTime ? '' : ' (varied between loads!)'}\n`,
  );
  process.stdout.write(
    `all files on the wire:  ${kb(first.resources.reduce((sum, r) => sum + r.transferred, 0))}\n`,
  );
  process.stdout.write(
    `time to a visible sign-in button, median: console ${fmt(median(consoleLoads.map((l) => l.readyMs)))} ms, bare static page ${fmt(
      median(bareLoads.map((l) => l.readyMs)),
    )} ms (baseline)\n`,
  );
  if (first.script.transferred >= BUDGET_BYTES) process.exitCode = 1;
} finally {
  await browser.close();
  await bulwark.close();
  bare.close();
}
