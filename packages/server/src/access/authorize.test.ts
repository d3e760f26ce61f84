import { describe, expect, it } from 'vitest';
import {
  type AccessSnapshot,
  type AgentPrincipal,
  type AgentResource,
  type CustomRole,
  decide as decideAndExplain,
  isAllowed,
  orgWidePermissions,
  rolePermissions,
} from './authorize.js';
import { parseLabels, parseSelector, selectorMatches } from './label-selector.js';
import { BUILT_IN_ROLES, PERMISSION_NAMES } from './permissions.js';

const roles = (...list: CustomRole[]) => new Map(list.map((role) => [role.id, role]));

/** Every decision below is also asked of the guard's fast path, which must agree with it. */
function decide(...question: Parameters<typeof decideAndExplain>) {
  const decision = decideAndExplain(...question);
  expect(isAllowed(...question)).toBe(decision.allowed);
  return decision;
}

function snapshot(grants: AccessSnapshot['grants'], customRoles = roles()): AccessSnapshot {
  return { orgId: 'org_1', userId: 'usr_1', grants, customRoles };
}

describe('built-in roles (ACC-2)', () => {
  it('give security configuration, backups and ending sessions to owners only', () => {
    for (const permission of [
      'security_configuration:manage',
      'backups:manage',
      'members:end_sessions',
      'members:export_data',
      'members:erase',
    ] as const) {
      expect(BUILT_IN_ROLES.owner.permissions).toContain(permission);
      for (const role of ['admin', 'operator', 'viewer', 'auditor'] as const)
        expect(BUILT_IN_ROLES[role].permissions).not.toContain(permission);
    }
  });

  it('keep auditors and viewers read-only', () => {
    const writes = PERMISSION_NAMES.filter((p) => !/:(read|export)$/.test(p));
    for (const role of ['viewer', 'auditor'] as const)
      expect(BUILT_IN_ROLES[role].permissions.filter((p) => writes.includes(p))).toEqual([]);
  });
});

describe('decide (ACC-4)', () => {
  it('denies by default and says why', () => {
    const decision = decide(
      snapshot([{ role: 'viewer', via: 'membership', selector: null }]),
      'commands:create',
      {
        kind: 'org',
      },
    );
    expect(decision).toMatchObject({ allowed: false, matched: [] });
    expect(decision.reason).toContain('no role');
  });

  it('refuses a permission that is not in the catalogue even to an owner', () => {
    const owner = snapshot([{ role: 'owner', via: 'membership', selector: null }]);
    expect(decide(owner, 'everything:all', { kind: 'org' }).allowed).toBe(false);
  });

  it('applies a label-scoped binding only to agent permissions on matching agents', () => {
    const access = snapshot([
      { role: 'viewer', via: 'membership', selector: null },
      { role: 'operator', via: 'binding rbd_1', selector: 'env=staging' },
    ]);
    expect(decide(access, 'commands:create', { kind: 'agent', labels: { env: 'staging' } })).toMatchObject({
      allowed: true,
      matched: [{ roleName: 'operator', selector: 'env=staging' }],
    });
    expect(decide(access, 'commands:create', { kind: 'agent', labels: { env: 'production' } }).allowed).toBe(
      false,
    );
    expect(decide(access, 'commands:create', { kind: 'org' }).allowed).toBe(false);
    expect(decide(access, 'commands:create', { kind: 'any' }).allowed).toBe(true);
    // operator holds agents:register, but it is not an agent-scoped permission: a selector never grants it.
    expect(decide(access, 'agents:register', { kind: 'any' }).allowed).toBe(false);
    expect(orgWidePermissions(access).has('commands:create')).toBe(false);
  });

  it('resolves nested roles, and a cycle (however it got there) adds nothing and never loops', () => {
    const a: CustomRole = { id: 'rol_a', name: 'a', permissions: ['audit:read'], includes: ['rol_b'] };
    const b: CustomRole = {
      id: 'rol_b',
      name: 'b',
      permissions: ['teams:manage'],
      includes: ['rol_a', 'viewer'],
    };
    const held = rolePermissions('rol_a', roles(a, b));
    expect(held.has('audit:read')).toBe(true);
    expect(held.has('teams:manage')).toBe(true);
    expect(held.has('agents:read')).toBe(true);
    expect(held.has('members:manage')).toBe(false);
  });

  it('ignores unknown permissions stored in a custom role', () => {
    const odd: CustomRole = { id: 'rol_x', name: 'x', permissions: ['root:all', 'audit:read'], includes: [] };
    expect([...rolePermissions('rol_x', roles(odd))]).toEqual(['audit:read']);
  });
});

