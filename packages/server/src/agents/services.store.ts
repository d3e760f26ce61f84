import type { Kysely } from 'kysely';
import { compiledOnce } from '../db/compiled-once.js';
import type { DB, ServicesTable } from '../db/schema.js';

export type ServiceRow = ServicesTable;

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
    /** With the owning agent's name and labels: visibility is decided on the agent's labels. */
    list: (orgId: string, agentId?: string) => {
      let query = db
        .selectFrom('services')
        .innerJoin('agents', 'agents.id', 'services.agent_id')
        .selectAll('services')
        .select(['agents.name as agent_name', 'agents.labels as agent_labels'])
        .where('services.org_id', '=', orgId);
      if (agentId) query = query.where('services.agent_id', '=', agentId);
      return query.orderBy('services.name').orderBy('services.id').limit(1000).execute();
    },
  };
}

export type ServicesStore = ReturnType<typeof createServicesStore>;
