import { SESSION_COOKIE } from '../identity/session-guard.js';
import { OIDC_CALLBACK_PREFIX } from '../sso/sso.routes.js';
import { OIDC_CLIENT, type OidcProvider, type ProviderAccount } from './oidc-provider.js';
import { SessionClient } from './session-client.js';

/** The cookies of one browser, as far as the sign-in redirects need them. */
export class CookieJar {
  readonly values = new Map<string, string>();
  absorb(response: Response): void {
    for (const header of response.headers.getSetCookie()) {
      const [pair = ''] = header.split(';');
      const at = pair.indexOf('=');
      const name = pair.slice(0, at);
      const value = pair.slice(at + 1);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(header)) this.values.delete(name);
      else this.values.set(name, value);
    }
  }
  header(): string {
    return [...this.values].map(([name, value]) => `${name}=${value}`).join('; ');
  }
}

/** Why a sign-in landed on the sign-in page, from where the callback sent the browser. */
export const ssoRefusal = (location: string | null) =>
  new URL(location ?? '/', 'http://x').searchParams.get('ssoError');

/**
 * A browser signing in to the Bulwark at `base` through `provider`, as the console would: start the
 * sign-in, follow the provider's redirects (signing in whoever the provider is told to), come back.
 */
export function ssoBrowser(base: string, provider: OidcProvider) {
  /** Starts a sign-in in a fresh browser and follows the provider until it sends the browser back. */
  async function toCallback(connection: string, account: ProviderAccount) {
    await provider.nextAccount(account);
    const browser = new CookieJar();
    const started = await fetch(`${base}/api/auth/sso/${connection}/start?returnTo=%2Fagents`, {
      method: 'POST',
      headers: { origin: base, 'sec-fetch-site': 'same-origin' },
    });
    browser.absorb(started);
    if (started.status !== 200) throw new Error(`start answered ${started.status}: ${await started.text()}`);
    const location = ((await started.json()) as { location: string }).location;
    return { browser, callbackUrl: await throughProvider(location) };
  }

  /** Follows the provider from its authorization URL until it sends the browser back to Bulwark. */
  async function throughProvider(location: string) {
    const atProvider = new CookieJar();
    let url = location;
    for (let hop = 0; hop < 10; hop++) {
      if (url.startsWith(`${base}${OIDC_CALLBACK_PREFIX}`)) return url;
      const response = await fetch(url, { redirect: 'manual', headers: { cookie: atProvider.header() } });
      atProvider.absorb(response);
      const next = response.headers.get('location');
      if (!next)
        throw new Error(`the provider stopped at ${url} with ${response.status}: ${await response.text()}`);
      url = new URL(next, url).href;
    }
    throw new Error('the provider never sent the browser back');
  }

  /** Comes back to Bulwark with the provider's answer, as the browser would. */
  async function finish(browser: CookieJar, callbackUrl: string) {
    const response = await fetch(callbackUrl, { redirect: 'manual', headers: { cookie: browser.header() } });
    browser.absorb(response);
    return {
      status: response.status,
      location: response.headers.get('location'),
      session: browser.values.get(SESSION_COOKIE),
    };
  }

  return {
    throughProvider,
    toCallback,
    finish,
    async signIn(connection: string, account: ProviderAccount) {
      const { browser, callbackUrl } = await toCallback(connection, account);
      return finish(browser, callbackUrl);
    },
    /** A client holding the session cookie a sign-in set, as the console would after landing. */
    async clientFor(session: string) {
      const client = new SessionClient(base);
      client.cookie = session;
      // The CSRF token comes with the session view.
      await client.json('GET', '/api/auth/session');
      return client;
    },
  };
}

/** Connects `provider` to an organization through the API, as its owner would; `config` on top. */
export function connectProvider(
  owner: SessionClient,
  org: string,
  provider: OidcProvider,
  name: string,
  config: Record<string, unknown> = {},
) {
  return owner.json<{ id: string }>('POST', `/api/orgs/${org}/sso/connections`, {
    name,
    kind: 'oidc',
    config: {
      issuer: provider.issuer,
      clientId: OIDC_CLIENT.id,
      clientSecret: OIDC_CLIENT.secret,
      defaultRole: 'viewer',
      ...config,
    },
  });
}
