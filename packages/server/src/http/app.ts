import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { newId } from '@bulwark/protocol';
import cookie from '@fastify/cookie';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Config } from '../config.js';
import { inOrgScope, withinOrgScope } from '../db/org-scope.js';
import { type Generation, type GenerationReader, ReadCache } from '../db/read-cache.js';
import { type FieldProblem, ValidationError } from '../errors.js';
import type { HttpMetrics } from '../ops/metrics.js';
import { AccessLog } from './access-log.js';
import { answerClientError, answerFrameworkError, installErrorHandling } from './error-handler.js';
import { MAX_JSON_DEPTH, nestedDeeperThan } from './json-depth.js';
import { createRateLimiter, type RateLimiter } from './rate-limit.js';
import type { LimiterStore } from './rate-limiters.js';
import { bearerTokenHashOf, bearerTokenOf } from './request-context.js';
import { deferredChildLogger } from './request-logger.js';
import {
  declarationProblems,
  isRawResponse,
  type Permission,
  type Principal,
  type RouteDefinition,
} from './route.js';
import { securityHeaders } from './security-headers.js';
import { TLS_POLICY } from './tls-policy.js';

/** Decides who is calling a permission route and whether they hold the permission; throws a 401/403/404 AppError otherwise. */
export type RouteGuard = (
  request: FastifyRequest,
  route: Pick<RouteDefinition, 'url' | 'method'> & {
    access: { permission: Permission; privileged?: true; beforeSecondFactor?: true };
  },
  /** The database's generation when the request began: reads made at it may be reused (read-cache.ts). */
  generation: Generation | undefined,
) => Promise<Principal>;

export interface HttpAppOptions {
  config: Pick<Config, 'bodyLimitBytes' | 'trustedProxies' | 'tls' | 'rateLimits'>;
  logger: Logger;
  metrics: HttpMetrics;
  guard: RouteGuard;
  /** The database's generation now; see db/read-cache.ts. */
  generation: GenerationReader;
  /** Where request limits count: Redis shared by every instance when configured, memory otherwise. */
  limiterStore?: LimiterStore;
}

const DECLARATION = Symbol.for('bulwark.routeDeclaration');

/** Bounds of the answers `reuseAnswers` routes keep: past them, the oldest go first. */
const ANSWERS_REMEMBERED = 2_000;
const ANSWERS_MAX_CHARACTERS = 32 * 1024 * 1024;

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

/** A serialized answer of a `reuseAnswers` route, and what else it depends on besides the database. */
interface RememberedAnswer {
  json: string;
  stillCurrent: (() => boolean) | undefined;
}

const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

