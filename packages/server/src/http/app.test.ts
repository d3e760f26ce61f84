import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { noGenerations } from '../db/read-cache.js';
import { ForbiddenError, ServiceUnavailableError, UnauthenticatedError } from '../errors.js';
import { createMetrics } from '../ops/metrics.js';
import { LogCapture } from '../test-support/server.js';
import { createHttpApp, type HttpAppOptions, type RouteGuard } from './app.js';
import { declarationProblems, defineRoute, type RouteDefinition } from './route.js';

/**
 * The HTTP core against routes declared here, served by a real Fastify on a loopback port and called
 * with fetch. The routes are ordinary declarations: the same code path every domain's routes take.
 */

// Response schemas use z.object: undeclared fields are stripped (request schemas are strict).
const Thing = z.object({ id: z.string(), name: z.string() });

const testRoutes: RouteDefinition[] = [
  defineRoute({
    method: 'POST',
    url: '/api/things',
    operationId: 'createThing',
    summary: 'create',
    access: { public: 'a test route exercising the declaration machinery' },
    rateLimit: 'write',
    body: z.strictObject({
      name: z.string().min(1).max(10),
      owner: z.strictObject({ email: z.email() }).optional(),
      tags: z.array(z.strictObject({ key: z.string() })).optional(),
    }),
    response: { 201: Thing },
    // The handler returns more than the schema declares; the extra field must never leave.
    handler: ({ body }) => ({ id: 'thg_1', name: body.name, internalNote: 'must not leave the server' }),
  }),
  defineRoute({
    method: 'GET',
    url: '/api/things/:thing',
    operationId: 'getThing',
    summary: 'get',
    access: { public: 'a test route exercising the declaration machinery' },
    rateLimit: 'read',
    params: z.strictObject({ thing: z.string().regex(/^thg_[a-z0-9]+$/) }),
    query: z.strictObject({ limit: z.coerce.number().int().min(1).max(50).optional() }),
    response: { 200: z.strictObject({ id: z.string(), limit: z.number(), ip: z.string() }) },
    handler: ({ params, query, request }) => ({ id: params.thing, limit: query.limit ?? 10, ip: request.ip }),
  }),
  defineRoute({
    method: 'POST',
    url: '/api/ping',
    operationId: 'ping',
    summary: 'ping',
    access: { public: 'a test route exercising the declaration machinery' },
    rateLimit: 'write',
    response: { 200: z.strictObject({ pong: z.boolean() }) },
    handler: () => ({ pong: true }),
  }),
  defineRoute({
    method: 'GET',
    url: '/api/boom',
    operationId: 'boom',
    summary: 'fails',
    access: { public: 'a test route exercising the declaration machinery' },
    rateLimit: 'probe',
    response: { 200: z.strictObject({}) },
    handler: () => {
      throw new Error('relation "users" does not exist: SELECT password_hash FROM users WHERE email = $1');
    },
  }),
  defineRoute({
    method: 'POST',
    url: '/api/private',
    operationId: 'privateThing',
    summary: 'needs a permission',
    access: { permission: 'things:write' },
    rateLimit: 'write',
    body: z.strictObject({ name: z.string() }),
    response: { 200: z.strictObject({ ok: z.boolean() }) },
    handler: () => ({ ok: true }),
  }),
];

const rejectEveryone: RouteGuard = async (request) => {
  if (request.headers.authorization === 'Bearer member') throw new ForbiddenError();
  throw new UnauthenticatedError();
};

let app: FastifyInstance | undefined;

async function serve(routes: RouteDefinition[] = testRoutes, config: Partial<HttpAppOptions['config']> = {}) {
  const logs = new LogCapture();
  app = await createHttpApp(
    {
      config: {
        bodyLimitBytes: 1024,
        trustedProxies: [],
        tls: undefined,
        rateLimits: { read: 1000, write: 1000, auth: 1000, export: 1000 },
        ...config,
      },
      logger: pino({ level: 'info' }, logs),
      metrics: createMetrics().http,
      guard: rejectEveryone,
      generation: noGenerations,
    },
    routes,
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as { port: number };
  return { base: `http://127.0.0.1:${port}`, logs };
}

afterEach(async () => {
  await app?.close();
  app = undefined;
});

const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: typeof body === 'string' ? body : JSON.stringify(body),
});

