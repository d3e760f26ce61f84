import type { Generated } from 'kysely';

/**
 * Row types of every table, shared by both dialects. Times are epoch milliseconds (UTC) in BIGINT
 * columns; JSON is stored as canonical JSON text so both dialects hash and compare the same bytes.
 */

export interface AuditEventsTable {
  id: string;
  /** The organization id, or `instance` for events that belong to no organization. */
  chain_id: string;
  seq: number;
  org_id: string | null;
  ts: number;
  actor_type: string;
  actor_id: string | null;
  actor_display: string | null;
  ip: string | null;
  user_agent: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  target_display: string | null;
  outcome: string;
  request_id: string | null;
  details: string;
  prev_hash: string;
  hash: string;
}

export interface AuditChainHeadsTable {
  chain_id: string;
  seq: number;
  hash: string;
  updated_at: number;
}

export interface AuditCheckpointsTable {
  id: string;
  chain_id: string;
  /** `checkpoint`: signed statement of the head; `anchor`: signed start of a pruned chain. */
  kind: string;
  seq: number;
  hash: string;
  ts: number;
  key_id: string;
  signature: string;
}

export interface ServerKeysTable {
  id: string;
  purpose: string;
  algorithm: string;
  public_key: string;
  /** PKCS#8 private key sealed by the instance's data key; never stored in clear. */
  private_key_sealed: string;
  created_at: number;
}

/** Workload-identity signing keys (SEC-4): RS256, rotating; see migration 0026. */
export interface WorkloadIdentityKeysTable {
  /** `key_…`: the JWT header's `kid`. */
  id: string;
  algorithm: string;
  /** SPKI DER, base64. */
  public_key: string;
  /** PKCS#8 private key sealed by the instance data key; never stored in clear. */
  private_key_sealed: string;
  created_at: number;
  /** When it starts signing; it is in the JWKS from its creation. */
  signs_from: number;
  /** When it leaves the JWKS; null until a newer key replaces it. */
  retires_at: number | null;
}

export interface DataKeysTable {
  /** `dek_…`: named by every value it seals. */
  id: string;
  /** `instance`, or `org:<org id>`. */
  scope: string;
  status: 'active' | 'retired';
  /** The 256-bit key, sealed by the master key named in it. */
  wrapped_key: string;
  master_key_id: string;
  created_at: number;
  retired_at: number | null;
}

export interface SecretsTable {
  id: string;
  org_id: string;
  name: string;
  description: string;
  current_version: number;
  created_by: string;
  created_at: number;
  updated_by: string;
  updated_at: number;
}

export interface SecretVersionsTable {
  secret_id: string;
  /** The organization, as its parent has it: for row-level security (migration 0030). */
  org_id: string;
  version: number;
  /** Sealed by the organization's data key, bound to `secrets/<org>/<secret>/v<version>`. */
  value_sealed: string;
  created_by: string;
  created_at: number;
}

export interface ApiKeysTable {
  id: string;
  org_id: string;
  /** The member the key acts for: it never holds more than they do, and dies with their membership. */
  user_id: string;
  /** The key that created this one, when a key did: revoking it revokes this one too. */
  parent_key_id: string | null;
  name: string;
  /** SHA-256 of the token, hex; the token itself is shown once and never stored. */
  token_hash: string;
  /** The first characters of the token, so that people can tell their keys apart. */
  token_hint: string;
  /** JSON array of catalogue permissions: the most the key allows, within the member's own. */
  permissions: string;
  /** A label selector: the key acts only on agents matching it. */
  selector: string | null;
  created_at: number;
  expires_at: number;
  last_used_at: number | null;
  last_used_ip: string | null;
  revoked_at: number | null;
  revoked_reason: string | null;
  /** The server's seal of who this credential belongs to and what it opens (identity/credential-seals.ts). */
  seal: string;
}

export interface OrgsTable {
  id: string;
  slug: string;
  name: string;
  created_at: number;
  /** 1: members reach only MFA enrolment until they have a factor (MFA-4, the default). */
  mfa_required: number;
  /** 1: members reach the organization only through one of its SSO connections (SSO-4). */
  sso_required: Generated<number>;
  /** The owner who may still sign in with a password and a second factor when SSO is required (AUTH-8). */
  break_glass_user_id: string | null;
}

