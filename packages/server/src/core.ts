import type { Logger } from 'pino';
import { createAuditService } from './audit/audit.service.js';
import { createAuditStore } from './audit/audit.store.js';
import { type AuditPii, createAuditPii, EMAIL_SUBJECT_PURPOSE } from './audit/audit-pii.js';
import type { Config } from './config.js';
import { type Database, openDatabase } from './db/database.js';
import { createGroupCommit, type GroupCommit } from './db/group-commit.js';
import { migrateDatabase } from './db/migrate.js';
import { recordUpgradeNotes } from './db/upgrade-notes.js';
import { type EmailSetup, setUpEmail } from './notifications/email-setup.js';
import {
  createNotificationsService,
  type NotificationsService,
  withNotifications,
} from './notifications/notifications.service.js';
import { createNotificationsStore } from './notifications/notifications.store.js';
import { createMetrics } from './ops/metrics.js';
import { createDataKeyring, type DataKeyring } from './secrets/data-keyring.js';
import { createDataKeysStore } from './secrets/data-keys.store.js';
import { createLocalKeyProvider, type MasterKeyProvider } from './secrets/key-provider.js';
import { loadMasterKeys, reloadMasterKeys } from './secrets/master-key.js';
import { createServerKeysService } from './secrets/server-keys.service.js';
import { createServerKeysStore } from './secrets/server-keys.store.js';

/**
 * What the CLI and the server share: the database (migrated), the keyring, the audit log and the
 * notices it raises. Kept apart from the HTTP server (main.ts) so that a CLI command loads only
 * this, not fastify and every route: each `bulwark` invocation starts in a fraction of the time.
 */

export interface CoreServices {
  database: Database;
  /** The one group commit of the database: audit appends and command writes share its commits. */
  groupCommit: GroupCommit;
  audit: ReturnType<typeof createAuditService>;
  serverKeys: ReturnType<typeof createServerKeysService>;
  metrics: ReturnType<typeof createMetrics>;
  /** Seals and opens every sensitive value at rest (DATA-1). */
  dataKeys: DataKeyring;
  /** Wraps the data keys (SEC-1). */
  masterKeys: MasterKeyProvider;
  /** Seals and opens the personal fields of audit events under per-person keys (DATA-2). */
  pii: AuditPii;
  /** The email outbox and its sender, when SMTP is configured (NOTIFY-1). */
  email: EmailSetup | undefined;
  notifications: NotificationsService;
}

/**
 * Opens the database (migrated) and the services the CLI and the server share. Refuses a master key
 * that does not open the server's keys: starting with the wrong key would silently fork the audit
 * signing identity.
 */
export async function openCore(
  config: Config,
  logger: Logger,
  clock: () => number = Date.now,
): Promise<CoreServices> {
  const masterKeySource = { fromEnv: config.masterKey, file: config.masterKeyFile };
  const master = loadMasterKeys(masterKeySource);
  if (master.origin === 'generated')
    logger.warn(
      { file: config.masterKeyFile },
      'generated a new master key file; back it up apart from the database',
    );
  const masterKeys = createLocalKeyProvider(master.keys, () => reloadMasterKeys(masterKeySource));
  const database = openDatabase(config);
  try {
    const applied = await migrateDatabase(database, config, {
      onWaitForLock: () => logger.info('waiting for another process to finish migrating the database'),
      context: { credentials: { masterKeys, clock } },
    });
    if (applied.length > 0) logger.info({ applied }, 'database migrations applied');
    const dataKeys = createDataKeyring({
      store: createDataKeysStore(database.db),
      provider: masterKeys,
      clock,
    });
    const serverKeys = createServerKeysService({
      store: createServerKeysStore(database.db),
      dataKeys,
      masterKeys,
      clock,
    });
    await serverKeys.assertIntegrity();
    const metrics = createMetrics();
    // Addresses without an account are key holders by an HMAC under an instance key, derived from the
    // instance's first data key (kept for ever, retired or not): the same address, the same holder,
    // across data-key rotations.
    await dataKeys.activeKeyId('instance');
    const firstInstanceKey = await database.db
      .selectFrom('data_keys')
      .select('id')
      .where('scope', '=', 'instance')
      .orderBy('created_at')
      .orderBy('id')
      .executeTakeFirstOrThrow();
    const pii = createAuditPii({
      db: database.db,
      provider: masterKeys,
      clock,
      subjectKey: await dataKeys.deriveKeyFrom('instance', firstInstanceKey.id, EMAIL_SUBJECT_PURPOSE),
    });
    const groupCommit = createGroupCommit(database.db);
    // Email (NOTIFY-1) when SMTP is configured: written to the outbox with the change it tells about.
    const email = await setUpEmail({ config, dataKeys, db: database.db, clock });
    const notifications = createNotificationsService({
      store: createNotificationsStore(database.db),
      clock,
      email: email?.outbox,
    });
    // Changes to a person's account tell that person (NOTIFY-1), in the change's own transaction.
    const audit = withNotifications(
      createAuditService({
        store: createAuditStore(database.db, database.dialect, groupCommit),
        serverKeys,
        clock,
        logger,
        metrics: metrics.audit,
        options: config.audit,
        pii,
      }),
      notifications,
    );
    await audit.ensureSigningKey();
    if ((await recordUpgradeNotes(database.db, audit, clock)) > 0)
      logger.warn('sealed the credentials the database held before this upgrade (see the audit log)');
    return {
      database,
      groupCommit,
      audit,
      serverKeys,
      metrics,
      dataKeys,
      masterKeys,
      pii,
      email,
      notifications,
    };
  } catch (error) {
    await database.close();
    throw error;
  }
}