function registerRoute(
  app: FastifyInstance,
  route: RouteDefinition,
  { guard, generation: readGeneration, metrics }: Pick<HttpAppOptions, 'guard' | 'generation' | 'metrics'>,
  limiter: RateLimiter,
  answers: ReadCache<RememberedAnswer>,
): void {
  const problems = declarationProblems(route);
  if (problems.length > 0) {
    throw new Error(`route ${route.method} ${route.url} is not fully declared: ${problems.join('; ')}`);
  }
  const guarded = 'permission' in route.access ? { ...route, access: route.access } : undefined;
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
      const authorize = async (generation: Generation | undefined) =>
        guarded ? guard(request, guarded, generation) : undefined;
      const generation = guarded ? readGeneration() : undefined;
      const principal = await authorize(generation);

      // The same person asking for the same URL while the database is unchanged gets the same answer.
      // It was stored for this exact URL, which passed validation then (and a GET carries no body).
      // Not for an API key: the guard reads its access afresh (session-guard.ts), and so must this.
      const answerKey =
        route.reuseAnswers && principal?.session && !hasBody(request) ? `${principal.id} ${request.url}` : '';
      const remembered = answerKey ? answers.lookup(answerKey, generation) : undefined;
      if (remembered && (remembered.stillCurrent?.() ?? true)) {
        metrics.answersReused.inc();
        reply.code(successStatus).type(JSON_CONTENT_TYPE);
        return remembered.json;
      }

      const fields: FieldProblem[] = [];
      const parse = (part: 'params' | 'query' | 'body', schema: z.ZodType | undefined, input: unknown) => {
        if (!schema) return undefined;
        const result = schema.safeParse(input ?? (part === 'body' ? undefined : {}));
        if (result.success) return result.data;
        fields.push(...fieldProblems(part, result.error));
        return undefined;
      };
      if (nestedDeeperThan(request.body, MAX_JSON_DEPTH))
        throw new ValidationError([{ path: 'body', message: `nests deeper than ${MAX_JSON_DEPTH} levels` }]);
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
      let stillCurrent: (() => boolean) | undefined;
      const handle = () =>
        route.handler({
          params,
          query,
          body,
          request,
          reply,
          principal,
          reauthorize: () => authorize(readGeneration()),
          reusableWhile: (check) => {
            stillCurrent = check;
          },
        });
      // An organization's route reaches only that organization's rows, whatever its queries say
      // (row-level security, db/org-scope.ts): the guard has established which one it acts in.
      const orgId = principal?.org?.id ?? principal?.scimOrgId;
      const result = await (orgId === undefined ? handle() : inOrgScope(orgId, handle));
      if (reply.sent) return reply;
      const spec = route.response[reply.statusCode];
      if (!spec)
        throw new Error(`${route.operationId} answered ${reply.statusCode}, which it does not declare`);
      if (isRawResponse(spec)) {
        if (!reply.hasHeader('content-type')) reply.type(spec.contentType);
        // A stream is read after the handler returned: in its organization's scope all the same.
        return orgId !== undefined && result instanceof Readable
          ? Readable.from(withinOrgScope(orgId, result))
          : result;
      }
      // Re-parse through the declared schema: fields the schema does not declare never leave.
      const parsed = spec.safeParse(result);
      if (!parsed.success)
        throw new Error(
          `${route.operationId} produced a response its schema refuses: ${parsed.error.message}`,
        );
      if (!answerKey || reply.statusCode !== successStatus) return parsed.data;
      const json = JSON.stringify(parsed.data);
      answers.store(answerKey, generation, { json, stillCurrent });
      reply.type(JSON_CONTENT_TYPE);
      return json;
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
  const { config, logger, metrics } = options;
  const app = Fastify({
    loggerInstance: logger,
    genReqId: () => newId('req'),
    logController: new AccessLog(logger),
    childLoggerFactory: deferredChildLogger,
    bodyLimit: config.bodyLimitBytes,
    trustProxy: config.trustedProxies.length > 0 ? config.trustedProxies : false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    // What the router or the HTTP parser refuses still answers in the one error shape.
    frameworkErrors: answerFrameworkError,
    clientErrorHandler: answerClientError,
    ...(config.tls
      ? {
          https: {
            cert: readFileSync(config.tls.certFile),
            key: readFileSync(config.tls.keyFile),
            minVersion: config.tls.minVersion,
            ...TLS_POLICY,
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
    metrics.requests.record(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
    next();
  });

  // The API speaks JSON only: a text/plain body is refused with 415 instead of reaching a handler as a string.
  app.removeContentTypeParser('text/plain');
  // A form post only where a route takes one (a SAML IdP's response); anywhere else 415.
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string' },
    (request, body, done) => {
      if (!declarationOf(request.routeOptions.config)?.formBody) {
        done(
          Object.assign(new Error('form bodies are not accepted here'), {
            code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE',
            statusCode: 415,
          }),
          undefined,
        );
        return;
      }
      // No prototype: a field named __proto__ is only a field.
      const fields: Record<string, string> = Object.create(null);
      for (const [name, value] of new URLSearchParams(body as string)) {
        // A name given twice is ambiguous: which one a check read and which one was used could differ.
        if (Object.hasOwn(fields, name)) {
          done(Object.assign(new Error('a form field is given twice'), { statusCode: 400 }), undefined);
          return;
        }
        fields[name] = value;
      }
      done(null, fields);
    },
  );
  // SCIM clients (Entra ID) send JSON as application/scim+json (RFC 7644 §3.1): the same parser.
  app.addContentTypeParser(
    'application/scim+json',
    { parseAs: 'string' },
    app.getDefaultJsonParser('error', 'error'),
  );
  // Cookies are never signed: the session token carries its own integrity (random + checksum). They
  // are parsed only where read (sessionCookieOf in session-guard.ts), not on every request, so
  // `request.cookies` stays empty: read the session cookie through sessionCookieOf.
  await app.register(cookie, { hook: false });
  installErrorHandling(app);

  const limiter = createRateLimiter(config.rateLimits, metrics, options.limiterStore);
  const answers = new ReadCache<RememberedAnswer>({
    maxEntries: ANSWERS_REMEMBERED,
    maxWeight: ANSWERS_MAX_CHARACTERS,
    weigh: (answer) => answer.json.length,
  });
  for (const route of routes) registerRoute(app, route, options, limiter, answers);
  return app;
}