describe('an agent acting as itself (ACC-4, invariant 5)', () => {
  const self: AgentPrincipal = { kind: 'agent', orgId: 'org_1', agentId: 'agt_1' };
  /** Asked of both entry points, which must agree. */
  function agentDecides(principal: AgentPrincipal, permission: string, resource: AgentResource) {
    const decision = decideAndExplain(principal, permission, resource);
    expect(isAllowed(principal, permission, resource)).toBe(decision.allowed);
    return decision;
  }

  it('reports on a command that names it and on a service it reported, and nothing of another agent', () => {
    expect(
      agentDecides(self, 'commands:report', { kind: 'command', orgId: 'org_1', agentId: 'agt_1' }),
    ).toMatchObject({ allowed: true, matched: [{ roleName: 'agent', via: 'agent agt_1 acting as itself' }] });
    expect(
      agentDecides(self, 'services:report', { kind: 'service', orgId: 'org_1', agentId: 'agt_1' }).allowed,
    ).toBe(true);
    for (const owner of [
      { orgId: 'org_1', agentId: 'agt_2' },
      // The same agent id in another organization is not this agent.
      { orgId: 'org_2', agentId: 'agt_1' },
    ]) {
      const command = agentDecides(self, 'commands:report', { kind: 'command', ...owner });
      expect(command).toMatchObject({ allowed: false, matched: [] });
      expect(command.reason).toContain("not agent agt_1's own");
      expect(agentDecides(self, 'services:report', { kind: 'service', ...owner }).allowed).toBe(false);
    }
  });

  it('holds no catalogue permission, and an agent permission only on its own kind of resource', () => {
    const own = { orgId: 'org_1', agentId: 'agt_1' };
    for (const permission of ['commands:create', 'agents:manage', 'secrets:use', 'anything:else'])
      expect(agentDecides(self, permission, { kind: 'command', ...own }).allowed).toBe(false);
    expect(agentDecides(self, 'commands:report', { kind: 'service', ...own }).allowed).toBe(false);
    expect(agentDecides(self, 'services:report', { kind: 'command', ...own }).allowed).toBe(false);
  });

  it('is never what a person holds, however powerful, and no role can grant it', () => {
    const owner = snapshot([{ role: 'owner', via: 'membership', selector: null }]);
    expect(decide(owner, 'commands:report', { kind: 'org' }).allowed).toBe(false);
    expect(decide(owner, 'services:report', { kind: 'any' }).allowed).toBe(false);
    const sneaky: CustomRole = { id: 'rol_s', name: 's', permissions: ['commands:report'], includes: [] };
    expect([...rolePermissions('rol_s', roles(sneaky))]).toEqual([]);
    // A person's permission asked about an agent's own resource is refused, not decided by roles.
    const resource: AgentResource = { kind: 'command', orgId: 'org_1', agentId: 'agt_1' };
    const asked = decideAndExplain(owner, 'commands:read', resource as never);
    expect(asked.allowed).toBe(false);
    expect(isAllowed(owner, 'commands:read', resource as never)).toBe(false);
  });
});

describe('label selectors', () => {
  it('match equality, inequality, presence and absence, all terms at once', () => {
    const selector = parseSelector('env=staging, tier!=db, region, !canary');
    if ('problem' in selector) throw new Error(selector.problem);
    expect(selector.text).toBe('env=staging,tier!=db,region,!canary');
    expect(selectorMatches(selector, { env: 'staging', tier: 'web', region: 'eu' })).toBe(true);
    expect(selectorMatches(selector, { env: 'staging', region: 'eu' })).toBe(true);
    expect(selectorMatches(selector, { env: 'staging', tier: 'db', region: 'eu' })).toBe(false);
    expect(selectorMatches(selector, { env: 'staging', region: 'eu', canary: 'yes' })).toBe(false);
    expect(selectorMatches(selector, { env: 'prod', region: 'eu' })).toBe(false);
  });

  it('refuses empty and malformed selectors and labels', () => {
    for (const text of ['', ' ', 'env=', '=x', 'env=a b', 'a,,b', 'env==='])
      expect(parseSelector(text)).toHaveProperty('problem');
    expect(parseLabels('env=staging,team=db')).toEqual({ env: 'staging', team: 'db' });
    expect(parseLabels('env')).toHaveProperty('problem');
  });
});
