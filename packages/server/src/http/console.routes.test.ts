import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OrgWorld, startOrgWorld } from '../test-support/org-world.js';

/** The built console as the server serves it (`npm test` builds it first). */

let world: OrgWorld;
beforeAll(async () => {
  world = await startOrgWorld();
});
afterAll(() => world.close());

const get = (path: string, headers: Record<string, string> = {}) =>
  fetch(`${world.server.url}${path}`, { headers });

describe('serving the console', () => {
  it('answers a link into the console with its page, under the strict CSP', async () => {
    const response = await get('/orgs/acme/commands/cmd_anything');
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/html');
    expect(response.headers.get('content-security-policy')).toContain("script-src 'self'");
    // No browser feature the console does not use: the page could not turn on the camera, say.
    const permissions = response.headers.get('permissions-policy') ?? '';
    expect(permissions).toContain('camera=()');
    expect(permissions).toContain('microphone=()');
    expect(permissions).toContain('publickey-credentials-get=(self)');
    const html = await response.text();
    expect(html).toContain('<div id="root">');
    // Nothing inline for the CSP to refuse: scripts and styles are files of this origin.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/<style|style=/);
  });

  it('serves built files compressed and cacheable for good, and a missing one as 404', async () => {
    const html = await (await get('/')).text();
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    const compressed = await fetch(`${world.server.url}${script}`, { headers: { 'accept-encoding': 'br' } });
    expect(compressed.headers.get('content-encoding')).toBe('br');
    expect(compressed.headers.get('cache-control')).toContain('immutable');
    expect((await get('/assets/index-gone.js')).status).toBe(404);
  });

  it('never answers an API or agent path with the console page', async () => {
    for (const path of ['/api/no-such-route', '/agent/v2/connect', '/metrics/x']) {
      const response = await get(path);
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('not_found');
    }
  });
});
