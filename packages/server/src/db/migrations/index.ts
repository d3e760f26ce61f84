import type { Migration } from 'kysely';
import * as foundation from './0001-foundation.js';
import * as identity from './0002-identity.js';
import * as access from './0003-access.js';
import * as agents from './0004-agents.js';
import * as commands from './0005-commands.js';
import * as commandPolicy from './0006-command-policy.js';
import * as dataKeys from './0007-data-keys.js';
import * as secrets from './0008-secrets.js';
import * as commandSecrets from './0009-command-secrets.js';
import * as apiKeys from './0010-api-keys.js';
import * as mfa from './0011-mfa.js';
import * as passkeys from './0012-passkeys.js';
import * as commandSeals from './0013-command-seals.js';
import * as maintenance from './0014-maintenance.js';
import * as liveTickets from './0015-live-tickets.js';
import * as agentKeySeals from './0016-agent-key-seals.js';
import { type CredentialSealingContext, credentialSealsMigration } from './0017-credential-seals.js';
import * as sso from './0018-sso.js';
import * as ssoEnforcement from './0019-sso-enforcement.js';
import * as scim from './0020-scim.js';
import * as saml from './0021-saml.js';
import * as ssoDomains from './0022-sso-domains.js';
import * as bulkRuns from './0023-bulk-runs.js';
import * as notifications from './0024-notifications.js';
import * as auditSinks from './0025-audit-sinks.js';
import * as workloadIdentity from './0026-workload-identity.js';
import * as emailOutbox from './0027-email-outbox.js';
import * as personalData from './0028-personal-data.js';
import * as instanceAuditSinks from './0029-instance-audit-sinks.js';
import * as rowLevelSecurity from './0030-row-level-security.js';

export interface MigrationContext {
  /** For migrations that seal what they find (0017); without it they refuse a database that has some. */
  credentials?: CredentialSealingContext;
}

/**
 * The one migration set for both dialects, in order. Names sort lexically; never rename or edit an
 * applied migration: add a new one.
 */
export const migrationsWith = (context: MigrationContext = {}): Record<string, Migration> => ({
  '0001-foundation': foundation,
  '0002-identity': identity,
  '0003-access': access,
  '0004-agents': agents,
  '0005-commands': commands,
  '0006-command-policy': commandPolicy,
  '0007-data-keys': dataKeys,
  '0008-secrets': secrets,
  '0009-command-secrets': commandSecrets,
  '0010-api-keys': apiKeys,
  '0011-mfa': mfa,
  '0012-passkeys': passkeys,
  '0013-command-seals': commandSeals,
  '0014-maintenance': maintenance,
  '0015-live-tickets': liveTickets,
  '0016-agent-key-seals': agentKeySeals,
  '0017-credential-seals': credentialSealsMigration(context.credentials),
  '0018-sso': sso,
  '0019-sso-enforcement': ssoEnforcement,
  '0020-scim': scim,
  '0021-saml': saml,
  '0022-sso-domains': ssoDomains,
  '0023-bulk-runs': bulkRuns,
  '0024-notifications': notifications,
  '0025-audit-sinks': auditSinks,
  '0026-workload-identity': workloadIdentity,
  '0027-email-outbox': emailOutbox,
  '0028-personal-data': personalData,
  '0029-instance-audit-sinks': instanceAuditSinks,
  '0030-row-level-security': rowLevelSecurity,
});

/** The migrations, for counting and listing them (none of them is run from here). */
export const migrations = migrationsWith();
