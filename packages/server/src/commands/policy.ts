import type { RISKS } from '@bulwark/protocol';

/**
 * The risk policy (CMD-3). What each risk asks before a command runs:
 * - low: nothing more;
 * - medium: the requester confirms explicitly;
 * - high: confirmation and one approval by someone else;
 * - critical: confirmation, two approvals, and a recent sign-in (step-up) for the requester and each
 *   approver.
 * The requester never counts as an approver. Approval requests expire after an hour; a queued command
 * that no agent picked up expires after ten minutes (delivery timeout, CMD-5).
 */

export type Risk = (typeof RISKS)[number];

export const APPROVAL_TTL_MS = 60 * 60_000;
export const DELIVERY_TTL_MS = 10 * 60_000;

export interface RiskPolicy {
  confirmation: boolean;
  approvals: number;
  stepUp: boolean;
}

export const RISK_POLICY: Record<Risk, RiskPolicy> = {
  low: { confirmation: false, approvals: 0, stepUp: false },
  medium: { confirmation: true, approvals: 0, stepUp: false },
  high: { confirmation: true, approvals: 1, stepUp: false },
  critical: { confirmation: true, approvals: 2, stepUp: true },
};
