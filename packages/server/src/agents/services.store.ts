import type { Kysely } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import { afterCursor, type Cursor, containsAny, type SortOrder } from '../db/keyset.js';
import type { AgentStatus, DB, HealthStatus, ServicesTable } from '../db/schema.js';

export type ServiceRow = ServicesTable;
export type ServiceSortColumn =
  | 'services.name'
  | 'agents.name'
  | 'services.health_status'
  | 'services.updated_at';

export interface ServiceListQuery {
  agentId?: string;
  /** Found in the service's name or kind, or its agent's name. */
  text?: string;
  health?: HealthStatus;
  order: SortOrder<ServiceSortColumn>;
  from?: Cursor;
  limit: number;
}

/** A service with what its agent decides: visibility (labels) and whether it can run anything (status). */
export type ServiceListRow = ServiceRow & {
  agent_name: string;
  agent_labels: string;
  agent_status: AgentStatus;
};

/** Services reported by agents (AGT-5); each row belongs to the one agent that reported it. */
export function createServicesStore(db: Kysely<DB>) {
  // Every command's creation looks up the action its agent declared.
  const ofAgent = compiledOnce(db, (args: { agentId: string }) =>
    db.selectFrom('services').selectAll().where('agent_id', '=', args.agentId),
  );
  return {
    ofAgent: (agentId: string) => ofAgent.all({ agentId }),
    async insert(row: ServiceRow, trx: Kysely<DB> = db): Promise<void> {
      await trx.insertInto('services').values(row).execute();
    },
    async replace(row: ServiceRow, trx: Kysely<DB> = db): Promise<void> {
      const { id, org_id, agent_id, created_at, ...changes } = row;
      // Keyed by the reporting agent as well as the id: an agent can only ever touch its own services.
      await trx
        .updateTable('services')
        .set(changes)
        .where('id', '=', id)
        .where('agent_id', '=', agent_id)
        .execute();
    },
    /** A page, with the owning agent's name, labels and status: visibility is decided on its labels. */
    list: (orgId: string, q: ServiceListQuery): Promise<ServiceListRow[]> => {
      let query = db
        .selectFrom('services')
        .innerJoin('agents', 'agents.id', 'services.agent_id')
        .selectAll('services')
        .select([
          'agents.name as agent_name',
          'agents.labels as agent_labels',
          'agents.status as agent_status',
        ])
        .where('services.org_id', '=', orgId);
      if (q.agentId) query = query.where('services.agent_id', '=', q.agentId);
      if (q.text) query = query.where(containsAny(['services.name', 'services.kind', 'agents.name'], q.text));
      if (q.health) query = query.where('services.health_status', '=', q.health);
      if (q.from) query = query.where(afterCursor(q.order.column, 'services.id', q.order.direction, q.from));
      return query
        .orderBy(q.order.column, q.order.direction)
        .orderBy('services.id', q.order.direction)
        .limit(q.limit)
        .execute();
    },
  };
}

export type ServicesStore = ReturnType<typeof createServicesStore>;
