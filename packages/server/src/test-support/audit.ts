import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { createAuditService } from '../audit/audit.service.js';
import { createAuditStore } from '../audit/audit.store.js';
import type { Database } from '../db/database.js';
import { migrateToLatest } from '../db/migrate.js';
import { createMetrics } from '../ops/metrics.js';
import { createKeyring } from '../secrets/keyring.js';
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
  } = {},
) {
  await migrateToLatest(database);
  const masterKey = options.masterKey ?? randomBytes(32);
  const clock = options.clock ?? Date.now;
  const serverKeys = createServerKeysService({
    store: createServerKeysStore(database.db),
    keyring: createKeyring({ current: masterKey }),
    clock,
  });
  const store = createAuditStore(database.db, database.dialect);
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
  });
  return { audit, store, serverKeys, masterKey, db: database.db };
}
