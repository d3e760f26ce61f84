import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { DB } from '../db/schema.js';
import { createBackingTls } from '../net/backing-tls.js';
import type { DataKeyring } from '../secrets/data-keyring.js';
import { createEmailOutbox, type EmailOutbox } from './email-outbox.js';
import { createEmailOutboxStore } from './email-outbox.store.js';
import { createEmailSealer } from './email-seal.js';
import { createEmailTransport } from './email-transport.js';
import { createEmailMetrics, createEmailWorker } from './email-worker.js';

export interface EmailSetup {
  outbox: EmailOutbox;
  /** The sender; one per server (the CLI only writes to the outbox). */
  worker(logger: Logger, registry: Registry): ReturnType<typeof createEmailWorker>;
}

/** Email is on only when an SMTP server is configured (it is off by default); the inbox works either way. */
export async function setUpEmail(deps: {
  config: Pick<Config, 'smtp' | 'publicUrl' | 'backingTls'>;
  dataKeys: DataKeyring;
  db: Kysely<DB>;
  clock: () => number;
}): Promise<EmailSetup | undefined> {
  const { config, db, clock } = deps;
  const smtp = config.smtp;
  if (!smtp || !config.publicUrl) return undefined;
  const sealer = await createEmailSealer(deps.dataKeys, db);
  const tls = createBackingTls(config.backingTls);
  return {
    outbox: createEmailOutbox({ sealer, consoleUrl: config.publicUrl, clock }),
    worker: (logger, registry) =>
      createEmailWorker({
        store: createEmailOutboxStore(db),
        sealer,
        transport: () => createEmailTransport(smtp, tls),
        maxAttempts: smtp.maxAttempts,
        metrics: createEmailMetrics(registry),
        logger,
        clock,
      }),
  };
}
