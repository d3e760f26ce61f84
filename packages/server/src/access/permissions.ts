/**
 * The permission catalogue (ACC-2) and the built-in roles. A permission is `resource:verb`; nothing
 * outside this list can be granted, so a typo in a custom role is a 422, never a silent no-op.
 */

export const PERMISSIONS = {
  'org:read': 'See the organization',
  'org:manage': 'Rename the organization',
  'members:read': 'List members and their roles',
  'members:invite': 'Invite people, with a role no stronger than your own',
  'members:manage': "Change members' roles and remove members",
  'members:end_sessions': "End a member's sessions",
  'members:export_data': 'Export what the organization holds about a member (DATA-2)',
  'members:erase':
    'Erase a member the organization alone holds: delete the account and shred their personal data (DATA-2)',
  'roles:read': 'List roles and role bindings',
  'roles:manage': 'Create, edit and delete custom roles and role bindings',
  'teams:read': 'List teams and their members',
  'teams:manage': 'Create, edit and delete teams and their membership',
  'agents:read': 'See agents, their status and labels',
  'agents:register': 'Create agent registration tokens',
  'agents:manage': 'Disable, enable, revoke and relabel agents',
  'services:read': 'See services, their health, configuration and actions',
  'commands:read': 'See commands and their output',
  'commands:create': 'Run actions',
  'commands:cancel': 'Cancel commands',
  'approvals:decide': "Approve or reject other people's commands",
  'secrets:read': 'See secret names and versions (never values)',
  'secrets:write': 'Create, update and delete secrets',
  'secrets:use': 'Run actions that receive secrets',
  'apikeys:read': 'List API keys',
  'apikeys:manage': 'Create and revoke API keys',
  'apikeys:use_privileged':
    'Give an API key the power to call privileged routes (a key cannot re-authenticate, so without this they refuse keys)',
  'audit:read': 'Read the audit log',
  'audit:export': 'Export the audit log and the access review',
  'security_configuration:manage': 'Change security settings (MFA policy, SSO, SCIM)',
  'backups:manage': 'Create and restore backups',
} as const;

export type CataloguePermission = keyof typeof PERMISSIONS;
export const PERMISSION_NAMES = Object.keys(PERMISSIONS) as CataloguePermission[];

export function isCataloguePermission(value: string): value is CataloguePermission {
  return Object.hasOwn(PERMISSIONS, value);
}

/**
 * Permissions that concern one agent and what runs on it. Only these can be granted on a label
 * selector (ACC-3): a binding on `env=staging` can let someone run commands on staging agents, but
 * never manage members.
 */
export const AGENT_SCOPED_PERMISSIONS: ReadonlySet<CataloguePermission> = new Set([
  'agents:read',
  'agents:manage',
  'services:read',
  'commands:read',
  'commands:create',
  'commands:cancel',
  'approvals:decide',
  'secrets:use',
]);

const READS: CataloguePermission[] = [
  'org:read',
  'members:read',
  'roles:read',
  'teams:read',
  'agents:read',
  'services:read',
  'commands:read',
];

/** Only owners hold these by default; a custom role can delegate them (ACC-2). */
const OWNER_ONLY: CataloguePermission[] = [
  'security_configuration:manage',
  'backups:manage',
  'members:end_sessions',
  'apikeys:use_privileged',
  'members:export_data',
  'members:erase',
];

export const BUILT_IN_ROLES = {
  owner: {
    description: 'Everything, including security configuration and backups',
    permissions: PERMISSION_NAMES,
  },
  admin: {
    description: 'Everything except security configuration, backups and ending sessions',
    permissions: PERMISSION_NAMES.filter((p) => !OWNER_ONLY.includes(p)),
  },
  operator: {
    description: 'Runs actions, approves others’ commands and registers agents',
    permissions: [
      ...READS,
      'agents:register',
      'commands:create',
      'commands:cancel',
      'approvals:decide',
      'secrets:read',
      'secrets:use',
    ],
  },
  viewer: { description: 'Reads agents, services and commands', permissions: READS },
  auditor: {
    description: 'Reads everything and exports the audit log and access review; changes nothing',
    permissions: [...READS, 'secrets:read', 'apikeys:read', 'audit:read', 'audit:export'],
  },
} satisfies Record<string, { description: string; permissions: readonly CataloguePermission[] }>;

export type BuiltInRole = keyof typeof BUILT_IN_ROLES;
export const BUILT_IN_ROLE_NAMES = Object.keys(BUILT_IN_ROLES) as BuiltInRole[];

export function isBuiltInRole(value: string): value is BuiltInRole {
  return Object.hasOwn(BUILT_IN_ROLES, value);
}
