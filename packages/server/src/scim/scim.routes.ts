import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type Principal, type RouteDefinition } from '../http/route.js';
import { Done, done, iso, OrgSlug, RoleRef, TeamId, UserId } from '../http/schemas.js';
import { SCIM_PERMISSION } from '../identity/session-guard.js';
import type { ScimCaller, ScimService } from './scim.service.js';
import { filterOf, page } from './scim-input.js';
import {
  MAX_PAGE,
  resourceTypes,
  SCIM_CONTENT_TYPE,
  type ScimGroup,
  type ScimUser,
  schemas,
  serviceProviderConfig,
} from './scim-resources.js';
import type { ScimSettingsService, ScimSettingsView } from './scim-settings.service.js';

/** Where an organization's SCIM endpoints live: the "tenant URL" or "base URL" its provider is given. */
export const scimBasePath = (orgSlug: string) => `/scim/v2/${orgSlug}`;

const Meta = z.object({
  resourceType: z.string(),
  created: z.string(),
  lastModified: z.string(),
  location: z.string(),
  version: z.string(),
});
const Ref = z.object({ value: z.string(), display: z.string() });
const UserResource = z.object({
  schemas: z.array(z.string()),
  id: z.string(),
  externalId: z.string().optional(),
  userName: z.string(),
  displayName: z.string(),
  name: z.object({ formatted: z.string() }),
  emails: z.array(z.object({ value: z.string(), primary: z.boolean(), type: z.string() })),
  active: z.boolean(),
  groups: z.array(Ref),
  meta: Meta,
});
const GroupResource = z.object({
  schemas: z.array(z.string()),
  id: z.string(),
  externalId: z.string().optional(),
  displayName: z.string(),
  members: z.array(Ref).optional(),
  meta: Meta,
});
const ListOf = (resource: z.ZodType) =>
  z.object({
    schemas: z.array(z.string()),
    totalResults: z.number(),
    startIndex: z.number(),
    itemsPerPage: z.number(),
    Resources: z.array(resource),
  });
const Described = z.object({}).catchall(z.unknown()).describe('As RFC 7643 §5-7 describe it');

/**
 * A SCIM body: identity providers send many attributes Bulwark does not keep, which RFC 7643 lets a
 * service provider ignore, so the route takes any JSON object and the service reads what it keeps,
 * strictly (scim-input.ts).
 */
const ScimBody = z.record(z.string(), z.unknown());
const Attributes = z.string().max(512).optional().describe('Comma-separated attribute names');
const ListQuery = z.strictObject({
  filter: z.string().max(1024).optional().describe('e.g. userName eq "ada@example.com"'),
  startIndex: z.coerce.number().int().min(1).max(1_000_000).optional(),
  count: z.coerce
    .number()
    .int()
    .min(0)
    .max(1_000_000)
    .optional()
    .describe(`At most ${MAX_PAGE} are returned`),
  attributes: Attributes,
  excludedAttributes: Attributes,
});
const OneQuery = z.strictObject({ attributes: Attributes, excludedAttributes: Attributes });

const GroupRoles = z
  .array(z.strictObject({ group: z.string().trim().min(1).max(100), role: RoleRef }))
  .max(100)
  .describe('The first SCIM group (by name) a person is in decides their role; else the default role');
const Settings = z.object({
  enabled: z.boolean(),
  baseUrl: z.string().describe('The SCIM base URL to give the identity provider'),
  tokenHint: z.string().nullable(),
  defaultRole: z.string(),
  groupRoles: z.array(z.object({ group: z.string(), role: z.string() })),
  rotatedAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
});
const SettingsWithToken = z.object({
  settings: Settings,
  token: z.string().optional().describe('Shown once: give it to the identity provider'),
});

/** Every SCIM endpoint: the organization's SCIM token, and nothing else (session-guard.ts). */
const SCIM_ROUTE: Pick<RouteDefinition, 'tags' | 'access'> = {
  tags: ['scim'],
  access: { permission: SCIM_PERMISSION },
};

function originOf(publicUrl: string | undefined, request: FastifyRequest): string {
  return publicUrl ? publicUrl.replace(/\/+$/, '') : `${request.protocol}://${request.host}`;
}

/** Drops the attributes a provider asked to leave out (Entra ID reads groups without their members). */
function without<T extends object>(resource: T, excluded: string | undefined): T {
  if (!excluded) return resource;
  const names = new Set(excluded.split(',').map((name) => name.trim().toLowerCase()));
  return Object.fromEntries(
    Object.entries(resource).filter(
      ([key]) => !names.has(key.toLowerCase()) || key === 'id' || key === 'schemas',
    ),
  ) as T;
}

function answer<T extends { meta: { version: string; location: string } }>(
  reply: FastifyReply,
  resource: T,
  created = false,
) {
  reply.type(SCIM_CONTENT_TYPE).header('etag', resource.meta.version);
  if (created) reply.code(201).header('location', resource.meta.location);
  return resource;
}

