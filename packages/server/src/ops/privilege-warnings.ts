import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../db/database.js';
import { ORG_OWNED_TABLES } from '../db/migrations/0030-row-level-security.js';

/**
 * Least privilege at run time (OWASP ASVS 5.0 13.2.2): the server needs neither root on its host nor a
 * superuser in PostgreSQL, and either would turn one flaw in the process (or a leaked connection
 * string) into the whole host or the whole database cluster. Neither is refused, since a container
 * image or a first trial may run that way on purpose; both are said out loud at every start.
 */
export async function warnAboutPrivileges(logger: Logger, database: Database): Promise<void> {
  if (process.getuid?.() === 0) {
    logger.warn(
      { uid: 0 },
      'running as root: run the server as an unprivileged user; a flaw in the process would otherwise own the host',
    );
  }
  if (database.dialect !== 'postgres') return;
  try {
    const { rows } = await sql<{ role: string; rolsuper: boolean; rolbypassrls: boolean; owns: boolean }>`
      select current_user as role, rolsuper, rolbypassrls,
        exists (select 1 from pg_tables where schemaname = current_schema() and tableowner = current_user) as owns
      from pg_roles where rolname = current_user
    `.execute(database.db);
    const role = rows[0];
    if (role?.rolsuper) {
      logger.warn(
        { role: role.role },
        'the PostgreSQL role is a superuser: give the server a role that owns only its own database; a flaw or a leaked connection string would otherwise reach the whole cluster',
      );
    } else if (role?.rolbypassrls) {
      logger.warn(
        { role: role.role },
        'the PostgreSQL role has BYPASSRLS: row-level security does not hold for it, and a query that forgets its organization would reach every organization',
      );
    } else if (role?.owns) {
      logger.info(
        { role: role.role },
        'the PostgreSQL role owns the schema: row-level security holds for it, but it could turn it off; set BULWARK_DATABASE_OWNER_URL to migrate as the owner and serve as a role with row access only',
      );
    }
    // The policies are the second lock on every org-owned table (HA-2): say so when any is off, as a
    // role owning the tables could have turned it off.
    const { rows: unguarded } = await sql<{ table: string }>`
      select relname as table from pg_class
      where relnamespace = current_schema()::regnamespace and relkind = 'r'
        and relname in (${sql.join([...Object.keys(ORG_OWNED_TABLES), 'data_keys'])})
        and not (relrowsecurity and relforcerowsecurity)
      order by relname
    `.execute(database.db);
    if (unguarded.length > 0) {
      logger.warn(
        { tables: unguarded.map((row) => row.table) },
        'row-level security is off on org-owned tables: a query that forgets its organization would reach every organization; run the migrations again as the schema owner or enable and force it',
      );
    }
  } catch (error) {
    // Only a warning is at stake: a role that may not read pg_roles is no reason to refuse to start.
    logger.debug({ err: error }, 'could not check whether the PostgreSQL role is a superuser');
  }
}