export interface MfaFactorsTable {
  id: string;
  user_id: string;
  type: 'totp' | 'webauthn';
  name: string;
  /** The TOTP seed, sealed by the instance data key, bound to the user and the factor. */
  secret_sealed: string | null;
  /** The last TOTP time step accepted: a code is accepted once (MFA-1). */
  last_used_step: number | null;
  created_at: number;
  /** Null while enrolment waits for a first correct code. */
  confirmed_at: number | null;
  last_used_at: number | null;
  /** A passkey's credential id (base64url), unique across users. */
  credential_id: string | null;
  /** A passkey's COSE public key (base64url): public, so not sealed. */
  public_key: string | null;
  /** The passkey's last signature counter: a counter that does not rise marks a cloned authenticator. */
  sign_count: number | null;
  /** Comma-separated transports the authenticator named, as hints for the browser. */
  transports: string | null;
  /** The server's seal of who this credential belongs to and what it opens (identity/credential-seals.ts). */
  seal: string;
}

export interface WebauthnChallengesTable {
  session_id: string;
  purpose: 'register' | 'authenticate';
  challenge: string;
  expires_at: number;
}

/** A live ticket (NET-5): one use, seconds long, for one session, organization and stream. */
export interface LiveTicketsTable {
  /** SHA-256 of the `bwt_` ticket. */
  ticket_hash: string;
  org_id: string;
  session_id: string;
  user_id: string;
  /** The stream it opens, e.g. `command:cmd_…`. */
  channel: string;
  created_at: number;
  expires_at: number;
  /** The server's seal of who this credential belongs to and what it opens (identity/credential-seals.ts). */
  seal: string;
}

export interface RecoveryCodesTable {
  user_id: string;
  /** SHA-256 of the code (120 random bits): nothing to brute-force from a database copy. */
  code_hash: string;
  created_at: number;
  used_at: number | null;
  /** The server's seal of who this credential belongs to and what it opens (identity/credential-seals.ts). */
  seal: string;
}

export type UserStatus = 'active' | 'disabled';

export interface UsersTable {
  id: string;
  email: string;
  display_name: string;
  /** The argon2id hash sealed by the instance data key for this user (identity/passwords.ts). */
  password_hash: string | null;
  status: UserStatus;
  password_change_required_at: number | null;
  password_changed_at: number | null;
  created_at: number;
  updated_at: number;
}

export interface MembershipsTable {
  org_id: string;
  user_id: string;
  role: string;
  created_at: number;
}

export interface SessionsTable {
  id: string;
  token_hash: string;
  user_id: string;
  created_at: number;
  last_seen_at: number;
  expires_at: number;
  authenticated_at: number;
  ip: string | null;
  user_agent: string | null;
  revoked_at: number | null;
  revoked_reason: string | null;
  /** 1 while a sign-in waits for its second factor: the session opens nothing but that step. */
  second_factor_pending: number;
  /** The SSO connection the session was signed in through; null for a password. */
  sso_connection_id: string | null;
  /** 1 when the provider's ID token said a second factor was proved there (amr "mfa"). */
  second_factor_at_provider: number;
  /** The server's seal of who this credential belongs to and what it opens (identity/credential-seals.ts). */
  seal: string;
}

export interface RolesTable {
  id: string;
  org_id: string;
  name: string;
  description: string;
  /** Canonical JSON array of catalogue permissions. */
  permissions: string;
  /** Canonical JSON array of the roles this one includes (built-in names or role ids). */
  includes: string;
  created_at: number;
  updated_at: number;
}

export type BindingSubject = 'user' | 'team';

export interface RoleBindingsTable {
  id: string;
  org_id: string;
  /** A built-in role name or a custom role id. */
  role: string;
  subject_type: BindingSubject;
  subject_id: string;
  /** A label selector (`env=staging`) limiting the grant to matching agents; null: the whole org. */
  selector: string | null;
  created_by: string;
  created_at: number;
}

