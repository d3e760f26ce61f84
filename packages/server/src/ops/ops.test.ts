import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../db/database.js';
import { registeredRoutesOf } from '../http/app.js';
import { declarationProblems } from '../http/route.js';
import { redisUrl } from '../test-support/databases.js';
import { BACKENDS } from '../test-support/org-world.js';
import { deadPort } from '../test-support/ports.js';
import { startTestServer, type TestServer } from '../test-support/server.js';

const METRICS_TOKEN = 'mT4k9Qz2Xw7Lp3Vn8Rb6Yc1Hd5Jf0Gs2';

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('the composed server', () => {
  it('registers no route without a complete declaration', async () => {
    server = await startTestServer();
    const routes = registeredRoutesOf(server.server.app);
    expect(routes.map((r) => `${r.method} ${r.url}`)).toEqual(
      expect.arrayContaining([
        'GET /healthz',
        'HEAD /healthz',
        'GET /readyz',
        'GET /metrics',
        'GET /api/openapi.json',
      ]),
    );
    for (const route of routes) {
      expect(declarationProblems(route.declaration), `${route.method} ${route.url}`).toEqual([]);
    }
  });

  it('publishes an OpenAPI 3.1 document covering every registered route with unique operationIds', async () => {
    server = await startTestServer();
    const response = await fetch(`${server.url}/api/openapi.json`);
    expect(response.headers.get('content-type')).toContain('application/json');
    const document = (await response.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { operationId: string; responses: Record<string, unknown> }>>;
    };
    expect(document.openapi).toBe('3.1.0');
    const operations = Object.entries(document.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => ({ key: `${method.toUpperCase()} ${path}`, ...op })),
    );
    const registered = registeredRoutesOf(server.server.app).filter((r) => r.method !== 'HEAD');
    expect(operations.map((o) => o.key).sort()).toEqual(
      registered.map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`).sort(),
    );
    expect(new Set(operations.map((o) => o.operationId)).size).toBe(operations.length);
    const readiness = document.paths['/readyz']!.get!;
    expect(Object.keys(readiness.responses)).toEqual(expect.arrayContaining(['200', '503', '429', '500']));
  });

  it('requires Redis for readiness when Redis is configured', async () => {
    const port = await deadPort();
    server = await startTestServer({ BULWARK_REDIS_URL: `redis://127.0.0.1:${port}` });
    const response = await fetch(`${server.url}/readyz`);
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ checks: { redis: 'down', database: 'ok' } });
  });

  it.runIf(redisUrl())('is ready with the real Redis answering', async () => {
    server = await startTestServer({ BULWARK_REDIS_URL: redisUrl()! });
    const response = await fetch(`${server.url}/readyz`);
    expect(await response.json()).toMatchObject({ status: 'ready', checks: { redis: 'ok' } });
  });

  it('hides /metrics without a configured token', async () => {
    server = await startTestServer();
    expect((await fetch(`${server.url}/metrics`)).status).toBe(404);
  });

  it('serves metrics without a token on a separate loopback-only listener', async () => {
    server = await startTestServer({ BULWARK_METRICS_PORT: '0' });
    const metricsUrl = server.server.metricsUrl!;
    expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const response = await fetch(metricsUrl);
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('bulwark_http_request_duration_seconds');
    expect((await fetch(metricsUrl.replace('/metrics', '/readyz'))).status).toBe(404);
  });
});

// What the server reads and writes in its database, on each backend; the rest above is the process's.
describe.each(BACKENDS)('the composed server on %s', (backend) => {
  it('answers liveness and readiness, and readiness fails when migrations are missing', async () => {
    server = await startTestServer({}, { backend });
    expect(await (await fetch(`${server.url}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      status: 'ready',
      checks: { database: 'ok', migrations: 'ok', accepting: 'ok' },
    });

    // A second connection drops the migration record, as a botched restore would.
    const other = openDatabase(server.config);
    await other.db.deleteFrom('bulwark_migrations' as never).execute();
    await other.close();
    const unready = await fetch(`${server.url}/readyz`);
    expect(unready.status).toBe(503);
    expect(await unready.json()).toMatchObject({
      status: 'unavailable',
      checks: { migrations: 'down', database: 'ok' },
    });
  });

  it('serves /metrics only with the token, and audits a wrong one', async () => {
    server = await startTestServer({ BULWARK_METRICS_TOKEN: METRICS_TOKEN }, { backend });
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
    // Attack: guessing the token. Each wrong guess is refused and lands in the audit log with its source.
    const guess = await fetch(`${server.url}/metrics`, {
      headers: { authorization: 'Bearer guess-guess-guess', 'user-agent': 'scanner/1.0' },
    });
    expect(guess.status).toBe(401);
    const requestId = guess.headers.get('x-request-id');

    const scrape = await fetch(`${server.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(scrape.status).toBe(200);
    expect(scrape.headers.get('content-type')).toContain('text/plain');
    const text = await scrape.text();
    expect(text).toMatch(/bulwark_http_requests_total\{method="GET",route="\/metrics",status="401"\} 2/);
    expect(text).toMatch(/bulwark_audit_events_appended_total [1-9]/);
    expect(text).toContain('bulwark_audit_pending_events');
    expect(text).toContain('bulwark_rate_limit_rejections_total');
    expect(text).not.toContain(METRICS_TOKEN);

    await server.stop();
    const db = openDatabase(server.config);
    const events = await db.db
      .selectFrom('audit_events')
      .selectAll()
      .where('action', '=', 'ops.metrics_auth_failed')
      .execute();
    await db.close();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      chain_id: 'instance',
      outcome: 'failure',
      ip: '127.0.0.1',
      user_agent: 'scanner/1.0',
      request_id: requestId,
    });
    expect(JSON.stringify(events[0])).not.toContain('guess-guess');
  });
});
