import { type Labels, parseSelector, type Selector, selectorMatches } from './label-selector.js';
import {
  AGENT_SCOPED_PERMISSIONS,
  BUILT_IN_ROLES,
  type CataloguePermission,
  isBuiltInRole,
  isCataloguePermission,
} from './permissions.js';

/**
 * The one decision point (ACC-4). Routes, the agent gateway and the console's capability hints all
 * ask `decide`; nothing else reads roles. It is pure: the caller hands it an {@link AccessSnapshot} of
 * one user in one organization as the database holds it when the request begins (read again, or kept
 * only while nothing has been written since: db/read-cache.ts), so a role lost is a permission lost on
 * the very next request (AUTH-5).
 *
 * Default deny: a permission is allowed only when a grant holds it. A grant is the member's role in
 * the organization (org-wide), or a role binding to the user or to one of their teams, org-wide or
 * scoped by a label selector. A scoped grant confers only agent-scoped permissions, and only on
 * agents whose labels match.
 *
 * An API key acts with its member's grants under a limit (KEY-1): only the permissions the key lists,
 * and, when the key has a selector, only on agents matching it. The limit narrows; it never grants.
 *
 * An agent acting as itself over its gateway connection is a principal too ({@link AgentPrincipal}):
 * it holds only the {@link AGENT_PERMISSIONS}, and only on what is its own — a command that names it,
 * a service it reported (invariant 5). Those permissions are outside the catalogue, so no role, key or
 * binding can ever hand them to a person, and no catalogue permission is ever an agent's.
 */

export interface CustomRole {
  id: string;
  name: string;
  permissions: string[];
  includes: string[];
}

export interface Grant {
  /** A built-in role name or a custom role id. */
  role: string;
  /** Where the grant comes from, in words an operator reads: `membership`, `binding rbd_… (team sre)`. */
  via: string;
  selector: string | null;
}

/** What narrows a member's grants when an API key acts for them. */
export interface AccessLimit {
  /** The key, in words an operator reads: `API key apk_… (deploy)`. */
  via: string;
  permissions: ReadonlySet<string>;
  /** Only agent-scoped permissions, only on agents matching it. */
  selector: string | null;
}

export interface AccessSnapshot {
  orgId: string;
  userId: string;
  grants: readonly Grant[];
  /** The organization's custom roles, by id. */
  customRoles: ReadonlyMap<string, CustomRole>;
  limit?: AccessLimit;
}

/** What a permission is asked about: the organization as a whole, or one agent (its labels). */
export type AccessResource = { kind: 'org' } | { kind: 'agent'; labels: Labels } | { kind: 'any' };

/** An agent acting as itself: what its proof of key at the gateway established, nothing more. */
export interface AgentPrincipal {
  kind: 'agent';
  orgId: string;
  agentId: string;
}

/** What an agent does over its connection. Deliberately not catalogue permissions: no role grants them. */
export const AGENT_PERMISSIONS = ['commands:report', 'services:report'] as const;
export type AgentPermission = (typeof AGENT_PERMISSIONS)[number];

/**
 * What an agent's permission is asked about, by whom it belongs to: the agent a command names, the
 * agent that reported a service. Only the owner's identity matters; the caller looks it up.
 */
export type AgentResource =
  | { kind: 'command'; orgId: string; agentId: string }
  | { kind: 'service'; orgId: string; agentId: string };

const AGENT_PERMISSION_RESOURCE: Record<AgentPermission, AgentResource['kind']> = {
  'commands:report': 'command',
  'services:report': 'service',
};

function isAgentPrincipal(principal: AccessSnapshot | AgentPrincipal): principal is AgentPrincipal {
  return (principal as Partial<AgentPrincipal>).kind === 'agent';
}

const isAgentResource = (resource: AccessResource | AgentResource): resource is AgentResource =>
  resource.kind === 'command' || resource.kind === 'service';

export interface Decision {
  allowed: boolean;
  permission: string;
  /** The grants that allowed it; empty when denied. */
  matched: Array<{ role: string; roleName: string; via: string; selector: string | null }>;
  reason: string;
}

