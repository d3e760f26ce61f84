import { z } from 'zod';
import { ValidationError } from '../errors.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import {
  BindingId,
  Description,
  DisplayText,
  Done,
  done,
  iso,
  OrgSlug,
  RoleId,
  RoleRef,
  Timestamp,
  UserId,
} from '../http/schemas.js';
import type { AccessService } from './access.service.js';
import { callerOf } from './caller.js';
import { parseLabels } from './label-selector.js';
import { PERMISSION_NAMES, PERMISSIONS } from './permissions.js';
import type { RolesService } from './roles.service.js';

const OrgParams = z.strictObject({ org: OrgSlug });
const Permission = z.string().regex(/^[a-z_]+:[a-z_]+$/, 'is not resource:verb');

const RoleView = z.object({
  id: z.string(),
  name: z.string(),
  builtIn: z.boolean(),
  description: z.string(),
  permissions: z.array(z.string()),
  includes: z.array(z.string()),
  effectivePermissions: z.array(z.string()),
});

const BindingView = z.object({
  id: z.string(),
  role: z.string(),
  subject: z.object({ type: z.enum(['user', 'team']), id: z.string() }),
  selector: z.string().nullable(),
  createdBy: z.string(),
  createdAt: Timestamp,
});

const bindingView = (row: {
  id: string;
  role: string;
  subject_type: 'user' | 'team';
  subject_id: string;
  selector: string | null;
  created_by: string;
  created_at: number;
}) => ({
  id: row.id,
  role: row.role,
  subject: { type: row.subject_type, id: row.subject_id },
  selector: row.selector,
  createdBy: row.created_by,
  createdAt: iso(row.created_at),
});

const Decision = z.object({
  allowed: z.boolean(),
  permission: z.string(),
  userId: z.string(),
  reason: z.string(),
  matched: z.array(
    z.object({ role: z.string(), roleName: z.string(), via: z.string(), selector: z.string().nullable() }),
  ),
});

const RoleBody = {
  name: DisplayText(64),
  description: Description,
  permissions: z.array(Permission).max(PERMISSION_NAMES.length),
  includes: z.array(RoleRef).max(20),
};

