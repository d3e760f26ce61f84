import { readFileSync } from 'node:fs';
import { newId } from '@bulwark/protocol';
import cookie from '@fastify/cookie';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Config } from '../config.js';
import { type FieldProblem, ValidationError } from '../errors.js';
import type { HttpMetrics } from '../ops/metrics.js';
import { AccessLog } from './access-log.js';
import { installErrorHandling } from './error-handler.js';
import { createRateLimiter, type RateLimiter } from './rate-limit.js';
import { bearerTokenHashOf, bearerTokenOf } from './request-context.js';
import {
  declarationProblems,
  isRawResponse,
  type Permission,
  type Principal,
  type RouteDefinition,
} from './route.js';
import { securityHeaders } from './security-headers.js';

/** Decides who is calling a permission route and whether they hold the permission; throws a 401/403/404 AppError otherwise. */
export type RouteGuard = (
  request: FastifyRequest,
  route: Pick<RouteDefinition, 'url' | 'method'> & {
    access: { permission: Permission; privileged?: true; beforeSecondFactor?: true };
  },
) => Promise<Principal>;

export interface HttpAppOptions {
  config: Pick<Config, 'bodyLimitBytes' | 'trustedProxies' | 'tls' | 'rateLimits'>;
  logger: Logger;
  metrics: HttpMetrics;
  guard: RouteGuard;
}

const DECLARATION = Symbol.for('bulwark.routeDeclaration');

function pathOf(part: string, path: PropertyKey[]): string {
  return path.reduce<string>(
    (out, key) => (typeof key === 'number' ? `${out}[${key}]` : `${out}.${String(key)}`),
    part,
  );
}

function fieldProblems(part: 'params' | 'query' | 'body', error: z.ZodError): FieldProblem[] {
  return error.issues.flatMap((issue) =>
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({
          path: pathOf(part, [...issue.path, key]),
          message: 'is not a known field',
        }))
      : [{ path: pathOf(part, issue.path), message: issue.message }],
  );
}

function hasBody(request: FastifyRequest): boolean {
  return request.body !== undefined && request.body !== null && request.body !== '';
}

function registerRoute(
  app: FastifyInstance,
  route: RouteDefinition,
  guard: RouteGuard,
  limiter: RateLimiter,
): void {
  const problems = declarationProblems(route);
  if (problems.length > 0) {
    throw new Error(`route ${route.method} ${route.url} is not fully declared: ${problems.join('; ')}`);
  }
  const successStatus = Math.min(...Object.keys(route.response).map(Number));

  app.route({
    method: route.method,
    url: route.url,
    config: { [DECLARATION]: route },
    // Before the body is read: a limited or refused caller does not get us to parse what they send.
    onRequest: async (request) => {
      await limiter.consume(route.rateLimit, request.ip);
      // An API key has its own budget too (KEY-1): spread over many addresses, it still gets no more.
      const bearer = bearerTokenOf(request);
      if (bearer) await limiter.consume(route.rateLimit, `apikey:${bearerTokenHashOf(request, bearer)}`);
      route.admit?.();
    },
    handler: async (request, reply) => {
      const authorize = async () =>
        'permission' in route.access ? guard(request, { ...route, access: route.access }) : undefined;
      const principal = await authorize();

      const fields: FieldProblem[] = [];
      const parse = (part: 'params' | 'query' | 'body', schema: z.ZodType | undefined, input: unknown) => {
        if (!schema) return undefined;
        const result = schema.safeParse(input ?? (part === 'body' ? undefined : {}));
        if (result.success) return result.data;
        fields.push(...fieldProblems(part, result.error));
        return undefined;
      };
      const params = parse('params', route.params, request.params);
      const query = parse('query', route.query, request.query);
      const body = parse('body', route.body, request.body);
      if (!route.body && hasBody(request))
        fields.push({ path: 'body', message: 'this operation takes no body' });
      if (!route.query && Object.keys((request.query as object) ?? {}).length > 0) {
        fields.push({ path: 'query', message: 'this operation takes no query parameters' });
      }
      if (fields.length > 0) throw new ValidationError(fields);

      reply.code(successStatus);
      const result = await route.handler({
        params,
        query,
        body,
        request,
        reply,
        principal,
        reauthorize: authorize,
      });
      if (reply.sent) return reply;
      const spec = route.response[reply.statusCode];
      if (!spec)
        throw new Error(`${route.operationId} answered ${reply.statusCode}, which it does not declare`);
      if (isRawResponse(spec)) {
        if (!reply.hasHeader('content-type')) reply.type(spec.contentType);
        return result;
      }
      // Re-parse through the declared schema: fields the schema does not declare never leave.
      const parsed = spec.safeParse(result);
      if (!parsed.success)
        throw new Error(
          `${route.operationId} produced a response its schema refuses: ${parsed.error.message}`,
        );
      return parsed.data;
    },
  });
}

export interface RegisteredRoute {
  method: string;
  url: string;
  declaration: RouteDefinition;
}

const registeredRoutes = new WeakMap<FastifyInstance, RegisteredRoute[]>();

/** Every route the router holds (HEAD twins of GET routes included), as the declaration guard saw them. */
export function registeredRoutesOf(app: FastifyInstance): RegisteredRoute[] {
  return [...(registeredRoutes.get(app) ?? [])];
}

/** The declaration a registered route was made from; undefined for anything registered around it. */
export function declarationOf(routeConfig: unknown): RouteDefinition | undefined {
  return (routeConfig as Record<symbol, RouteDefinition> | undefined)?.[DECLARATION];
}

export async function createHttpApp(
  options: HttpAppOptions,
  routes: RouteDefinition[],
): Promise<FastifyInstance> {
  const { config, logger, metrics, guard } = options;
  const app = Fastify({
    loggerInstance: logger,
    genReqId: () => newId('req'),
    logController: new AccessLog(logger),
    bodyLimit: config.bodyLimitBytes,
    trustProxy: config.trustedProxies.length > 0 ? config.trustedProxies : false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    ...(config.tls
      ? {
          https: {
            cert: readFileSync(config.tls.certFile),
            key: readFileSync(config.tls.keyFile),
            minVersion: config.tls.minVersion,
          },
        }
      : {}),
  }) as unknown as FastifyInstance;

  // Default deny: anything that reaches the router without a full declaration stops the server from starting.
  const registered: RegisteredRoute[] = [];
  registeredRoutes.set(app, registered);
  app.addHook('onRoute', (routeOptions) => {
    const declaration = declarationOf(routeOptions.config);
    if (!declaration) {
      throw new Error(
        `route ${String(routeOptions.method)} ${routeOptions.url} was registered without a declaration`,
      );
    }
    registered.push({ method: String(routeOptions.method), url: routeOptions.url ?? '', declaration });
  });

  // Callback-style hooks: these run on every request, and an async hook costs a promise each time.
  const headers = securityHeaders({ hsts: config.tls !== undefined || config.trustedProxies.length > 0 });
  app.addHook('onRequest', (request, reply, next) => {
    reply.headers(headers);
    reply.header('x-request-id', request.id);
    next();
  });
  app.addHook('onResponse', (request, reply, next) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.requests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.duration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
    next();
  });

  // The API speaks JSON only: a text/plain body is refused with 415 instead of reaching a handler as a string.
  app.removeContentTypeParser('text/plain');
  // Cookies are parsed, never signed: the session token carries its own integrity (random + checksum).
  await app.register(cookie);
  installErrorHandling(app);

  const limiter = createRateLimiter(config.rateLimits, metrics);
  for (const route of routes) registerRoute(app, route, guard, limiter);
  return app;
}