/** Built-in roles never change: their permission sets are made once, not on every request. */
const BUILT_IN_SETS: ReadonlyMap<string, ReadonlySet<CataloguePermission>> = new Map(
  Object.entries(BUILT_IN_ROLES).map(([name, role]) => [name, new Set(role.permissions)]),
);

/** The permissions a role holds, nested roles included; a cycle or an unknown reference adds nothing. */
export function rolePermissions(
  role: string,
  customRoles: ReadonlyMap<string, CustomRole>,
  seen: Set<string> = new Set(),
): ReadonlySet<CataloguePermission> {
  const builtIn = BUILT_IN_SETS.get(role);
  if (builtIn) return builtIn;
  const custom = customRoles.get(role);
  if (!custom || seen.has(role)) return new Set();
  seen.add(role);
  const out = new Set<CataloguePermission>();
  for (const permission of custom.permissions) if (isCataloguePermission(permission)) out.add(permission);
  for (const included of custom.includes)
    for (const permission of rolePermissions(included, customRoles, seen)) out.add(permission);
  return out;
}

export function roleName(role: string, customRoles: ReadonlyMap<string, CustomRole>): string {
  return isBuiltInRole(role) ? role : (customRoles.get(role)?.name ?? role);
}

const selectorCache = new Map<string, Selector | undefined>();

function compiledSelector(text: string): Selector | undefined {
  let selector = selectorCache.get(text);
  if (selector === undefined && !selectorCache.has(text)) {
    const parsed = parseSelector(text);
    selector = 'problem' in parsed ? undefined : parsed;
    if (selectorCache.size > 10_000) selectorCache.clear();
    selectorCache.set(text, selector);
  }
  return selector;
}

function grantApplies(grant: Grant, permission: CataloguePermission, resource: AccessResource): boolean {
  if (grant.selector === null) return true;
  if (!AGENT_SCOPED_PERMISSIONS.has(permission)) return false;
  if (resource.kind === 'any') return true;
  if (resource.kind !== 'agent') return false;
  return selectorHolds(grant.selector, resource.labels);
}

function selectorHolds(text: string, labels: Labels): boolean {
  const selector = compiledSelector(text);
  return selector !== undefined && selectorMatches(selector, labels);
}

/** Why the limit refuses `permission` on `resource`, or undefined when it lets the grants decide. */
function limitRefusal(limit: AccessLimit, permission: CataloguePermission, resource: AccessResource) {
  if (!limit.permissions.has(permission)) return `denied: ${limit.via} does not hold ${permission}`;
  if (limit.selector === null || resource.kind === 'any') return undefined;
  if (!AGENT_SCOPED_PERMISSIONS.has(permission) || resource.kind !== 'agent')
    return `denied: ${limit.via} acts only on agents matching ${limit.selector}, and this request is not about one agent`;
  if (!selectorHolds(limit.selector, resource.labels))
    return `denied: ${limit.via} acts only on agents matching ${limit.selector}, and this agent does not match`;
  return undefined;
}

function grantHolds(
  snapshot: AccessSnapshot,
  grant: Grant,
  permission: CataloguePermission,
  resource: AccessResource,
): boolean {
  return (
    rolePermissions(grant.role, snapshot.customRoles).has(permission) &&
    grantApplies(grant, permission, resource)
  );
}

/**
 * An agent's decision: default deny; allowed only for an agent permission, on a resource of the kind
 * it concerns, that belongs to this very agent in its own organization.
 */
function decideForAgent(
  agent: AgentPrincipal,
  permission: string,
  resource: AccessResource | AgentResource,
): Decision {
  const denied = (reason: string): Decision => ({ allowed: false, permission, matched: [], reason });
  if (!(AGENT_PERMISSIONS as readonly string[]).includes(permission))
    return denied(`denied: an agent holds only ${AGENT_PERMISSIONS.join(' and ')}, never ${permission}`);
  const kind = AGENT_PERMISSION_RESOURCE[permission as AgentPermission];
  if (resource.kind !== kind) return denied(`denied: ${permission} is asked only about a ${kind}`);
  const owner = resource as AgentResource;
  if (owner.orgId !== agent.orgId || owner.agentId !== agent.agentId)
    return denied(`denied: this ${kind} is not agent ${agent.agentId}'s own`);
  const via = `agent ${agent.agentId} acting as itself`;
  return {
    allowed: true,
    permission,
    matched: [{ role: 'agent', roleName: 'agent', via, selector: null }],
    reason: `allowed: the ${kind} belongs to agent ${agent.agentId}, which holds ${permission} on its own`,
  };
}

