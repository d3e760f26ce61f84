import type { FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { AccessSnapshot } from '../access/authorize.js';
import type { LiveSession } from '../identity/sessions.service.js';

/**
 * The route declaration every HTTP route is made from. Nothing registers without one (invariant 1,
 * default deny): a route states who may call it (a permission, or `public` with the reason it is
 * safe to be public), the zod schemas of its params, query, body and every response, its rate-limit
 * class and its operationId. The same declaration drives validation, response filtering, rate
 * limiting, authorization and the OpenAPI document.
 */

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** `resource:verb`; the catalogue itself arrives with access control. */
export type Permission = `${string}:${string}`;

/**
 * `privileged` routes (role changes, session revocation, security settings: MFA-5) also need a
 * sign-in or re-authentication within the step-up window.
 */
export type RouteAccess =
  | {
      permission: Permission;
      privileged?: true;
      /** Open to a session still waiting for its second factor (that step itself, sign-out, the session view). */
      beforeSecondFactor?: true;
    }
  | { public: string };

/**
 * Rate-limit classes. `probe` is unlimited on purpose: liveness and readiness probes must keep
 * answering under a flood, or the orchestrator restarts a healthy server.
 */
export const RATE_LIMIT_CLASSES = ['probe', 'read', 'write', 'auth', 'export'] as const;
export type RateLimitClass = (typeof RATE_LIMIT_CLASSES)[number];

/** A response that is not JSON (Prometheus text, a streamed CSV): sent as the handler returns it. */
export interface RawResponse {
  raw: true;
  contentType: string;
  description: string;
}

export function rawResponse(contentType: string, description: string): RawResponse {
  return { raw: true, contentType, description };
}

export type ResponseSpec = z.ZodType | RawResponse;

/** The organization an `/api/orgs/:org/…` route acts in, and the caller's access there. */
export interface OrgContext {
  id: string;
  slug: string;
  name: string;
  /** The caller's membership role (a built-in name or a custom role id). */
  role: string;
  /** The organization's policy: members without a second factor reach only enrolment (MFA-4). */
  mfaRequired: boolean;
  /** Members reach the organization only through its SSO connections, but for the break-glass owner (SSO-4). */
  ssoRequired: boolean;
  /** The owner who may still sign in with a password and a second factor when SSO is required (AUTH-8). */
  breakGlassUserId: string | null;
  access: AccessSnapshot;
}

/** Who is calling, as the guard established it. */
export interface Principal {
  type: 'user' | 'api_key' | 'scim';
  /** The user's id, or the API key's. */
  id: string;
  /** The user acting: the signed-in person, or the member an API key acts for. */
  userId: string;
  display: string;
  /** An API key's organization: the only one it acts in. */
  keyOrgId?: string;
  /** An API key that holds `apikeys:use_privileged`: privileged routes and step-up rules let it through. */
  stepUpExempt?: boolean;
  /** A SCIM token's organization: SCIM routes act there and nowhere else. */
  scimOrgId?: string;
  /** The browser session the call came with, when it came with one. */
  session?: LiveSession;
  /** Set on organization routes: the guard has checked membership and the route's permission. */
  org?: OrgContext;
}

export interface RouteContext<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  request: FastifyRequest;
  reply: FastifyReply;
  /** Set on permission routes; undefined on public ones. */
  principal: Principal | undefined;
  /**
   * Runs the route's guard again on the same request, for work that outlives the request's start (a
   * live stream): the session or key, the membership and the permission as they are now. Throws the
   * guard's refusal when any of them has gone.
   */
  reauthorize: () => Promise<Principal | undefined>;
  /**
   * On a `reuseAnswers` route: the answer also depends on something outside the database (an agent's
   * live connection); it is given again only while `stillCurrent` answers true.
   */
  reusableWhile: (stillCurrent: () => boolean) => void;
}

type Infer<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteDefinition<
  P extends z.ZodType | undefined = z.ZodType | undefined,
  Q extends z.ZodType | undefined = z.ZodType | undefined,
  B extends z.ZodType | undefined = z.ZodType | undefined,
> {
  method: HttpMethod;
  url: string;
  operationId: string;
  summary: string;
  tags?: string[];
  access: RouteAccess;
  rateLimit: RateLimitClass;
  /**
   * Runs before the request body is read, right after the rate limit: throws an AppError to refuse
   * a request that would be refused anyway (sign-in while password hashing is at capacity), so that a
   * flood of them costs as little as possible.
   */
  admit?: () => void;
  /**
   * Takes an HTML form post (application/x-www-form-urlencoded) as its body: only for what a browser
   * is made to post by another site (a SAML IdP's response). Every other route refuses it (415), so a
   * cross-site form cannot reach the JSON API.
   */
  formBody?: true;
  params?: P;
  query?: Q;
  body?: B;
  /**
   * Every status the route answers with on success (errors share the one error shape). Use z.object
   * here: the response is re-parsed through it and undeclared fields are stripped.
   */
  response: Record<number, ResponseSpec>;
  /**
   * A GET whose answer depends only on the database, the caller and the URL: the same caller asking
   * for the same URL again, while the database has not changed since (db/read-cache.ts, SQLite
   * only), gets the same answer without the handler running again. The guard still runs every time.
   * Not for an answer that depends on the session used or on the clock.
   */
  reuseAnswers?: true;
  handler: (context: RouteContext<Infer<P>, Infer<Q>, Infer<B>>) => Promise<unknown> | unknown;
}

