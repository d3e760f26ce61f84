import { canonicalJson, newId } from '@bulwark/protocol';
import type { Transact } from '../audit/audited-transaction.js';
import { AppError, NotFoundError, ValidationError } from '../errors.js';
import { assertCanGrant } from './access.service.js';
import { type AccessStore, createAccessStore, type RoleBindingRow, type RoleRow } from './access.store.js';
import { type CustomRole, rolePermissions } from './authorize.js';
import { type Caller, callerEvent } from './caller.js';
import { parseSelector } from './label-selector.js';
import {
  BUILT_IN_ROLE_NAMES,
  BUILT_IN_ROLES,
  isBuiltInRole,
  isCataloguePermission,
  PERMISSION_NAMES,
} from './permissions.js';

/** Custom roles and role bindings (ACC-3): every change is bounded by the caller's own permissions. */

export interface RoleView {
  id: string;
  name: string;
  builtIn: boolean;
  description: string;
  permissions: string[];
  includes: string[];
  /** Every permission the role grants, nested roles included. */
  effectivePermissions: string[];
}

type RoleMap = ReadonlyMap<string, CustomRole>;

export const MAX_CUSTOM_ROLES = 200;

function view(role: CustomRole, description: string, roles: RoleMap): RoleView {
  const effective = rolePermissions(role.id, roles);
  return {
    id: role.id,
    name: role.name,
    builtIn: false,
    description,
    permissions: role.permissions,
    includes: role.includes,
    effectivePermissions: PERMISSION_NAMES.filter((p) => effective.has(p)),
  };
}

const builtInViews: RoleView[] = BUILT_IN_ROLE_NAMES.map((name) => ({
  id: name,
  name,
  builtIn: true,
  description: BUILT_IN_ROLES[name].description,
  permissions: [...BUILT_IN_ROLES[name].permissions],
  includes: [],
  effectivePermissions: [...BUILT_IN_ROLES[name].permissions],
}));

function checkPermissions(permissions: string[]): void {
  const unknown = permissions.filter((p) => !isCataloguePermission(p));
  if (unknown.length > 0)
    throw new ValidationError([
      { path: 'body.permissions', message: `unknown permissions: ${unknown.join(', ')}` },
    ]);
}

/** A role may include built-in roles and other custom roles, but never itself through any path (no loops). */
function checkIncludes(roleId: string, includes: string[], roles: RoleMap): void {
  for (const included of includes)
    if (!isBuiltInRole(included) && !roles.has(included))
      throw new ValidationError([{ path: 'body.includes', message: `${included} is not a role` }]);
  const reaches = (from: string, seen: Set<string>): boolean => {
    if (from === roleId) return true;
    if (seen.has(from)) return false;
    seen.add(from);
    return (roles.get(from)?.includes ?? []).some((next) => reaches(next, seen));
  };
  if (includes.some((included) => reaches(included, new Set())))
    throw new ValidationError([{ path: 'body.includes', message: 'would make the role include itself' }]);
}

function checkName(name: string, roleId: string, roles: RoleMap): void {
  if (isBuiltInRole(name))
    throw new ValidationError([{ path: 'body.name', message: 'is the name of a built-in role' }]);
  if ([...roles.values()].some((role) => role.name === name && role.id !== roleId))
    throw new AppError(409, 'role_exists', 'A role with this name exists.');
}