/** A person's permission is never asked about an agent's own things: that question is the agent's. */
const personOnAgentResource = (permission: string, resource: AgentResource): Decision => ({
  allowed: false,
  permission,
  matched: [],
  reason: `denied: a ${resource.kind} as an agent's own is asked about only for that agent`,
});

/**
 * `decide(…).allowed` without the explanation, which only a refusal or an operator reads: the guard
 * asks this on every request.
 */
export function isAllowed(principal: AgentPrincipal, permission: string, resource: AgentResource): boolean;
export function isAllowed(snapshot: AccessSnapshot, permission: string, resource: AccessResource): boolean;
export function isAllowed(
  principal: AccessSnapshot | AgentPrincipal,
  permission: string,
  resource: AccessResource | AgentResource,
): boolean {
  if (isAgentPrincipal(principal)) return decideForAgent(principal, permission, resource).allowed;
  if (isAgentResource(resource)) return false;
  const snapshot = principal;
  if (!isCataloguePermission(permission)) return false;
  if (snapshot.limit && limitRefusal(snapshot.limit, permission, resource)) return false;
  return snapshot.grants.some((grant) => grantHolds(snapshot, grant, permission, resource));
}

/**
 * Decides whether the snapshot's user holds `permission` on `resource`. `any` asks whether they hold
 * it on at least something (an org-wide grant, or a scoped one) — the question a list route asks
 * before it filters, and the console asks to decide whether to show a control. Asked of an
 * {@link AgentPrincipal}, decides whether the agent may act on a command or service as its own.
 */
export function decide(principal: AgentPrincipal, permission: string, resource: AgentResource): Decision;
export function decide(snapshot: AccessSnapshot, permission: string, resource: AccessResource): Decision;
export function decide(
  principal: AccessSnapshot | AgentPrincipal,
  permission: string,
  resource: AccessResource | AgentResource,
): Decision {
  if (isAgentPrincipal(principal)) return decideForAgent(principal, permission, resource);
  if (isAgentResource(resource)) return personOnAgentResource(permission, resource);
  const snapshot = principal;
  if (!isCataloguePermission(permission)) {
    return { allowed: false, permission, matched: [], reason: `${permission} is not a known permission` };
  }
  const refusal = snapshot.limit && limitRefusal(snapshot.limit, permission, resource);
  if (refusal) return { allowed: false, permission, matched: [], reason: refusal };
  const matched = snapshot.grants
    .filter((grant) => grantHolds(snapshot, grant, permission, resource))
    .map((grant) => ({ ...grant, roleName: roleName(grant.role, snapshot.customRoles) }));
  if (matched.length > 0) {
    const first = matched[0]!;
    return {
      allowed: true,
      permission,
      matched,
      reason: `allowed: role ${first.roleName} (${first.via}${first.selector ? `, on agents matching ${first.selector}` : ''}) holds ${permission}`,
    };
  }
  const scopedOnly = snapshot.grants.some(
    (grant) => grant.selector !== null && rolePermissions(grant.role, snapshot.customRoles).has(permission),
  );
  return {
    allowed: false,
    permission,
    matched: [],
    reason: scopedOnly
      ? `denied: ${permission} is granted only on agents matching a selector, and this ${resource.kind === 'agent' ? 'agent does not match' : 'request is not about one agent'}`
      : `denied: no role of this member in the organization holds ${permission}`,
  };
}

/**
 * Every permission held org-wide: what bounds what this member may hand to others (ACC-5). A key
 * with a selector holds nothing org-wide.
 */
export function orgWidePermissions(snapshot: AccessSnapshot): Set<CataloguePermission> {
  const out = new Set<CataloguePermission>();
  const { limit } = snapshot;
  if (limit?.selector) return out;
  for (const grant of snapshot.grants)
    if (grant.selector === null)
      for (const permission of rolePermissions(grant.role, snapshot.customRoles))
        if (!limit || limit.permissions.has(permission)) out.add(permission);
  return out;
}
