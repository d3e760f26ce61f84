import type { JsonValue } from '@bulwark/protocol';

/** Every audit action Bulwark records, as `domain.verb`. Adding one is adding it here. */
export const AUDIT_ACTIONS = [
  'audit.exported',
  'audit.pruned',
  'audit.sink_created',
  'audit.sink_updated',
  'audit.sink_deleted',
  'audit.sink_tested',
  'system.started',
  'system.stopped',
  'ops.metrics_auth_failed',
  'backup.created',
  'backup.restored',
  'identity.bootstrapped',
  'auth.login_succeeded',
  'auth.login_failed',
  'auth.logout',
  'auth.password_changed',
  'auth.csrf_rejected',
  'auth.locked_out',
  'auth.reauthenticated',
  'auth.session_revoked',
  'access.denied',
  'access.review_exported',
  'role.created',
  'role.updated',
  'role.deleted',
  'role_binding.created',
  'role_binding.deleted',
  'member.joined',
  'member.role_changed',
  'member.removed',
  'member.sessions_ended',
  'team.created',
  'team.updated',
  'team.deleted',
  'team.member_added',
  'team.member_removed',
  'invitation.created',
  'invitation.revoked',
  'invitation.accepted',
  'user.created',
  'user.password_reset',
  'user.disabled',
  'user.enabled',
  'user.sessions_ended',
  'user.erased',
  'personal_data.exported',
  'agent.registration_token_created',
  'agent.registration_token_revoked',
  'agent.registered',
  'agent.registration_refused',
  'agent.connected',
  'agent.disconnected',
  'agent.connection_refused',
  'agent.misbehaved',
  'agent.updated',
  'agent.disabled',
  'agent.enabled',
  'agent.revoked',
  'service.reported',
  'service.report_refused',
  'command.created',
  'command.approved',
  'command.rejected',
  'command.dispatched',
  'command.started',
  'command.succeeded',
  'command.failed',
  'command.timed_out',
  'command.cancelled',
  'command.cancel_requested',
  'command.expired',
  'command.refused_by_agent',
  'command.requeued',
  'command.integrity_failed',
  'command.policy_changed',
  'command.skipped',
  'command.released',
  'bulk_run.created',
  'bulk_run.approved',
  'bulk_run.rejected',
  'bulk_run.cancel_requested',
  'bulk_run.stopped',
  'bulk_run.finished',
  'keys.data_keys_rewrapped',
  'keys.data_key_rotated',
  'keys.workload_identity_rotated',
  'workload_identity.issued',
  'secret.created',
  'secret.updated',
  'secret.deleted',
  'secret.used',
  'apikey.created',
  'apikey.revoked',
  'auth.api_key_rejected',
  'auth.mfa_verified',
  'auth.mfa_failed',
  'mfa.factor_added',
  'mfa.factor_removed',
  'mfa.recovery_codes_generated',
  'mfa.recovery_code_used',
  'org.security_policy_changed',
  'credential.integrity_failed',
  'credential.sealed_at_upgrade',
  'sso.connection_created',
  'sso.connection_deleted',
  'sso.identity_linked',
  'sso.enforcement_changed',
  'auth.break_glass_sign_in',
  'sso.domain_added',
  'sso.domain_verified',
  'sso.domain_removed',
  'scim.configured',
  'scim.token_rotated',
  'scim.disabled',
  'scim.rejected',
  'user.updated',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export const ACTOR_TYPES = ['user', 'api_key', 'scim', 'agent', 'system', 'anonymous'] as const;
export type ActorType = (typeof ACTOR_TYPES)[number];

export const OUTCOMES = ['success', 'failure', 'denied'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** The chain of events that belong to no organization (instance start/stop, unattributed failures). */
export const INSTANCE_CHAIN = 'instance';

export interface AuditActor {
  type: ActorType;
  id?: string | null;
  display?: string | null;
}

export interface AuditTarget {
  type: string;
  id?: string | null;
  display?: string | null;
}

/** Where a request came from; filled from the HTTP request by `auditContextOf`. */
export interface AuditRequestContext {
  ip?: string | null;
  userAgent?: string | null;
  requestId?: string | null;
}

export interface AuditInput {
  /** The organization the event belongs to; absent for instance-level events. */
  orgId?: string | null;
  actor: AuditActor;
  action: AuditAction;
  target?: AuditTarget | null;
  outcome: Outcome;
  context?: AuditRequestContext;
  details?: { [key: string]: JsonValue };
}

export interface AuditEventRef {
  id: string;
  chainId: string;
  seq: number;
  hash: string;
}