export function createRolesService(deps: { store: AccessStore; transact: Transact; clock: () => number }) {
  const { store, transact, clock } = deps;

  return {
    async listRoles(orgId: string): Promise<RoleView[]> {
      const [rows, roles] = await Promise.all([store.listRoles(orgId), store.customRoles(orgId)]);
      return [...builtInViews, ...rows.map((row) => view(roles.get(row.id)!, row.description, roles))];
    },

    createRole(
      caller: Caller,
      input: { name: string; description: string; permissions: string[]; includes: string[] },
    ): Promise<RoleView> {
      checkPermissions(input.permissions);
      return transact(async (trx, events) => {
        const tx = createAccessStore(trx);
        const roles = await tx.customRoles(caller.org.id);
        if (roles.size >= MAX_CUSTOM_ROLES)
          throw new AppError(
            409,
            'too_many_roles',
            `An organization has at most ${MAX_CUSTOM_ROLES} custom roles.`,
          );
        const now = clock();
        const role: CustomRole = {
          id: newId('rol', now),
          name: input.name,
          permissions: [...new Set(input.permissions)].sort(),
          includes: [...new Set(input.includes)],
        };
        checkName(role.name, role.id, roles);
        checkIncludes(role.id, role.includes, roles);
        const after = new Map(roles).set(role.id, role);
        assertCanGrant(caller, 'create role', role.id, after);
        const row: RoleRow = {
          id: role.id,
          org_id: caller.org.id,
          name: role.name,
          description: input.description,
          permissions: canonicalJson(role.permissions),
          includes: canonicalJson(role.includes),
          created_at: now,
          updated_at: now,
        };
        await tx.insertRole(row);
        events.push(
          callerEvent(
            caller,
            'role.created',
            { type: 'role', id: role.id, display: role.name },
            {
              permissions: role.permissions,
              includes: role.includes,
            },
          ),
        );
        return view(role, row.description, after);
      });
    },

    updateRole(
      caller: Caller,
      roleId: string,
      input: { name?: string; description?: string; permissions?: string[]; includes?: string[] },
    ): Promise<RoleView> {
      if (input.permissions) checkPermissions(input.permissions);
      return transact(async (trx, events) => {
        const tx = createAccessStore(trx);
        const row = await tx.findRole(caller.org.id, roleId);
        if (!row) throw new NotFoundError('No such role.');
        const roles = await tx.customRoles(caller.org.id);
        const current = roles.get(roleId)!;
        const role: CustomRole = {
          id: roleId,
          name: input.name ?? current.name,
          permissions: input.permissions ? [...new Set(input.permissions)].sort() : current.permissions,
          includes: input.includes ? [...new Set(input.includes)] : current.includes,
        };
        checkName(role.name, roleId, roles);
        checkIncludes(roleId, role.includes, roles);
        const after = new Map(roles).set(roleId, role);
        // An edit changes what every holder of the role may do: both what it was and what it becomes
        // must be within the caller's reach.
        assertCanGrant(caller, 'edit role', roleId, roles);
        assertCanGrant(caller, 'edit role', roleId, after);
        const description = input.description ?? row.description;
        await tx.updateRole(
          caller.org.id,
          roleId,
          {
            name: role.name,
            description,
            permissions: canonicalJson(role.permissions),
            includes: canonicalJson(role.includes),
          },
          clock(),
        );
        events.push(
          callerEvent(
            caller,
            'role.updated',
            { type: 'role', id: roleId, display: role.name },
            {
              permissions: role.permissions,
              includes: role.includes,
            },
          ),
        );
        return view(role, description, after);
      });
    },

    deleteRole(caller: Caller, roleId: string): Promise<void> {
      return transact(async (trx, events) => {
        const tx = createAccessStore(trx);
        const role = await tx.findRole(caller.org.id, roleId);
        if (!role) throw new NotFoundError('No such role.');
        const use = await tx.roleUse(caller.org.id, roleId);
        if (use.members > 0 || use.includedBy.length > 0 || use.invitations > 0)
          throw new AppError(
            409,
            'role_in_use',
            'The role is held by members, pending invitations or other roles; reassign them first.',
          );
        assertCanGrant(caller, 'delete role', roleId, await tx.customRoles(caller.org.id));
        await tx.deleteRole(caller.org.id, roleId);
        events.push(callerEvent(caller, 'role.deleted', { type: 'role', id: roleId, display: role.name }));
      });
    },

    listBindings: (orgId: string) => store.listBindings(orgId),

    createBinding(
      caller: Caller,
      input: { role: string; subject: { type: 'user' | 'team'; id: string }; selector?: string | undefined },
    ): Promise<RoleBindingRow> {
      let selector: string | null = null;
      if (input.selector !== undefined) {
        const parsed = parseSelector(input.selector);
        if ('problem' in parsed)
          throw new ValidationError([{ path: 'body.selector', message: parsed.problem }]);
        selector = parsed.text;
      }
      return transact(async (trx, events) => {
        const tx = createAccessStore(trx);
        if (!(await tx.subjectExists(caller.org.id, input.subject.type, input.subject.id)))
          throw new NotFoundError(`No such ${input.subject.type === 'user' ? 'member' : 'team'}.`);
        assertCanGrant(caller, 'bind role', input.role, await tx.customRoles(caller.org.id));
        const now = clock();
        const row: RoleBindingRow = {
          id: newId('rbd', now),
          org_id: caller.org.id,
          role: input.role,
          subject_type: input.subject.type,
          subject_id: input.subject.id,
          selector,
          created_by: caller.userId,
          created_at: now,
        };
        await tx.insertBinding(row);
        events.push(
          callerEvent(
            caller,
            'role_binding.created',
            { type: 'role_binding', id: row.id },
            {
              role: row.role,
              subjectType: row.subject_type,
              subjectId: row.subject_id,
              selector,
            },
          ),
        );
        return row;
      });
    },

    deleteBinding(caller: Caller, bindingId: string): Promise<void> {
      return transact(async (trx, events) => {
        const tx = createAccessStore(trx);
        const binding = await tx.findBinding(caller.org.id, bindingId);
        if (!binding) throw new NotFoundError('No such role binding.');
        // Taking access away is bounded too: only someone who could have granted it may remove it.
        assertCanGrant(caller, 'unbind role', binding.role, await tx.customRoles(caller.org.id));
        await tx.deleteBinding(caller.org.id, bindingId);
        events.push(
          callerEvent(
            caller,
            'role_binding.deleted',
            { type: 'role_binding', id: bindingId },
            {
              role: binding.role,
              subjectType: binding.subject_type,
              subjectId: binding.subject_id,
            },
          ),
        );
      });
    },
  };
}

export type RolesService = ReturnType<typeof createRolesService>;