export interface TeamsTable {
  id: string;
  org_id: string;
  name: string;
  description: string;
  created_at: number;
}

export interface TeamMembersTable {
  org_id: string;
  team_id: string;
  user_id: string;
  created_at: number;
}

export interface InvitationsTable {
  id: string;
  org_id: string;
  email: string;
  role: string;
  token_hash: string;
  invited_by: string;
  created_at: number;
  expires_at: number;
  accepted_at: number | null;
  accepted_by: string | null;
  revoked_at: number | null;
  /** The server's seal of who this credential belongs to and what it opens (identity/credential-seals.ts). */
  seal: string;
}

export interface RegistrationTokensTable {
  id: string;
  org_id: string;
  token_hash: string;
  description: string;
  /** JSON object of the labels every agent registered with this token starts with. */
  labels: string;
  uses_allowed: number;
  uses: number;
  created_by: string;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
  /** The server's seal of who this credential belongs to and what it opens (identity/credential-seals.ts). */
  seal: string;
}

export type AgentStatus = 'active' | 'disabled' | 'revoked';

export interface AgentsTable {
  id: string;
  org_id: string;
  name: string;
  hostname: string;
  /** JSON object. */
  labels: string;
  signing_key: string;
  encryption_key: string;
  status: AgentStatus;
  registration_token_id: string;
  created_at: number;
  updated_at: number;
  last_seen_at: number | null;
  /** The server's seal of the agent's public keys (agents/agent-keys.ts). */
  key_seal: string;
}

export type HealthStatus = 'up' | 'degraded' | 'down' | 'unknown';

export interface ServicesTable {
  id: string;
  org_id: string;
  agent_id: string;
  name: string;
  kind: string;
  version: string;
  health_status: HealthStatus;
  health_message: string;
  /** JSON array of {key, configured, value?}: secret-looking values are never stored. */
  config: string;
  /** JSON array of action declarations. */
  actions: string;
  created_at: number;
  updated_at: number;
}

export type CommandStatus =
  | 'awaiting_approval'
  | 'queued'
  | 'dispatched'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'timed_out'
  | 'cancelled'
  | 'rejected'
  | 'expired'
  /** A bulk run's target waiting for its turn (CMD-8): approved, not yet released to its agent. */
  | 'held'
  /** A bulk run's target never sent: the run stopped at its error threshold or was cancelled first. */
  | 'skipped';

export interface CommandsTable {
  id: string;
  org_id: string;
  agent_id: string;
  service: string;
  action: string;
  /** JSON object. */
  params: string;
  reason: string;
  risk: 'low' | 'medium' | 'high' | 'critical';
  required_approvals: number;
  requested_by: string;
  status: CommandStatus;
  idempotency_key: string | null;
  request_hash: string;
  nonce: string;
  timeout_seconds: number;
  created_at: number;
  updated_at: number;
  approval_expires_at: number | null;
  expires_at: number;
  dispatched_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  message: string;
  output_bytes: number;
  output_truncated: number;
  final_acked: number;
  /** JSON: the secret versions granted to it, `[{name, secretId, version}]`; never a value. */
  secrets: string;
  /** CMD-7: MACs of what was requested, made by the server when it accepted the command (command-seal.ts). */
  seal: string;
  /** The bulk run this command is one target of (CMD-8); sealed with the request when set. */
  bulk_run_id: string | null;
  /** The audience of the workload-identity JWT its action declared (SEC-4); sealed with the request when set. */
  workload_audience?: string | null;
}

export type BulkRunStatus =
  | 'awaiting_approval'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'rejected'
  | 'expired';

/** Audit sinks (AUD-6): the configuration sealed; the rest is the delivery cursor into the org's chain. */
export interface AuditSinksTable {
  id: string;
  /** NULL: the sink follows the instance chain (configured with `bulwark audit sinks`). */
  org_id: string | null;
  name: string;
  kind: string;
  config_sealed: string;
  enabled: number;
  delivered_seq: number;
  checkpoint_seq: number;
  priority_seq: number;
  failures: number;
  next_attempt_at: number;
  last_error: string | null;
  last_delivered_at: number | null;
  created_by: string | null;
  created_at: number;
  updated_at: number;
}