export function accessRoutes(deps: { access: AccessService; roles: RolesService }): RouteDefinition[] {
  const { access, roles } = deps;
  return [
    defineRoute({
      method: 'GET',
      url: '/api/permissions',
      operationId: 'listPermissions',
      summary: 'The permission catalogue',
      tags: ['access'],
      access: { permission: 'self:manage' },
      rateLimit: 'read',
      response: {
        200: z.object({ permissions: z.array(z.object({ name: z.string(), description: z.string() })) }),
      },
      handler: () => ({
        permissions: PERMISSION_NAMES.map((name) => ({ name, description: PERMISSIONS[name] })),
      }),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/access/me',
      operationId: 'getMyAccess',
      summary:
        'What you may do in this organization (for showing or hiding controls; the server still decides each request)',
      tags: ['access'],
      access: { permission: 'org:read' },
      rateLimit: 'read',
      params: OrgParams,
      response: {
        200: z.object({
          org: z.object({ id: z.string(), slug: z.string(), name: z.string() }),
          role: z.string(),
          permissions: z.array(z.string()),
          scoped: z.array(
            z.object({ selector: z.string(), role: z.string(), permissions: z.array(z.string()) }),
          ),
        }),
      },
      handler: ({ principal, request }) => access.capabilities(callerOf(principal, request)),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/access/explain',
      operationId: 'explainAccess',
      summary:
        'Why a member is or is not allowed a permission, on the organization or on an agent with given labels',
      tags: ['access'],
      access: { permission: 'roles:read' },
      rateLimit: 'read',
      params: OrgParams,
      query: z.strictObject({
        permission: Permission,
        user: UserId.optional(),
        labels: z.string().max(1000).optional().describe('Agent labels as key=value,key=value'),
      }),
      response: { 200: Decision },
      handler: ({ principal, request, query }) => {
        const caller = callerOf(principal, request);
        let labels: Record<string, string> | undefined;
        if (query.labels !== undefined) {
          const parsed = parseLabels(query.labels);
          if ('problem' in parsed)
            throw new ValidationError([{ path: 'query.labels', message: parsed.problem }]);
          labels = { ...parsed };
        }
        return access.explain(caller, {
          userId: query.user ?? caller.userId,
          permission: query.permission,
          ...(labels ? { labels } : {}),
        });
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/roles',
      operationId: 'listRoles',
      summary: 'Built-in and custom roles with their permissions',
      tags: ['access'],
      access: { permission: 'roles:read' },
      rateLimit: 'read',
      params: OrgParams,
      response: { 200: z.object({ roles: z.array(RoleView) }) },
      handler: async ({ principal }) => ({ roles: await roles.listRoles(principal!.org!.id) }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/roles',
      operationId: 'createRole',
      summary: 'Create a custom role; its permissions must all be yours',
      tags: ['access'],
      access: { permission: 'roles:manage', privileged: true },
      rateLimit: 'write',
      params: OrgParams,
      body: z.strictObject({
        ...RoleBody,
        description: RoleBody.description.default(''),
        includes: RoleBody.includes.default([]),
      }),
      response: { 201: RoleView },
      handler: ({ principal, request, body }) => roles.createRole(callerOf(principal, request), body),
    }),

    defineRoute({
      method: 'PATCH',
      url: '/api/orgs/:org/roles/:role',
      operationId: 'updateRole',
      summary: 'Edit a custom role; the result must be within your own permissions',
      tags: ['access'],
      access: { permission: 'roles:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, role: RoleId }),
      body: z.strictObject({
        name: RoleBody.name.optional(),
        description: RoleBody.description.optional(),
        permissions: RoleBody.permissions.optional(),
        includes: RoleBody.includes.optional(),
      }),
      response: { 200: RoleView },
      handler: ({ principal, request, params, body }) =>
        roles.updateRole(callerOf(principal, request), params.role, body),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/roles/:role',
      operationId: 'deleteRole',
      summary: 'Delete a custom role that no member, invitation or role holds; its bindings go with it',
      tags: ['access'],
      access: { permission: 'roles:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, role: RoleId }),
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await roles.deleteRole(callerOf(principal, request), params.role);
        return done;
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/role-bindings',
      operationId: 'listRoleBindings',
      summary: 'Roles granted to members or teams, org-wide or on agents matching a label selector',
      tags: ['access'],
      access: { permission: 'roles:read' },
      rateLimit: 'read',
      params: OrgParams,
      response: { 200: z.object({ bindings: z.array(BindingView) }) },
      handler: async ({ principal }) => ({
        bindings: (await roles.listBindings(principal!.org!.id)).map(bindingView),
      }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/role-bindings',
      operationId: 'createRoleBinding',
      summary: 'Grant a role to a member or a team, optionally only on agents matching a label selector',
      tags: ['access'],
      access: { permission: 'roles:manage', privileged: true },
      rateLimit: 'write',
      params: OrgParams,
      body: z.strictObject({
        role: RoleRef,
        subject: z.strictObject({ type: z.enum(['user', 'team']), id: z.string().max(64) }),
        selector: z.string().max(1000).optional(),
      }),
      response: { 201: BindingView },
      handler: async ({ principal, request, body }) =>
        bindingView(await roles.createBinding(callerOf(principal, request), body)),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/role-bindings/:binding',
      operationId: 'deleteRoleBinding',
      summary: 'Remove a role binding',
      tags: ['access'],
      access: { permission: 'roles:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, binding: BindingId }),
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await roles.deleteBinding(callerOf(principal, request), params.binding);
        return done;
      },
    }),
  ];
}
