import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import pino from 'pino';
import { GENESIS_HASH, hashOfRow } from '../audit/audit.chain.js';
import { createAuditService } from '../audit/audit.service.js';
import { createAuditStore } from '../audit/audit.store.js';
import { createAuditPii } from '../audit/audit-pii.js';
import type { Database } from '../db/database.js';
import type { GroupCommit } from '../db/group-commit.js';
import { migrateToLatest } from '../db/migrate.js';
import type { AuditEventsTable, DB } from '../db/schema.js';
import { createMetrics } from '../ops/metrics.js';
import { createDataKeyring } from '../secrets/data-keyring.js';
import { createDataKeysStore } from '../secrets/data-keys.store.js';
import { createLocalKeyProvider } from '../secrets/key-provider.js';
import { createServerKeysService } from '../secrets/server-keys.service.js';
import { createServerKeysStore } from '../secrets/server-keys.store.js';

/** A settable clock: tests move time instead of waiting for it. */
export function manualClock(start = Date.UTC(2026, 0, 1)) {
  let now = start;
  return {
    now: () => now,
    set: (ms: number) => {
      now = ms;
    },
    advance: (ms: number) => {
      now += ms;
    },
  };
}

/** The real audit service over a migrated test database, with a fresh master key. */
export async function openAudit(
  database: Database,
  options: {
    checkpointEvery?: number;
    retentionDays?: number;
    clock?: () => number;
    masterKey?: Buffer;
    /** A group commit shared with other writers, as the server shares one. */
    groupCommit?: GroupCommit;
  } = {},
) {
  await migrateToLatest(database);
  const masterKey = options.masterKey ?? randomBytes(32);
  const clock = options.clock ?? Date.now;
  const masterKeys = createLocalKeyProvider({ current: masterKey, previous: [] }, () => ({
    current: masterKey,
    previous: [],
  }));
  const serverKeys = createServerKeysService({
    store: createServerKeysStore(database.db),
    dataKeys: createDataKeyring({ store: createDataKeysStore(database.db), provider: masterKeys, clock }),
    masterKeys,
    clock,
  });
  const store = createAuditStore(database.db, database.dialect, options.groupCommit);
  const audit = createAuditService({
    store,
    serverKeys,
    clock,
    logger: pino({ level: 'silent' }),
    metrics: createMetrics().audit,
    options: {
      checkpointEvery: options.checkpointEvery ?? 1000,
      retentionDays: options.retentionDays ?? 365,
      checkpointIntervalSeconds: 300,
    },
    pii: createAuditPii({ db: database.db, provider: masterKeys, clock }),
  });
  return { audit, store, serverKeys, masterKey, db: database.db };
}

/** How many audit events the database holds, all chains together. */
export async function countEvents(db: Kysely<DB>): Promise<number> {
  const row = await db
    .selectFrom('audit_events')
    .select((eb) => eb.fn.countAll().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * What an attacker with write access to the database can do without any key: apply `edit` to events
 * of a chain and recompute every hash from genesis, so the chain is self-consistent again.
 */
export async function rewriteChain(
  db: Kysely<DB>,
  chainId: string,
  edit: (row: AuditEventsTable) => Partial<Pick<AuditEventsTable, 'outcome' | 'details' | 'actor_display'>>,
): Promise<void> {
  const rows = await db
    .selectFrom('audit_events')
    .selectAll()
    .where('chain_id', '=', chainId)
    .orderBy('seq')
    .execute();
  let prev = GENESIS_HASH;
  for (const row of rows) {
    const changes = { ...edit(row), prev_hash: prev };
    const hash = hashOfRow({ ...row, ...changes });
    await db
      .updateTable('audit_events')
      .set({ ...changes, hash })
      .where('id', '=', row.id)
      .execute();
    prev = hash;
  }
  await db.updateTable('audit_chain_heads').set({ hash: prev }).where('chain_id', '=', chainId).execute();
}