/**
 * The SCIM 2.0 endpoints an organization's identity provider calls (SSO-5), under
 * `/scim/v2/<org>`, with the organization's SCIM token; and the settings that turn SCIM on, rotate
 * its token and map its groups to roles, under `/api/orgs/<org>/scim`.
 */
export function scimRoutes(deps: {
  scim: ScimService;
  settings: ScimSettingsService;
  publicUrl: string | undefined;
}): RouteDefinition[] {
  const { scim, settings, publicUrl } = deps;

  const callerFrom = (
    principal: Principal | undefined,
    request: FastifyRequest,
    slug: string,
  ): ScimCaller => ({
    orgId: principal!.scimOrgId!,
    base: `${originOf(publicUrl, request)}${scimBasePath(slug)}`,
    context: auditContextOf(request),
  });
  const ifMatch = (request: FastifyRequest) => {
    const header = request.headers['if-match'];
    return typeof header === 'string' ? header : undefined;
  };
  const presentSettings = (view: ScimSettingsView, request: FastifyRequest, slug: string) => ({
    ...view,
    baseUrl: `${originOf(publicUrl, request)}${scimBasePath(slug)}`,
    rotatedAt: view.rotatedAt === null ? null : iso(view.rotatedAt),
    lastUsedAt: view.lastUsedAt === null ? null : iso(view.lastUsedAt),
  });

  const listRoute = (
    resource: 'Users' | 'Groups',
    list: (caller: ScimCaller) => Promise<Array<ScimUser | ScimGroup>>,
  ) =>
    defineRoute({
      ...SCIM_ROUTE,
      method: 'GET',
      url: `/scim/v2/:org/${resource}`,
      operationId: `listScim${resource}`,
      summary: `SCIM: list ${resource}, with filter and paging`,
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: ListQuery,
      response: { 200: ListOf(resource === 'Users' ? UserResource : GroupResource) },
      handler: async ({ principal, request, reply, params, query }) => {
        const matches = filterOf(query.filter);
        const found = (await list(callerFrom(principal, request, params.org))).filter(matches);
        reply.type(SCIM_CONTENT_TYPE);
        const answered = page(found, query.startIndex, query.count);
        return {
          ...answered,
          Resources: answered.Resources.map((r) => without(r, query.excludedAttributes)),
        };
      },
    });

  const resourceRoutes = (
    resource: 'Users' | 'Groups',
    ops: {
      get: (caller: ScimCaller, id: string) => Promise<ScimUser | ScimGroup>;
      create: (caller: ScimCaller, body: unknown) => Promise<ScimUser | ScimGroup>;
      replace: (
        caller: ScimCaller,
        id: string,
        body: unknown,
        ifMatch?: string,
      ) => Promise<ScimUser | ScimGroup>;
      patch: (
        caller: ScimCaller,
        id: string,
        body: unknown,
        ifMatch?: string,
      ) => Promise<ScimUser | ScimGroup>;
      remove: (caller: ScimCaller, id: string, ifMatch?: string) => Promise<void>;
    },
  ) => {
    const one = resource.slice(0, -1);
    const Resource = resource === 'Users' ? UserResource : GroupResource;
    // The ids Bulwark gave: a user's for a User, a team's for a Group.
    const param = resource === 'Users' ? 'user' : 'team';
    const Params =
      resource === 'Users'
        ? z.strictObject({ org: OrgSlug, user: UserId })
        : z.strictObject({ org: OrgSlug, team: TeamId });
    const idOf = (params: { user: string } | { team: string }) =>
      'user' in params ? params.user : params.team;
    return [
      defineRoute({
        ...SCIM_ROUTE,
        method: 'POST',
        url: `/scim/v2/:org/${resource}`,
        operationId: `createScim${one}`,
        summary: `SCIM: create a ${one}`,
        rateLimit: 'write',
        params: z.strictObject({ org: OrgSlug }),
        body: ScimBody,
        response: { 201: Resource },
        handler: async ({ principal, request, reply, params, body }) =>
          answer(reply, await ops.create(callerFrom(principal, request, params.org), body), true),
      }),
      defineRoute({
        ...SCIM_ROUTE,
        method: 'GET',
        url: `/scim/v2/:org/${resource}/:${param}`,
        operationId: `getScim${one}`,
        summary: `SCIM: one ${one}`,
        rateLimit: 'read',
        params: Params,
        query: OneQuery,
        response: { 200: Resource },
        handler: async ({ principal, request, reply, params, query }) =>
          answer(
            reply,
            without(
              await ops.get(callerFrom(principal, request, params.org), idOf(params)),
              query.excludedAttributes,
            ),
          ),
      }),
      defineRoute({
        ...SCIM_ROUTE,
        method: 'PUT',
        url: `/scim/v2/:org/${resource}/:${param}`,
        operationId: `replaceScim${one}`,
        summary: `SCIM: replace a ${one}; If-Match is honoured`,
        rateLimit: 'write',
        params: Params,
        body: ScimBody,
        response: { 200: Resource },
        handler: async ({ principal, request, reply, params, body }) =>
          answer(
            reply,
            await ops.replace(
              callerFrom(principal, request, params.org),
              idOf(params),
              body,
              ifMatch(request),
            ),
          ),
      }),
      defineRoute({
        ...SCIM_ROUTE,
        method: 'PATCH',
        url: `/scim/v2/:org/${resource}/:${param}`,
        operationId: `patchScim${one}`,
        summary: `SCIM: change a ${one} with PatchOp operations; If-Match is honoured`,
        rateLimit: 'write',
        params: Params,
        body: ScimBody,
        response: { 200: Resource },
        handler: async ({ principal, request, reply, params, body }) =>
          answer(
            reply,
            await ops.patch(callerFrom(principal, request, params.org), idOf(params), body, ifMatch(request)),
          ),
      }),
      defineRoute({
        ...SCIM_ROUTE,
        method: 'DELETE',
        url: `/scim/v2/:org/${resource}/:${param}`,
        operationId: `deleteScim${one}`,
        summary:
          resource === 'Users'
            ? 'SCIM: deprovision a User: their membership, sessions and API keys here end at once'
            : 'SCIM: delete a Group (the team it made)',
        rateLimit: 'write',
        params: Params,
        response: { 204: z.null().describe('Deleted') },
        handler: async ({ principal, request, reply, params }) => {
          await ops.remove(callerFrom(principal, request, params.org), idOf(params), ifMatch(request));
          reply.code(204);
          return null;
        },
      }),
    ];
  };

  return [
    defineRoute({
      ...SCIM_ROUTE,
      method: 'GET',
      url: '/scim/v2/:org/ServiceProviderConfig',
      operationId: 'getScimServiceProviderConfig',
      summary: 'SCIM: what this service provider supports',
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: Described },
      handler: ({ reply, request }) => {
        reply.type(SCIM_CONTENT_TYPE);
        return serviceProviderConfig(`${originOf(publicUrl, request)}/docs/sso.md#scim`);
      },
    }),
    defineRoute({
      ...SCIM_ROUTE,
      method: 'GET',
      url: '/scim/v2/:org/ResourceTypes',
      operationId: 'listScimResourceTypes',
      summary: 'SCIM: the resource types served (User, Group)',
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: ListOf(Described) },
      handler: ({ reply, request, params }) => {
        reply.type(SCIM_CONTENT_TYPE);
        return page(resourceTypes(`${originOf(publicUrl, request)}${scimBasePath(params.org)}`), 1, MAX_PAGE);
      },
    }),
    defineRoute({
      ...SCIM_ROUTE,
      method: 'GET',
      url: '/scim/v2/:org/Schemas',
      operationId: 'listScimSchemas',
      summary: 'SCIM: the attributes kept of Users and Groups',
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: ListOf(Described) },
      handler: ({ reply, request, params }) => {
        reply.type(SCIM_CONTENT_TYPE);
        return page(schemas(`${originOf(publicUrl, request)}${scimBasePath(params.org)}`), 1, MAX_PAGE);
      },
    }),
    listRoute('Users', (caller) => scim.listUsers(caller)),
    ...resourceRoutes('Users', {
      get: scim.getUser,
      create: scim.createUser,
      replace: scim.replaceUser,
      patch: scim.patchUser,
      remove: scim.deleteUser,
    }),
    listRoute('Groups', (caller) => scim.listGroups(caller)),
    ...resourceRoutes('Groups', {
      get: scim.getGroup,
      create: scim.createGroup,
      replace: scim.replaceGroup,
      patch: scim.patchGroup,
      remove: scim.deleteGroup,
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/scim',
      operationId: 'getScimSettings',
      summary: 'Whether SCIM provisioning is on, its base URL, token hint and role mappings',
      tags: ['scim'],
      access: { permission: 'security_configuration:manage' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: Settings },
      handler: async ({ principal, request, params }) =>
        presentSettings(await settings.current(principal!.org!.id), request, params.org),
    }),
    defineRoute({
      method: 'PUT',
      url: '/api/orgs/:org/scim',
      operationId: 'configureScim',
      summary: 'Turn SCIM provisioning on (the answer holds its token, once) or change its roles',
      tags: ['scim'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({ defaultRole: RoleRef, groupRoles: GroupRoles.default([]) }),
      response: { 200: SettingsWithToken },
      handler: async ({ principal, request, params, body }) => {
        const result = await settings.configure(callerOf(principal, request), body);
        return { ...result, settings: presentSettings(result.settings, request, params.org) };
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/scim/token',
      operationId: 'rotateScimToken',
      summary: 'A new SCIM token, shown once; the old one stops working at once',
      tags: ['scim'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: SettingsWithToken },
      handler: async ({ principal, request, params }) => {
        const result = await settings.rotate(callerOf(principal, request));
        return { ...result, settings: presentSettings(result.settings, request, params.org) };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/scim',
      operationId: 'disableScim',
      summary: 'Turn SCIM provisioning off; its token stops working, the people and teams it made stay',
      tags: ['scim'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: Done },
      handler: async ({ principal, request }) => {
        await settings.disable(callerOf(principal, request));
        return done;
      },
    }),
  ];
}
