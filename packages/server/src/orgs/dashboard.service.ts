import { type AccessSnapshot, isAllowed } from '../access/authorize.js';
import type { Caller } from '../access/caller.js';
import { parseLabels } from '../agents/agents.service.js';
import type { AuditEventRow } from '../audit/audit.chain.js';
import type { CommandStatus } from '../db/schema.js';
import type { DashboardStore } from './dashboard.store.js';

/** The periods the dashboard offers, each cut into buckets small enough to see a burst, few enough to draw. */
export const DASHBOARD_RANGES = {
  '1h': { spanMs: 3_600_000, bucketMs: 60_000 },
  '24h': { spanMs: 86_400_000, bucketMs: 1_800_000 },
  '7d': { spanMs: 604_800_000, bucketMs: 10_800_000 },
} as const;
export type DashboardRange = keyof typeof DASHBOARD_RANGES;

/** How a command's status is drawn: ended well, ended badly, or anything else (waiting, running, stopped). */
export const COMMAND_SERIES = ['succeeded', 'failed', 'other'] as const;
type Series = (typeof COMMAND_SERIES)[number];
const seriesOf = (status: CommandStatus): Series =>
  status === 'succeeded' ? 'succeeded' : status === 'failed' || status === 'timed_out' ? 'failed' : 'other';

const LISTED = 20;
const CRITICAL_LISTED = 10;

/**
 * "Is anything wrong?" in one answer (UI-1): commands over time, what failed in the period, agents
 * offline or disabled, services not up, approvals waiting, and recent critical audit events. Each part
 * is decided exactly as the list it summarizes: per agent's labels for agents, services, commands and
 * approvals (a label-scoped member counts only what is in their scope), org-wide for the audit log. A
 * part the caller may not see at all is null, not zero: zero would claim nothing is wrong there.
 */
export function createDashboardService(deps: {
  store: DashboardStore;
  /** When the agent's live connection last showed a heartbeat, if it is connected to this instance. */
  lastHeartbeat: (agentId: string) => number | undefined;
  /** The approvals inbox, as the approvals list decides it. */
  inbox: (caller: Caller) => Promise<unknown[]>;
  criticalEvents: (orgId: string, since: number, limit: number) => Promise<AuditEventRow[]>;
  clock: () => number;
}) {
  const { store, lastHeartbeat, inbox, criticalEvents, clock } = deps;

  /** `permission` on one agent's labels, with an org-wide grant answered once for all rows. */
  function visibility(access: AccessSnapshot, permission: string) {
    if (!isAllowed(access, permission, { kind: 'any' })) return undefined;
    const everywhere = isAllowed(access, permission, { kind: 'org' });
    const cache = new Map<string, boolean>();
    return (labels: string) => {
      if (everywhere) return true;
      let allowed = cache.get(labels);
      if (allowed === undefined) {
        allowed = isAllowed(access, permission, { kind: 'agent', labels: parseLabels(labels) });
        cache.set(labels, allowed);
      }
      return allowed;
    };
  }

  return {
    async summary(caller: Caller, range: DashboardRange) {
      const access = caller.org.access;
      const orgId = caller.org.id;
      const { spanMs, bucketMs } = DASHBOARD_RANGES[range];
      const now = clock();
      // Buckets end on a boundary after now, so that reloading within a bucket keeps the same axis.
      const to = Math.ceil((now + 1) / bucketMs) * bucketMs;
      const buckets = spanMs / bucketMs;
      const from = to - buckets * bucketMs;
      const since = now - spanMs;

      const agentRows = await store.agents(orgId);
      const labelsById = new Map(agentRows.map((row) => [row.id, row.labels]));
      const labelsOf = (agentId: string) => labelsById.get(agentId) ?? '{}';

      const commandsVisible = visibility(access, 'commands:read');
      let commands = null;
      let failed = null;
      if (commandsVisible) {
        const everywhere = isAllowed(access, 'commands:read', { kind: 'org' });
        const counts = Object.fromEntries(
          COMMAND_SERIES.map((series) => [series, new Array<number>(buckets).fill(0)]),
        ) as Record<Series, number[]>;
        for (const row of await store.commandBuckets(orgId, { from, to, bucketMs }, !everywhere)) {
          if (row.agentId !== null && !commandsVisible(labelsOf(row.agentId))) continue;
          if (row.bucket < 0 || row.bucket >= buckets) continue;
          counts[seriesOf(row.status)][row.bucket]! += row.count;
        }
        commands = {
          bucketStarts: Array.from({ length: buckets }, (_, i) => from + i * bucketMs),
          ...counts,
        };
        const failedRows = (await store.failedCommands(orgId, since)).filter((row) =>
          commandsVisible(row.agent_labels),
        );
        failed = {
          total: failedRows.length,
          commands: failedRows.slice(0, LISTED).map((row) => ({
            id: row.id,
            agent: { id: row.agent_id, name: row.agent_name },
            service: row.service,
            action: row.action,
            status: row.status as 'failed' | 'timed_out',
            message: row.message,
            requestedBy: {
              id: row.requested_by,
              email: row.requester_email,
              name: row.requester_name,
            },
            at: row.finished_at ?? row.updated_at,
          })),
        };
      }

      const agentsVisible = visibility(access, 'agents:read');
      let agents = null;
      if (agentsVisible) {
        const seen = agentRows.filter((row) => agentsVisible(row.labels));
        const statusOf = (row: (typeof seen)[number]) =>
          row.status !== 'active'
            ? ('disabled' as const)
            : lastHeartbeat(row.id) !== undefined
              ? ('online' as const)
              : ('offline' as const);
        const problems = seen
          .map((row) => ({ row, status: statusOf(row) }))
          .filter(({ status }) => status !== 'online');
        agents = {
          online: seen.length - problems.length,
          offline: problems.filter(({ status }) => status === 'offline').length,
          disabled: problems.filter(({ status }) => status === 'disabled').length,
          problems: problems.slice(0, LISTED).map(({ row, status }) => {
            const lastSeen = lastHeartbeat(row.id) ?? row.last_seen_at;
            return { id: row.id, name: row.name, status, lastSeenAt: lastSeen };
          }),
        };
      }

      const servicesVisible = visibility(access, 'services:read');
      let services = null;
      if (servicesVisible) {
        const notUp = (await store.servicesNotUp(orgId)).filter((row) => servicesVisible(row.agent_labels));
        services = {
          notUpTotal: notUp.length,
          notUp: notUp.slice(0, LISTED).map((row) => ({
            id: row.id,
            name: row.name,
            agent: { id: row.agent_id, name: row.agent_name },
            status: row.health_status,
            message: row.health_message,
            updatedAt: row.updated_at,
          })),
        };
      }

      const approvals = isAllowed(access, 'approvals:decide', { kind: 'any' })
        ? { pending: (await inbox(caller)).length }
        : null;

      // The audit log is read org-wide or not at all (audit:read is not agent-scoped).
      const critical = isAllowed(access, 'audit:read', { kind: 'org' })
        ? await criticalEvents(orgId, since, CRITICAL_LISTED)
        : null;

      return { range, from, to, bucketMs, now, commands, failed, agents, services, approvals, critical };
    },
  };
}

export type DashboardService = ReturnType<typeof createDashboardService>;
