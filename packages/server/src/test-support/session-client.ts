import { SESSION_COOKIE } from '../identity/session-guard.js';

/** Keeps the session cookie and CSRF token the way the console does; sends same-origin headers. */
export class SessionClient {
  cookie: string | undefined;
  csrf: string | undefined;
  constructor(
    readonly base: string,
    /** Sent with every request (a user agent, say); a request's own headers win. */
    readonly defaultHeaders: Record<string, string> = {},
  ) {}

  private absorb(response: Response): void {
    for (const header of response.headers.getSetCookie()) {
      const [pair = ''] = header.split(';');
      const [name, value] = pair.split('=');
      if (name === SESSION_COOKIE) this.cookie = value || undefined;
    }
  }

  async send(
    method: string,
    route: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    const response = await fetch(`${this.base}${route}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(this.cookie ? { cookie: `${SESSION_COOKIE}=${this.cookie}` } : {}),
        ...(this.csrf ? { 'x-csrf-token': this.csrf } : {}),
        origin: this.base,
        'sec-fetch-site': 'same-origin',
        ...this.defaultHeaders,
        ...headers,
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    this.absorb(response);
    let csrf: unknown;
    if (
      response.ok &&
      method !== 'HEAD' &&
      response.headers.get('content-type')?.startsWith('application/json')
    ) {
      const text = await response.clone().text();
      csrf = text.startsWith('{') ? (JSON.parse(text) as { csrfToken?: unknown }).csrfToken : undefined;
    }
    if (typeof csrf === 'string') this.csrf = csrf;
    return response;
  }

  /** Sends and returns the status and the parsed JSON body. */
  async json<T = Record<string, unknown>>(
    method: string,
    route: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: T }> {
    const response = await this.send(method, route, body, headers);
    const text = await response.text();
    return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  /** Opens a command's event stream as the console does: a live ticket first, then the stream with it. */
  async openEvents(org: string, command: string): Promise<Response> {
    const issued = await this.json<{ ticket: string }>(
      'POST',
      `/api/orgs/${org}/commands/${command}/events/tickets`,
    );
    if (issued.status !== 201)
      throw new Error(`no live ticket: ${issued.status} ${JSON.stringify(issued.body)}`);
    return this.send(
      'GET',
      `/api/orgs/${org}/commands/${command}/events?ticket=${encodeURIComponent(issued.body.ticket)}`,
    );
  }

  login(email: string, password: string): Promise<Response> {
    return this.send('POST', '/api/auth/login', { email, password });
  }
}
