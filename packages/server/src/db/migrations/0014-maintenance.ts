import type { Kysely } from 'kysely';

/**
 * PLAT-6: command output is pruned by age. Without an index on the output's own time, each bounded
 * delete would walk every command ever run to find rows left to prune, holding SQLite's write lock for
 * as long as the history is big; with it, a delete reads only the old rows it removes (and the few of
 * long-running commands that straddle the cutoff).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.createIndex('command_output_created').on('command_output').column('created_at').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('command_output_created').execute();
}
