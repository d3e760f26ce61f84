import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor, AuditRequestContext } from '../audit/audit.types.js';
import { DeniedError } from '../audit/audited-transaction.js';
import { type Generation, ReadCache } from '../db/read-cache.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../errors.js';
import type { OrgContext } from '../http/route.js';
import type { AccessStore } from './access.store.js';
import {
  type AccessResource,
  type AccessSnapshot,
  type Decision,
  decide,
  orgWidePermissions,
  roleName,
  rolePermissions,
} from './authorize.js';
import { type Caller, callerEvent } from './caller.js';
import type { Labels } from './label-selector.js';
import { AGENT_SCOPED_PERMISSIONS, type CataloguePermission, isBuiltInRole } from './permissions.js';

/**
 * Loads a member's access for each request and answers questions about it (ACC-4). Anything that
 * hands out access — a role, a binding, an invitation, a team membership, an edit of a role — is
 * bounded by what the caller holds org-wide (`assertCanGrant`): nobody grants what they do not have,
 * so nobody raises their own access by proxy (ACC-5).
 */

/** Refused because the caller would hand out more than they hold; recorded as `access.denied`. */
export function exceedsYourPermissions(caller: Caller, operation: string, role: string, missing: string[]) {
  return new DeniedError(
    403,
    'exceeds_your_permissions',
    `You cannot grant permissions you do not hold yourself: ${missing.join(', ')}.`,
    callerEvent(
      caller,
      'access.denied',
      { type: 'role', id: role },
      { reason: 'exceeds_your_permissions', operation, missing },
      'denied',
    ),
  );
}

/**
 * Throws unless every permission `role` grants is one the caller holds org-wide. `customRoles` is the
 * organization's roles as they will be (an edit is checked on its result).
 */
export function assertCanGrant(
  caller: Caller,
  operation: string,
  role: string,
  customRoles: AccessSnapshot['customRoles'],
): void {
  if (!isBuiltInRole(role) && !customRoles.has(role))
    throw new ValidationError([{ path: 'body.role', message: 'is not a role of this organization' }]);
  const held = orgWidePermissions(caller.org.access);
  const missing = [...rolePermissions(role, customRoles)].filter((p) => !held.has(p));
  if (missing.length > 0) throw exceedsYourPermissions(caller, operation, role, missing);
}

/** Records a refused permission; shared by the guard and the services. */
export async function recordDenial(
  audit: AuditService,
  denial: {
    orgId: string | null;
    actor: AuditActor;
    context: AuditRequestContext;
    permission: string;
    reason: string;
    route?: string;
  },
): Promise<void> {
  await audit.record({
    orgId: denial.orgId,
    actor: denial.actor,
    action: 'access.denied',
    target: denial.route ? { type: 'route', id: denial.route } : null,
    outcome: 'denied',
    context: denial.context,
    details: { permission: denial.permission, reason: denial.reason },
  });
}

/** Members' access contexts kept between requests (see load); past that, the oldest read go first. */
const ACCESS_CONTEXTS_CACHED = 10_000;

export function createAccessService(deps: { store: AccessStore; audit: AuditService }) {
  const { store, audit } = deps;
  const contexts = new ReadCache<OrgContext | undefined>({ maxEntries: ACCESS_CONTEXTS_CACHED });

  /**
   * The member's organization context for a slug as the database holds it now (a lost role is lost
   * on the next request); undefined when the organization does not exist or the user is not a member —
   * both answer 404 (ACC-1). Given the database's generation, a context read earlier is reused while
   * nothing has been written since.
   */
  async function load(
    slug: string,
    userId: string,
    generation?: Generation,
  ): Promise<OrgContext | undefined> {
    const loaded = await contexts.through(`${userId} ${slug}`, generation, () => loadFresh(slug, userId));
    // Each request gets its own copy: the guard narrows `access.limit` for an API key.
    return loaded && { ...loaded, access: { ...loaded.access } };
  }

  async function loadFresh(slug: string, userId: string): Promise<OrgContext | undefined> {
    const org = await store.orgWithMembership(slug, userId);
    if (!org?.role) return undefined;
    const bindings = await store.bindingGrantsOf(org.id, userId);
    // Frozen: a kept context is shared by every request of the member until the next write.
    const grants = Object.freeze(
      [{ role: org.role, via: 'membership', selector: null }, ...bindings].map((grant) =>
        Object.freeze(grant),
      ),
    );
    const customRoles = grants.some((grant) => !isBuiltInRole(grant.role))
      ? await store.customRoles(org.id)
      : new Map();
    return {
      id: org.id,
      slug: org.slug,
      name: org.name,
      role: org.role,
      mfaRequired: org.mfa_required === 1,
      ssoRequired: org.sso_required === 1,
      breakGlassUserId: org.break_glass_user_id,
      access: { orgId: org.id, userId, grants, customRoles },
    };
  }

  return {
    load,

    /** The decision on one resource; a denial is audited and answered 403. */
    async authorize(
      caller: Caller,
      permission: CataloguePermission,
      resource: AccessResource,
    ): Promise<Decision> {
      const decision = decide(caller.org.access, permission, resource);
      if (!decision.allowed) {
        await recordDenial(audit, {
          orgId: caller.org.id,
          actor: caller.actor,
          context: caller.context,
          permission,
          reason: decision.reason,
        });
        throw new ForbiddenError();
      }
      return decision;
    },

    /** Why a member is or is not allowed a permission, on the organization or on an agent with these labels. */
    async explain(caller: Caller, query: { userId: string; permission: string; labels?: Labels }) {
      const target = query.userId === caller.userId ? caller.org : await load(caller.org.slug, query.userId);
      if (!target) throw new NotFoundError('No such member.');
      const resource: AccessResource = query.labels
        ? { kind: 'agent', labels: query.labels }
        : { kind: 'org' };
      return { ...decide(target.access, query.permission, resource), userId: query.userId };
    },

    /** What the caller may do here: org-wide permissions and those granted on agent selectors (console hints). */
    capabilities(caller: Caller) {
      const { access } = caller.org;
      return {
        org: { id: caller.org.id, slug: caller.org.slug, name: caller.org.name },
        role: roleName(caller.org.role, access.customRoles),
        permissions: [...orgWidePermissions(access)].sort(),
        scoped: access.grants
          .filter((grant) => grant.selector !== null)
          .map((grant) => ({
            selector: grant.selector as string,
            role: roleName(grant.role, access.customRoles),
            permissions: [...rolePermissions(grant.role, access.customRoles)]
              .filter((p) => AGENT_SCOPED_PERMISSIONS.has(p) && (access.limit?.permissions.has(p) ?? true))
              .sort(),
          })),
      };
    },
  };
}

export type AccessService = ReturnType<typeof createAccessService>;