/** Infers the handler's types from the schemas; the result is an ordinary RouteDefinition. */
export function defineRoute<
  P extends z.ZodType | undefined = undefined,
  Q extends z.ZodType | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(definition: RouteDefinition<P, Q, B>): RouteDefinition {
  return definition as unknown as RouteDefinition;
}

export function isRawResponse(spec: ResponseSpec): spec is RawResponse {
  return (spec as RawResponse).raw === true;
}

/**
 * Finds an object schema that would let unknown keys through. Request schemas must be strict
 * (`z.strictObject`) at every depth, so a misspelt or injected field is a 422, never silently ignored.
 */
export function findLooseObject(schema: z.ZodType, path = ''): string | undefined {
  const def = (schema as unknown as { _zod: { def: Record<string, unknown> } })._zod.def;
  switch (def.type) {
    case 'object': {
      const catchall = def.catchall as z.ZodType | undefined;
      const strict =
        catchall !== undefined &&
        (catchall as unknown as { _zod: { def: { type: string } } })._zod.def.type === 'never';
      if (!strict) return path || '(root)';
      for (const [key, child] of Object.entries(def.shape as Record<string, z.ZodType>)) {
        const found = findLooseObject(child, `${path}.${key}`);
        if (found) return found;
      }
      return undefined;
    }
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return findLooseObject(def.innerType as z.ZodType, path);
    case 'array':
      return findLooseObject(def.element as z.ZodType, `${path}[]`);
    case 'union':
      for (const option of def.options as z.ZodType[]) {
        const found = findLooseObject(option, path);
        if (found) return found;
      }
      return undefined;
    case 'pipe':
      return findLooseObject(def.in as z.ZodType, path);
    case 'record':
      return findLooseObject(def.valueType as z.ZodType, `${path}{}`);
    case 'tuple': {
      const items = [...(def.items as z.ZodType[]), ...(def.rest ? [def.rest as z.ZodType] : [])];
      for (const [index, item] of items.entries()) {
        const found = findLooseObject(item, `${path}[${index}]`);
        if (found) return found;
      }
      return undefined;
    }
    case 'intersection':
      return findLooseObject(def.left as z.ZodType, path) ?? findLooseObject(def.right as z.ZodType, path);
    case 'lazy':
      return findLooseObject((def.getter as () => z.ZodType)(), path);
    default:
      return undefined;
  }
}

/** Problems with a declaration, empty when it is complete. Registration refuses a route with any. */
export function declarationProblems(route: Partial<RouteDefinition>): string[] {
  const problems: string[] = [];
  if (!route.operationId || !/^[a-z][A-Za-z0-9]+$/.test(route.operationId))
    problems.push('operationId (camelCase) is required');
  if (!route.summary) problems.push('summary is required');
  const access = route.access as Partial<{ permission: string; public: string }> | undefined;
  if (!access || (access.permission === undefined && access.public === undefined)) {
    problems.push('access must declare a permission or public with a reason');
  } else if (access.public !== undefined && access.public.trim().length < 10) {
    problems.push('a public route must say why it is safe to be public');
  } else if (access.permission !== undefined && !/^[a-z_]+:[a-z_]+$/.test(access.permission)) {
    problems.push('permission must be resource:verb');
  }
  if (!route.rateLimit || !RATE_LIMIT_CLASSES.includes(route.rateLimit))
    problems.push('rateLimit class is required');
  if (!route.response || Object.keys(route.response).length === 0)
    problems.push('at least one response schema is required');
  for (const part of ['params', 'query', 'body'] as const) {
    const schema = route[part];
    if (schema) {
      const loose = findLooseObject(schema);
      if (loose) problems.push(`${part} schema lets unknown keys through at ${loose}; use z.strictObject`);
    }
  }
  // An answer is kept per caller and URL: a route about the caller's own session, or one outside an
  // organization, could depend on more than that.
  if (
    route.reuseAnswers &&
    (route.method !== 'GET' ||
      access?.permission === undefined ||
      access.permission === 'self:manage' ||
      !route.url?.startsWith('/api/orgs/:org/'))
  )
    problems.push('only an organization GET with a permission may reuse its answers');
  const urlParams = [...(route.url ?? '').matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]);
  if (urlParams.length > 0 && !route.params)
    problems.push('params schema is required for a URL with parameters');
  return problems;
}