/**
 * A person's PII key (DATA-2): seals the personal fields of audit events about them (audit/audit-pii.ts).
 * Deleting the row is their erasure (crypto-shredding).
 */
export interface PiiKeysTable {
  user_id: string;
  /** `pik_…`: named by every value it seals. */
  id: string;
  /** The 256-bit key, sealed by the master key named in it. */
  wrapped_key: string;
  master_key_id: string;
  created_at: number;
}

/** Notifications (NOTIFY-1): per user; `read_at` null while unread. */
export interface NotificationsTable {
  id: string;
  user_id: string;
  kind: string;
  title: string;
  body: string;
  dedup_key: string | null;
  created_at: number;
  read_at: number | null;
}

export type EmailState = 'pending' | 'sent' | 'failed';

/** The email outbox (NOTIFY-1): written with the change, sent by a worker; see migration 0027. */
export interface EmailOutboxTable {
  id: string;
  user_id: string | null;
  kind: string;
  recipient: string;
  /** Subject and body, sealed by the instance data key; '' once sent. */
  sealed: string;
  state: EmailState;
  attempts: number;
  next_attempt_at: number;
  last_error: string | null;
  created_at: number;
  sent_at: number | null;
}

export interface UserDevicesTable {
  user_id: string;
  device_key: string;
  first_seen_at: number;
}

export interface BulkRunsTable {
  id: string;
  org_id: string;
  selector: string;
  service: string;
  action: string;
  /** JSON object. */
  params: string;
  reason: string;
  risk: 'low' | 'medium' | 'high' | 'critical';
  requested_by: string;
  status: BulkRunStatus;
  max_concurrency_spec: string;
  max_concurrency: number;
  max_errors_spec: string;
  max_errors: number;
  target_count: number;
  stop_reason: string;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
}

export interface CommandApprovalsTable {
  command_id: string;
  /** The organization, as its parent has it: for row-level security (migration 0030). */
  org_id: string;
  user_id: string;
  decision: 'approved' | 'rejected';
  comment: string;
  created_at: number;
  /** CMD-7: the server's MAC of this decision, made when it was given. */
  seal: string;
}

export interface CommandOutputTable {
  command_id: string;
  /** The organization, as its parent has it: for row-level security (migration 0030). */
  org_id: string;
  seq: number;
  stream: 'stdout' | 'stderr';
  data: string;
  created_at: number;
}

export interface CommandPoliciesTable {
  org_id: string;
  /** JSON: the policy of each risk, never looser than the built-in one. */
  policy: string;
  updated_by: string;
  updated_at: number;
}

export interface SsoConnectionsTable {
  id: string;
  org_id: string;
  kind: 'oidc' | 'ldap' | 'saml';
  name: string;
  /** The whole configuration, secrets included, sealed by the organization's data key (sso/sso-config.ts). */
  config_sealed: string;
  enabled: number;
  created_by: string;
  created_at: number;
  updated_at: number;
}

/** A provider's account (issuer, subject) linked to a user; sealed by the server (identity/credential-seals.ts). */
export interface SsoIdentitiesTable {
  id: string;
  issuer: string;
  subject: string;
  user_id: string;
  /** The connection it was first linked through; null once that connection is removed. */
  connection_id: string | null;
  created_at: number;
  last_sign_in_at: number | null;
  seal: string;
}

/** A sign-in under way at a provider: taken once, by the browser that started it. */
export interface SsoSignInsTable {
  /** SHA-256 of the `state` sent to the provider. */
  state_hash: string;
  connection_id: string;
  /** The organization, as its parent has it: for row-level security (migration 0030). */
  org_id: string;
  /** SHA-256 of the value in the starting browser's cookie. */
  browser_hash: string;
  nonce: string;
  /** The PKCE verifier, sealed by the instance data key. */
  verifier_sealed: string;
  /** The callback address sent to the provider, which the token request must repeat. */
  redirect_uri: string;
  /** A path of the console to land on once signed in. */
  return_to: string;
  /** Set when this sign-in re-proves the holder of this session at the provider (MFA-5). */
  step_up_session_id: string | null;
  created_at: number;
  expires_at: number;
}

