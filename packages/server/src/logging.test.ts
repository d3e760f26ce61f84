import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger, isoTimestamp, REDACTED, redactUrl } from './logging.js';
import { LogCapture, startTestServer, type TestServer } from './test-support/server.js';

/**
 * Credentials reach the server in the Authorization header, cookies, CSRF headers, query strings and
 * bodies. Logs are shipped to places with wider access than the database, so none may carry one.
 */

const SECRETS = {
  bearer: 'bwk_LEAKED0bearer0token0value0000000000000',
  cookie: 'LEAKED-session-cookie-value-1234567890',
  csrf: 'LEAKED-csrf-token-value-0987654321',
  query: 'LEAKED-query-token-abcdef',
  password: 'LEAKED-password-Correct-Horse-9',
  metrics: 'LEAKED-metrics-guess-zyxwvut',
};

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('log redaction', () => {
  it('keeps tokens, passwords, cookies and authorization headers out of real request logs', async () => {
    server = await startTestServer({
      BULWARK_LOG_LEVEL: 'trace',
      BULWARK_METRICS_TOKEN: 'mT4k9Qz2Xw7Lp3Vn8Rb6Yc1Hd5Jf0Gs2',
    });
    const headers = {
      authorization: `Bearer ${SECRETS.bearer}`,
      cookie: `__Host-bulwark_session=${SECRETS.cookie}`,
      'x-csrf-token': SECRETS.csrf,
      'content-type': 'application/json',
    };
    await fetch(`${server.url}/healthz?token=${SECRETS.query}`, { headers });
    await fetch(`${server.url}/api/openapi.json?code=${SECRETS.query}`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ password: SECRETS.password }),
    });
    await fetch(`${server.url}/readyz`, {
      method: 'POST',
      headers,
      body: `{"password":"${SECRETS.password}"`,
    });
    await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${SECRETS.metrics}` } });
    await server.stop();

    const output = server.logs.text;
    expect(output).toContain('"msg":"incoming request"'); // at debug and below
    expect(output).toContain('"msg":"request completed"');
    expect(output).toContain(`/healthz?token=${encodeURIComponent(REDACTED)}`);
    for (const [kind, secret] of Object.entries(SECRETS)) {
      expect(output, `${kind} reached the log`).not.toContain(secret);
    }
  });

  it('writes one access line per request at info, with what identifies the request and nothing else', async () => {
    server = await startTestServer({ BULWARK_LOG_LEVEL: 'info' });
    const response = await fetch(`${server.url}/api/auth/session?token=${SECRETS.query}`, {
      headers: { cookie: `__Host-bulwark_session=${SECRETS.cookie}`, 'x-csrf-token': SECRETS.csrf },
    });
    expect(response.status).toBe(401);
    await server.stop();

    const lines = server.logs
      .entries()
      .filter((entry) => entry.requestId === response.headers.get('x-request-id'));
    expect(lines).toEqual([
      expect.objectContaining({
        level: 30,
        msg: 'request completed',
        req: {
          method: 'GET',
          url: `/api/auth/session?token=${encodeURIComponent(REDACTED)}`,
          ip: '127.0.0.1',
        },
        res: { statusCode: 401 },
        responseTime: expect.any(Number),
      }),
    ]);
    expect(Object.keys(lines[0]!).sort()).toEqual(
      ['level', 'msg', 'name', 'pid', 'req', 'requestId', 'res', 'responseTime', 'time'].sort(),
    );
    for (const secret of Object.values(SECRETS)) expect(server.logs.text).not.toContain(secret);
  });

  it("writes a request's own lines with its request id, when its level is on", async () => {
    // The request's logger is made only when a line is written (http/request-logger.ts).
    server = await startTestServer({ BULWARK_LOG_LEVEL: 'debug' });
    const response = await fetch(`${server.url}/healthz`);
    await server.stop();
    const lines = server.logs
      .entries()
      .filter((entry) => entry.requestId === response.headers.get('x-request-id'));
    expect(lines.map((line) => line.msg)).toEqual(['incoming request', 'request completed']);
    expect(lines[0]).toMatchObject({ level: 20, name: 'bulwark', req: { method: 'GET', url: '/healthz' } });
  });

  it('stamps lines with the same ISO time as pino', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 22, 9, 30, 15, 123) });
    try {
      expect(isoTimestamp()).toBe(pino.stdTimeFunctions.isoTime());
      vi.advanceTimersByTime(1);
      expect(isoTimestamp()).toBe(',"time":"2026-11-22T09:30:15.124Z"');
      expect(isoTimestamp()).toBe(pino.stdTimeFunctions.isoTime());
    } finally {
      vi.useRealTimers();
    }
  });

  it('censors secret fields wherever code logs them', () => {
    // Defence in depth: a future handler that logs a whole body or headers object still leaks nothing.
    const capture = new LogCapture();
    const logger = createLogger({ level: 'info', destination: capture });
    logger.info({ body: { password: SECRETS.password, user: { token: SECRETS.bearer } } }, 'body');
    logger.info(
      { req: { headers: { authorization: `Bearer ${SECRETS.bearer}`, cookie: SECRETS.cookie } } },
      'headers',
    );
    logger.info({ headers: { authorization: SECRETS.bearer, cookie: SECRETS.cookie } }, 'raw headers');
    logger.info({ password: SECRETS.password, secret: SECRETS.csrf, apiKey: SECRETS.bearer }, 'top level');
    for (const secret of Object.values(SECRETS)) expect(capture.text).not.toContain(secret);
    const entries = capture.entries();
    expect(entries.filter((e) => JSON.stringify(e).includes(REDACTED)).map((e) => e.msg)).toEqual([
      'body',
      'raw headers',
      'top level',
    ]);
    // Under `req`, headers are not even censored: the request serializer drops them.
    expect(entries.find((e) => e.msg === 'headers')?.req).toEqual({});
  });

  it('masks secret-looking query parameters and keeps the rest', () => {
    expect(redactUrl('/cb?state=abc&code=xyz&page=2')).toBe(
      '/cb?state=%5Bredacted%5D&code=%5Bredacted%5D&page=2',
    );
    expect(redactUrl('/plain/path')).toBe('/plain/path');
  });
});
