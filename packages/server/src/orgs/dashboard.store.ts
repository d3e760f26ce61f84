import { type Kysely, sql } from 'kysely';
import type { AgentStatus, CommandStatus, DB, HealthStatus } from '../db/schema.js';

/** Most rows any one dashboard query reads: the dashboard summarizes, the lists page through the rest. */
const MAX_AGENTS = 5000;
const MAX_FAILED = 200;
const MAX_SERVICES = 1000;

export interface CommandBucketRow {
  bucket: number;
  status: CommandStatus;
  agentId: string | null;
  count: number;
}

/**
 * The reads behind the dashboard (UI-1), each confined to one organization. Visibility by label scope
 * is decided by the service on the agent each row belongs to, so every row carries its agent.
 */
export function createDashboardStore(db: Kysely<DB>) {
  return {
    async agents(orgId: string) {
      return db
        .selectFrom('agents')
        .select(['id', 'name', 'labels', 'status', 'last_seen_at'])
        .where('org_id', '=', orgId)
        .where('status', '!=', 'revoked' satisfies AgentStatus)
        .orderBy('id')
        .limit(MAX_AGENTS)
        .execute();
    },

    /**
     * Commands created in [from, from + buckets × bucketMs), counted per bucket and status, and per
     * agent when `perAgent` (a scoped caller sees only some agents' commands). The bucket is computed
     * in SQL by integer division, which both SQLite and PostgreSQL truncate for integer operands; the
     * two numbers are inlined as literals (they are integers the server chose) so that PostgreSQL
     * sees the same expression in the select list and in the GROUP BY.
     */
    async commandBuckets(
      orgId: string,
      window: { from: number; to: number; bucketMs: number },
      perAgent: boolean,
    ): Promise<CommandBucketRow[]> {
      const from = Math.trunc(window.from);
      const bucketMs = Math.trunc(window.bucketMs);
      const bucket = sql<number | string>`(created_at - ${sql.lit(from)}) / ${sql.lit(bucketMs)}`;
      let query = db
        .selectFrom('commands')
        .select([bucket.as('bucket'), 'status', (eb) => eb.fn.countAll<number | string>().as('count')])
        .where('org_id', '=', orgId)
        .where('created_at', '>=', from)
        .where('created_at', '<', Math.trunc(window.to))
        .groupBy([bucket, 'status']);
      if (perAgent) query = query.select('agent_id').groupBy('agent_id');
      const rows = await query.execute();
      return rows.map((row) => ({
        bucket: Number(row.bucket),
        status: row.status,
        agentId: 'agent_id' in row ? (row.agent_id as string) : null,
        count: Number(row.count),
      }));
    },

    /** Commands that ended failed or timed out since `since`, newest first, with agent and requester. */
    async failedCommands(orgId: string, since: number) {
      return db
        .selectFrom('commands')
        .innerJoin('agents', 'agents.id', 'commands.agent_id')
        .leftJoin('users', 'users.id', 'commands.requested_by')
        .select([
          'commands.id',
          'commands.agent_id',
          'commands.service',
          'commands.action',
          'commands.status',
          'commands.message',
          'commands.created_at',
          'commands.updated_at',
          'commands.finished_at',
          'commands.requested_by',
          'agents.name as agent_name',
          'agents.labels as agent_labels',
          'users.email as requester_email',
          'users.display_name as requester_name',
        ])
        .where('commands.org_id', '=', orgId)
        .where('commands.status', 'in', ['failed', 'timed_out'] satisfies CommandStatus[])
        .where('commands.updated_at', '>=', since)
        .orderBy('commands.updated_at', 'desc')
        .orderBy('commands.id', 'desc')
        .limit(MAX_FAILED)
        .execute();
    },

    /** Services whose last report was anything but up. */
    async servicesNotUp(orgId: string) {
      return db
        .selectFrom('services')
        .innerJoin('agents', 'agents.id', 'services.agent_id')
        .select([
          'services.id',
          'services.name',
          'services.health_status',
          'services.health_message',
          'services.updated_at',
          'services.agent_id',
          'agents.name as agent_name',
          'agents.labels as agent_labels',
        ])
        .where('services.org_id', '=', orgId)
        .where('services.health_status', '!=', 'up' satisfies HealthStatus)
        .where('agents.status', '!=', 'revoked' satisfies AgentStatus)
        .orderBy('services.name')
        .orderBy('services.id')
        .limit(MAX_SERVICES)
        .execute();
    },
  };
}

export type DashboardStore = ReturnType<typeof createDashboardStore>;
