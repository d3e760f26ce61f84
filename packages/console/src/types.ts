/** The API's views, as the console reads them (the server's response schemas are the source). */

export interface Membership {
  orgId: string;
  slug: string;
  name: string;
  role: string;
  /** Members without a second factor reach only enrolment (MFA-4). */
  mfaRequired: boolean;
}

export interface SessionView {
  user: {
    id: string;
    email: string;
    displayName: string;
    passwordChangeRequired: boolean;
    mfaEnrolled: boolean;
  };
  /** The password was right; the sign-in waits for a code. */
  secondFactorRequired: boolean;
  memberships: Membership[];
  csrfToken: string;
}

/** GET /api/auth/status: whether this browser holds a live session. */
export type SignInStatus = { signedIn: false } | { signedIn: true; session: SessionView };

export interface MyAccess {
  org: { id: string; slug: string; name: string };
  role: string;
  permissions: string[];
  scoped: Array<{ selector: string; role: string; permissions: string[] }>;
}

export type Labels = Record<string, string>;

export interface AgentView {
  id: string;
  name: string;
  hostname: string;
  labels: Labels;
  status: 'online' | 'offline' | 'disabled' | 'revoked';
  /** Why a disabled or revoked agent runs nothing. */
  statusReason: string | null;
  lastSeenAt: string | null;
  createdAt: string;
}

/** One agent's page: its live connection to the server it is asked of, when connected there. */
export interface AgentDetailView extends AgentView {
  connection: { connectedAt: string; address: string; agentVersion: string } | null;
}

export interface RegistrationTokenView {
  id: string;
  description: string;
  labels: Labels;
  status: 'active' | 'used' | 'expired' | 'revoked';
  uses: number;
  usesAllowed: number;
  createdBy: string;
  createdAt: string;
  expiresAt: string;
}

export type Risk = 'low' | 'medium' | 'high' | 'critical';

export interface ActionView {
  name: string;
  description: string;
  params: JsonSchema;
  risk: Risk;
  timeoutSeconds: number;
  secrets: string[];
}

export interface ServiceView {
  id: string;
  name: string;
  agent: { id: string; name: string; status: AgentView['status'] };
  /** False when the agent is disabled or revoked: nothing can be run, and `unavailableReason` says why. */
  available: boolean;
  unavailableReason: string | null;
  kind: string;
  version: string;
  health: { status: string; message: string };
  config: Array<{ key: string; configured: boolean; value?: string }>;
  actions: ActionView[];
  updatedAt: string;
}

/** Every state a command can be in, in the order of its life (the commands filter lists them so). */
export const COMMAND_STATUSES = [
  'awaiting_approval',
  'held',
  'queued',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
  'skipped',
] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

export const TERMINAL: readonly CommandStatus[] = [
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
  'skipped',
];

export interface CommandView {
  id: string;
  agentId: string;
  service: string;
  action: string;
  params: Record<string, unknown>;
  reason: string;
  risk: Risk;
  status: CommandStatus;
  requestedBy: string;
  /** Empty when the account no longer exists: show the id then. */
  requestedByName: string;
  requestedByEmail: string;
  agentName: string;
  requiredApprovals: number;
  approvals: Array<{
    userId: string;
    name: string;
    email: string;
    decision: 'approved' | 'rejected';
    comment: string;
    at: string;
  }>;
  exitCode: number | null;
  message: string;
  outputBytes: number;
  outputTruncated: boolean;
  timeoutSeconds: number;
  /** What a decision sends back: the server refuses it if the command changed since it was shown. */
  paramsHash: string;
  createdAt: string;
  approvalExpiresAt: string | null;
  expiresAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface RiskRule {
  confirmation: boolean;
  approvals: number;
  stepUp: boolean;
}
export type CommandPolicy = Record<Risk, RiskRule>;

/** The subset of JSON Schema an action's params use, as far as the form reads it. */
export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  items?: JsonSchema;
  additionalProperties?: boolean | JsonSchema;
}

/** What adding or removing a factor answers: new recovery codes (the first factor), and sessions elsewhere. */
export interface FactorChange {
  recoveryCodes?: string[];
  otherSessions: number;
}

export type BulkRunStatus =
  | 'awaiting_approval'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'rejected'
  | 'expired';

export interface PersonView {
  id: string;
  email: string;
  name: string;
}

/** A bulk run (CMD-8): one action on every agent a selector matched, a few at a time. */
export interface BulkRunSummary {
  id: string;
  selector: string;
  service: string;
  action: string;
  params: Record<string, unknown>;
  reason: string;
  risk: Risk;
  status: BulkRunStatus;
  requestedBy: PersonView;
  maxConcurrency: { asked: string; resolved: number };
  maxErrors: { asked: string; resolved: number };
  targetCount: number;
  counts: Partial<Record<CommandStatus, number>>;
  stopReason: string;
  createdAt: string;
  finishedAt: string | null;
}

export interface BulkRunView extends BulkRunSummary {
  requiredApprovals: number;
  approvals: Array<{ by: PersonView; decision: 'approved' | 'rejected'; comment: string; at: string }>;
  targets: Array<{
    commandId: string;
    agent: { id: string; name: string };
    status: CommandStatus;
    exitCode: number | null;
    message: string;
    startedAt: string | null;
    finishedAt: string | null;
  }>;
}