/** An email domain an organization claims, verified once its challenge is in DNS (SSO-4). */
export interface SsoDomainsTable {
  org_id: string;
  domain: string;
  challenge: string;
  created_by: string;
  created_at: number;
  verified_at: number | null;
}

/** An assertion a SAML sign-in took, kept until it expires: the replay cache (SSO-2). */
export interface SamlAssertionsTable {
  assertion_hash: string;
  connection_id: string;
  /** The organization, as its parent has it: for row-level security (migration 0030). */
  org_id: string;
  expires_at: number;
}

/** An organization's SCIM provisioning: its token's hash, sealed by the server, and what SCIM may give. */
export interface ScimConfigsTable {
  org_id: string;
  token_hash: string;
  token_hint: string;
  /** The role a person SCIM creates or activates gets, unless a group maps to another. */
  default_role: string;
  /** JSON: [{ group, role }], the first group (SCIM group display name) the person is in decides. */
  group_roles: string;
  created_by: string;
  created_at: number;
  rotated_at: number;
  last_used_at: number | null;
  seal: string;
}

/** What SCIM knows of a person beyond their membership (db/migrations/0020-scim.ts). */
export interface ScimUsersTable {
  org_id: string;
  user_id: string;
  user_name: string;
  external_id: string | null;
  /** 1 when SCIM created the account: only then does it change the account (email, name, status). */
  owned: number;
  /** The role given back when the person is activated again. */
  role_when_active: string;
  created_at: number;
  updated_at: number;
}

/** A team SCIM created and manages. */
export interface ScimGroupsTable {
  team_id: string;
  org_id: string;
  external_id: string | null;
  created_at: number;
  updated_at: number;
}

/** What a migration did that the audit log must show; the next start records it (db/upgrade-notes.ts). */
export interface UpgradeNotesTable {
  /** The migration's name. */
  id: string;
  /** JSON. */
  details: string;
  created_at: number;
  recorded_at: number | null;
}

export interface DB {
  audit_pii_keys: PiiKeysTable;
  audit_sinks: AuditSinksTable;
  notifications: NotificationsTable;
  user_devices: UserDevicesTable;
  email_outbox: EmailOutboxTable;
  bulk_runs: BulkRunsTable;
  audit_events: AuditEventsTable;
  sso_connections: SsoConnectionsTable;
  sso_identities: SsoIdentitiesTable;
  sso_sign_ins: SsoSignInsTable;
  saml_assertions: SamlAssertionsTable;
  sso_domains: SsoDomainsTable;
  scim_configs: ScimConfigsTable;
  scim_users: ScimUsersTable;
  scim_groups: ScimGroupsTable;
  upgrade_notes: UpgradeNotesTable;
  audit_chain_heads: AuditChainHeadsTable;
  audit_checkpoints: AuditCheckpointsTable;
  server_keys: ServerKeysTable;
  workload_identity_keys: WorkloadIdentityKeysTable;
  orgs: OrgsTable;
  users: UsersTable;
  memberships: MembershipsTable;
  sessions: SessionsTable;
  data_keys: DataKeysTable;
  secrets: SecretsTable;
  secret_versions: SecretVersionsTable;
  api_keys: ApiKeysTable;
  mfa_factors: MfaFactorsTable;
  recovery_codes: RecoveryCodesTable;
  webauthn_challenges: WebauthnChallengesTable;
  live_tickets: LiveTicketsTable;
  roles: RolesTable;
  role_bindings: RoleBindingsTable;
  teams: TeamsTable;
  team_members: TeamMembersTable;
  invitations: InvitationsTable;
  registration_tokens: RegistrationTokensTable;
  agents: AgentsTable;
  services: ServicesTable;
  commands: CommandsTable;
  command_approvals: CommandApprovalsTable;
  command_output: CommandOutputTable;
  command_policies: CommandPoliciesTable;
}
