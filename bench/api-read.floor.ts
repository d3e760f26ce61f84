/**
 * The floor under bench/api-read: the database reads of one list request, run through the server's
 * own store functions on the server's own SQLite file, with nothing around them. The guard's reads
 * (session, organization and membership, role bindings), then the list's: members and their teams,
 * or the first page of agents.
 */
import { performance } from 'node:perf_hooks';

type DatabaseModule = typeof import('../packages/server/src/db/database.js');
type SessionsModule = typeof import('../packages/server/src/identity/sessions.store.js');
type AccessModule = typeof import('../packages/server/src/access/access.store.js');
type OrgsModule = typeof import('../packages/server/src/orgs/orgs.store.js');
type TeamsModule = typeof import('../packages/server/src/orgs/teams.store.js');
type AgentsModule = typeof import('../packages/server/src/agents/agents.store.js');
type TokensModule = typeof import('../packages/protocol/src/tokens.js');
const server = new URL('../packages/server/dist/', import.meta.url);
const load = <T>(file: string) => import(new URL(file, server).href) as Promise<T>;
const { openSqlite } = await load<DatabaseModule>('db/database.js');
const { createSessionsStore } = await load<SessionsModule>('identity/sessions.store.js');
const { createAccessStore } = await load<AccessModule>('access/access.store.js');
const { createOrgsStore } = await load<OrgsModule>('orgs/orgs.store.js');
const { createTeamsStore } = await load<TeamsModule>('orgs/teams.store.js');
const { createAgentsStore } = await load<AgentsModule>('agents/agents.store.js');
const { tokenHash } = (await import(
  new URL('../packages/protocol/dist/tokens.js', import.meta.url).href
)) as TokensModule;

export interface ListRead {
  databaseFile: string;
  sessionToken: string;
  userId: string;
  slug: string;
}

const WARMUP = 2_000;
const ROUNDS = 20_000;

/** `members`: the members list (members, their teams); `agents`: the first page of agents (50). */
export async function listReadFloor(
  read: ListRead,
  list: 'members' | 'agents',
): Promise<{ queries: number; microseconds: number }> {
  const database = openSqlite({ file: read.databaseFile, busyTimeoutMs: 5_000 });
  try {
    const sessions = createSessionsStore(database.db);
    const access = createAccessStore(database.db);
    const orgs = createOrgsStore(database.db);
    const teams = createTeamsStore(database.db);
    const agents = createAgentsStore(database.db);
    const once = async () => {
      const session = await sessions.findLive(tokenHash(read.sessionToken));
      const org = await access.orgWithMembership(read.slug, read.userId);
      if (!session || !org?.role) throw new Error('the floor measurement found no session or membership');
      await access.bindingGrantsOf(org.id, read.userId);
      if (list === 'members') await Promise.all([orgs.listMembers(org.id), teams.teamsOfMembers(org.id)]);
      else await agents.page(org.id, 50);
    };
    for (let i = 0; i < WARMUP; i++) await once();
    const started = performance.now();
    for (let i = 0; i < ROUNDS; i++) await once();
    return {
      queries: list === 'members' ? 5 : 4,
      microseconds: ((performance.now() - started) * 1000) / ROUNDS,
    };
  } finally {
    await database.close();
  }
}
