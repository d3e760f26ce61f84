import { MIN_APPROVALS, type RISKS } from '@bulwark/protocol';

/**
 * The risk policy (CMD-3). What each risk asks before a command runs:
 * - low: nothing more;
 * - medium: the requester confirms explicitly;
 * - high: confirmation and one approval by someone else;
 * - critical: confirmation, two approvals, and a recent sign-in (step-up) for the requester and each
 *   approver.
 * The requester never counts as an approver. Approval requests expire after an hour; a queued command
 * that no agent picked up expires after ten minutes (delivery timeout, CMD-5); a running command times
 * out on the server too, when its agent never reports the end (execution timeout).
 */

export type Risk = (typeof RISKS)[number];

export const APPROVAL_TTL_MS = 60 * 60_000;
export const DELIVERY_TTL_MS = 10 * 60_000;
/**
 * A running command whose agent reported no end this long after the action's timeout is ended by
 * the server as timed out (the agent kills it at the timeout; this covers an agent that never comes
 * back to say so). Room for the agent's SIGTERM-then-SIGKILL grace and a reconnect.
 */
export const EXECUTION_GRACE_MS = 2 * 60_000;

// A type, not an interface: it is written into audit details as plain JSON.
export type RiskPolicy = { confirmation: boolean; approvals: number; stepUp: boolean };

export const RISK_POLICY: Record<Risk, RiskPolicy> = {
  low: { confirmation: false, approvals: MIN_APPROVALS.low, stepUp: false },
  medium: { confirmation: true, approvals: MIN_APPROVALS.medium, stepUp: false },
  high: { confirmation: true, approvals: MIN_APPROVALS.high, stepUp: false },
  critical: { confirmation: true, approvals: MIN_APPROVALS.critical, stepUp: true },
};

export type OrgPolicy = Record<Risk, RiskPolicy>;
export const MAX_APPROVALS = 5;

/** Where `proposed` would loosen the built-in policy; empty when it only keeps or tightens it. */
export function looseningsOf(proposed: OrgPolicy): string[] {
  const problems: string[] = [];
  for (const risk of Object.keys(RISK_POLICY) as Risk[]) {
    const floor = RISK_POLICY[risk];
    const wanted = proposed[risk];
    if (floor.confirmation && !wanted.confirmation)
      problems.push(`${risk}: confirmation cannot be turned off`);
    if (wanted.approvals < floor.approvals) problems.push(`${risk}: at least ${floor.approvals} approval(s)`);
    if (floor.stepUp && !wanted.stepUp) problems.push(`${risk}: step-up cannot be turned off`);
  }
  return problems;
}
