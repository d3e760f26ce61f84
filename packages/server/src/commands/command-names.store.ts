import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.js';

export interface PersonName {
  name: string;
  email: string;
}

/**
 * The names a command view shows instead of ids: the people who asked and decided, the agents it
 * ran on. One query each for a whole page of commands, never one per row. The ids come from the
 * organization's own commands; agents are read within the organization.
 */
export function createCommandNamesStore(db: Kysely<DB>) {
  return {
    async people(userIds: readonly string[]): Promise<Map<string, PersonName>> {
      const ids = [...new Set(userIds)];
      if (ids.length === 0) return new Map();
      const rows = await db
        .selectFrom('users')
        .select(['id', 'email', 'display_name'])
        .where('id', 'in', ids)
        .execute();
      return new Map(rows.map((row) => [row.id, { name: row.display_name, email: row.email }]));
    },

    async agents(orgId: string, agentIds: readonly string[]): Promise<Map<string, string>> {
      const ids = [...new Set(agentIds)];
      if (ids.length === 0) return new Map();
      const rows = await db
        .selectFrom('agents')
        .select(['id', 'name'])
        .where('org_id', '=', orgId)
        .where('id', 'in', ids)
        .execute();
      return new Map(rows.map((row) => [row.id, row.name]));
    },
  };
}

export type CommandNamesStore = ReturnType<typeof createCommandNamesStore>;
