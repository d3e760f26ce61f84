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
  lastSeenAt: string | null;
  createdAt: string;
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
  agent: { id: string; name: string };
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
  'queued',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

export const TERMINAL: readonly CommandStatus[] = [
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
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
  requiredApprovals: number;
  approvals: Array<{ userId: string; decision: 'approved' | 'rejected'; comment: string; at: string }>;
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