describe('HTTP core', () => {
  it('answers 422 with a path for every problem, unknown keys included', async () => {
    const { base } = await serve();
    const response = await fetch(
      `${base}/api/things`,
      json({ name: '', owner: { email: 5 }, tags: [{ key: 'a', x: 1 }], admin: true }),
    );
    expect(response.status).toBe(422);
    const { error } = (await response.json()) as {
      error: { code: string; requestId: string; fields: Array<{ path: string }> };
    };
    expect(error.code).toBe('validation_failed');
    expect(error.requestId).toBe(response.headers.get('x-request-id'));
    expect(error.fields.map((f) => f.path).sort()).toEqual([
      'body.admin',
      'body.name',
      'body.owner.email',
      'body.tags[0].x',
    ]);
  });

  it('validates params and query, and refuses query parameters or a body a route does not take', async () => {
    const { base } = await serve();
    const bad = await fetch(`${base}/api/things/THING?limit=500&debug=1`);
    expect(bad.status).toBe(422);
    const { error } = (await bad.json()) as { error: { fields: Array<{ path: string }> } };
    expect(error.fields.map((f) => f.path).sort()).toEqual(['params.thing', 'query.debug', 'query.limit']);
    expect(await (await fetch(`${base}/api/things/thg_1?limit=5`)).json()).toEqual({
      id: 'thg_1',
      limit: 5,
      ip: '127.0.0.1',
    });
    const withBody = await fetch(`${base}/api/ping`, json({ surprise: true }));
    expect(withBody.status).toBe(422);
    expect(((await withBody.json()) as { error: { fields: unknown } }).error.fields).toEqual([
      { path: 'body', message: 'this operation takes no body' },
    ]);
  });

  it('strips response fields the schema does not declare and uses the declared status', async () => {
    const { base } = await serve();
    const response = await fetch(`${base}/api/things`, json({ name: 'disk' }));
    expect(response.status).toBe(201);
    expect(await response.json()).toEqual({ id: 'thg_1', name: 'disk' });
  });

  it('answers 413 over the body limit, 400 for malformed JSON or prototype poisoning, 415 for other media', async () => {
    const { base } = await serve();
    const big = await fetch(`${base}/api/things`, json({ name: 'x'.repeat(2000) }));
    expect(big.status).toBe(413);
    expect(((await big.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');
    const broken = await fetch(`${base}/api/things`, json('{"name": '));
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    const poisoned = await fetch(`${base}/api/things`, json('{"name":"a","__proto__":{"admin":true}}'));
    expect(poisoned.status).toBe(400);
    const text = await fetch(`${base}/api/things`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'name=x',
    });
    expect(text.status).toBe(415);
    expect(((await text.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type');
  });

  it('never lets a stack, SQL or internal message out of a 500, and logs it under the request id', async () => {
    const { base, logs } = await serve();
    const response = await fetch(`${base}/api/boom`);
    expect(response.status).toBe(500);
    const text = await response.text();
    const body = JSON.parse(text) as { error: { code: string; requestId: string } };
    expect(body.error.code).toBe('internal_error');
    for (const leak of ['SELECT', 'users', 'password', 'at ', '.ts', 'Error'])
      expect(text).not.toContain(leak);
    const logged = logs.entries().find((entry) => entry.msg === 'request failed');
    expect(logged?.requestId).toBe(body.error.requestId);
  });

  it('answers unknown routes with the error shape', async () => {
    const { base } = await serve();
    const response = await fetch(`${base}/api/nope`);
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      error: {
        code: 'not_found',
        message: 'There is no such route.',
        requestId: response.headers.get('x-request-id'),
      },
    });
  });

  it('checks the permission before it looks at the input', async () => {
    // Validation errors would tell an anonymous caller what a protected route accepts.
    const { base } = await serve();
    const anonymous = await fetch(`${base}/api/private`, json({ wrong: 1 }));
    expect(anonymous.status).toBe(401);
    expect(((await anonymous.json()) as { error: { code: string } }).error.code).toBe('unauthenticated');
    const member = await fetch(`${base}/api/private`, json({ wrong: 1 }, { authorization: 'Bearer member' }));
    expect(member.status).toBe(403);
  });

  it('sends the NET-2 security headers on success and error responses, and no CORS', async () => {
    const { base } = await serve();
    for (const response of [
      await fetch(`${base}/api/things/thg_1`),
      await fetch(`${base}/api/things`, json({})),
      await fetch(`${base}/api/nope`),
      await fetch(`${base}/api/things`, {
        method: 'OPTIONS',
        headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
      }),
    ]) {
      const csp = response.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("default-src 'self'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).toContain("frame-ancestors 'none'");
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('referrer-policy')).toBe('no-referrer');
      expect(response.headers.get('cross-origin-opener-policy')).toBe('same-origin');
      expect(response.headers.get('cross-origin-resource-policy')).toBe('same-origin');
      expect(response.headers.get('x-frame-options')).toBe('DENY');
      const permissions = (response.headers.get('permissions-policy') ?? '').split(', ');
      for (const feature of ['camera', 'microphone', 'geolocation', 'payment', 'usb', 'serial', 'hid'])
        expect(permissions).toContain(`${feature}=()`);
      // Passkeys and the copy buttons: what the console uses, for its own origin only.
      expect(permissions).toContain('publickey-credentials-get=(self)');
      expect(permissions).toContain('publickey-credentials-create=(self)');
      expect(permissions).toContain('clipboard-write=(self)');
      expect(permissions.filter((rule) => !rule.endsWith('=()') && !rule.endsWith('=(self)'))).toEqual([]);
      expect(response.headers.get('cache-control')).toBe('no-store');
      expect(response.headers.get('access-control-allow-origin')).toBeNull();
      expect(response.headers.get('strict-transport-security')).toBeNull(); // plain HTTP: see tls.test.ts
    }
  });

  it('rate limits by class with 429 and Retry-After', async () => {
    const { base } = await serve(testRoutes, {
      rateLimits: { read: 1000, write: 3, auth: 1000, export: 1000 },
    });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await fetch(`${base}/api/ping`, { method: 'POST' })).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    const limited = await fetch(`${base}/api/ping`, { method: 'POST' });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe('rate_limited');
    // Another class is counted apart.
    expect((await fetch(`${base}/api/things/thg_1`)).status).toBe(200);
  });

  it('refuses a rate-limited or unadmitted request before reading its body', async () => {
    // Attack: a flood of requests with large or malformed bodies. A caller who is refused anyway must
    // not get the server to parse what they send: the refusal comes first, and the handler never runs.
    let open = true;
    let handled = 0;
    const admitted = defineRoute({
      method: 'POST',
      url: '/api/admitted',
      operationId: 'admitted',
      summary: 'refused while closed',
      access: { public: 'a test route exercising admission' },
      rateLimit: 'write',
      admit: () => {
        if (!open) throw new ServiceUnavailableError('test_busy', 'Closed for the test.');
      },
      body: z.strictObject({ n: z.number() }),
      response: { 200: z.strictObject({ ok: z.boolean() }) },
      handler: () => {
        handled++;
        return { ok: true };
      },
    });
    const { base } = await serve([admitted], {
      rateLimits: { read: 1000, write: 3, auth: 1000, export: 1000 },
    });
    const codeOf = async (response: Response) =>
      ((await response.json()) as { error: { code: string } }).error.code;

    expect((await fetch(`${base}/api/admitted`, json({ n: 1 }))).status).toBe(200);
    open = false;
    const closed = await fetch(`${base}/api/admitted`, json('{"n": not json'));
    expect([closed.status, await codeOf(closed)]).toEqual([503, 'test_busy']);
    expect(handled).toBe(1);

    open = true;
    expect((await fetch(`${base}/api/admitted`, json({ n: 3 }))).status).toBe(200);
    const limited = await fetch(`${base}/api/admitted`, json('{"n": not json'));
    expect([limited.status, await codeOf(limited)]).toEqual([429, 'rate_limited']);
    expect(handled).toBe(2);
  });

  it('believes X-Forwarded-For only from a configured proxy', async () => {
    // Attack: a client sets X-Forwarded-For to dodge per-IP rate limits or to forge the audited address.
    const spoofed = { headers: { 'x-forwarded-for': '203.0.113.9' } };
    let { base } = await serve();
    expect(((await (await fetch(`${base}/api/things/thg_1`, spoofed)).json()) as { ip: string }).ip).toBe(
      '127.0.0.1',
    );
    await app?.close();
    ({ base } = await serve(testRoutes, { trustedProxies: ['127.0.0.1'] }));
    expect(((await (await fetch(`${base}/api/things/thg_1`, spoofed)).json()) as { ip: string }).ip).toBe(
      '203.0.113.9',
    );
  });
});

describe('route declarations (default deny)', () => {
  const complete = testRoutes[2]!;

  it('refuses to register a route without a permission or a public reason', async () => {
    const { access: _, ...withoutAccess } = complete;
    await expect(serve([withoutAccess as RouteDefinition])).rejects.toThrow(
      'access must declare a permission or public with a reason',
    );
    await expect(serve([{ ...complete, access: { public: 'yes' } }])).rejects.toThrow('must say why');
  });

  it('refuses a route without an operationId, a rate-limit class or a response schema', async () => {
    await expect(serve([{ ...complete, operationId: '' }])).rejects.toThrow('operationId');
    await expect(serve([{ ...complete, rateLimit: undefined as never }])).rejects.toThrow(
      'rateLimit class is required',
    );
    await expect(serve([{ ...complete, response: {} }])).rejects.toThrow('at least one response schema');
  });

  it('refuses a request schema that lets unknown keys through, at any depth', async () => {
    await expect(serve([{ ...complete, body: z.object({ name: z.string() }) }])).rejects.toThrow(
      'body schema lets unknown keys through at (root)',
    );
    await expect(
      serve([{ ...complete, body: z.strictObject({ items: z.array(z.object({ a: z.string() })) }) }]),
    ).rejects.toThrow('at .items[]');
    await expect(
      serve([
        { ...complete, body: z.strictObject({ labels: z.record(z.string(), z.object({ v: z.string() })) }) },
      ]),
    ).rejects.toThrow('at .labels{}');
    await expect(
      serve([
        { ...complete, body: z.intersection(z.strictObject({ a: z.string() }), z.object({ b: z.string() })) },
      ]),
    ).rejects.toThrow('at (root)');
  });

  it('lets only an organization GET with a permission reuse its answers', () => {
    // An answer is kept per caller and URL: anything that could depend on more must not declare it.
    const reusing = defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/things',
      operationId: 'listThings',
      summary: 'Things',
      access: { permission: 'things:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: z.string() }),
      response: { 200: z.object({}) },
      reuseAnswers: true,
      handler: () => ({}),
    });
    expect(declarationProblems(reusing)).toEqual([]);
    const refusal = 'only an organization GET with a permission may reuse its answers';
    for (const change of [
      { method: 'POST' as const },
      { access: { permission: 'self:manage' as const } },
      { access: { public: 'anyone may read the things' } },
      { url: '/api/things', params: undefined },
    ]) {
      expect(declarationProblems({ ...reusing, ...change }), JSON.stringify(change)).toContain(refusal);
    }
  });

  it('refuses a route registered around the declaration', async () => {
    const { base } = await serve();
    expect(base).toBeDefined();
    const bare = await createHttpApp(
      {
        config: {
          bodyLimitBytes: 1024,
          trustedProxies: [],
          tls: undefined,
          rateLimits: { read: 1, write: 1, auth: 1, export: 1 },
        },
        logger: pino({ level: 'silent' }),
        metrics: createMetrics().http,
        guard: rejectEveryone,
        generation: noGenerations,
      },
      [],
    );
    expect(() => bare.get('/sneaky', async () => 'no declaration')).toThrow(
      'registered without a declaration',
    );
    await bare.close();
  });
});
