import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { EmailOutboxStore, EmailRow } from './email-outbox.store.js';
import type { EmailSealer } from './email-seal.js';
import type { EmailTransport } from './email-transport.js';

/** Messages taken per run; the rest wait for the next one. */
const BATCH = 50;
/** A claimed message is due again after this if its worker died mid-send (longer than any SMTP timeout). */
export const LEASE_MS = 2 * 60_000;
const FIRST_RETRY_MS = 30_000;
const LONGEST_RETRY_MS = 3600_000;

/** Wait before attempt `attempts + 1`: doubling from 30 s, at most an hour. */
export function retryDelay(attempts: number): number {
  return Math.min(FIRST_RETRY_MS * 2 ** Math.max(0, attempts - 1), LONGEST_RETRY_MS);
}

export function createEmailMetrics(registry: Registry) {
  const registers = [registry];
  return {
    sent: new Counter({
      name: 'bulwark_email_sent_total',
      help: 'Emails the SMTP server accepted.',
      registers,
    }),
    attemptsFailed: new Counter({
      name: 'bulwark_email_attempts_failed_total',
      help: 'Send attempts that failed (SMTP unreachable, TLS refused, message refused); each is retried.',
      registers,
    }),
    failed: new Counter({
      name: 'bulwark_email_failed_total',
      help: 'Emails given up on after BULWARK_SMTP_MAX_ATTEMPTS attempts (see email_outbox.last_error).',
      registers,
    }),
    pending: new Gauge({
      name: 'bulwark_email_pending',
      help: 'Emails waiting in the outbox as of the last run of the sender.',
      registers,
    }),
  };
}

export type EmailMetrics = ReturnType<typeof createEmailMetrics>;

/** One line of an error, without anything multi-line a server may have echoed. */
const reason = (error: unknown) =>
  (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').slice(0, 300);

/**
 * Sends what the outbox holds. A message leaves `pending` only when the SMTP server accepted it
 * (`sent`) or after its last attempt (`failed`, counted in `bulwark_email_failed_total`); until then
 * every failure — the server down, its certificate refused — schedules another attempt with backoff,
 * so an outage or a restart loses nothing.
 */
export function createEmailWorker(deps: {
  store: EmailOutboxStore;
  sealer: EmailSealer;
  /** A transport for one run (made per run, so a changed CA file is read again). */
  transport: () => EmailTransport;
  maxAttempts: number;
  metrics: EmailMetrics;
  logger: Logger;
  clock: () => number;
}) {
  const { store, sealer, metrics, logger, clock } = deps;

  async function attempt(row: EmailRow, transport: EmailTransport): Promise<void> {
    const attempts = row.attempts + 1;
    try {
      const message = await sealer.open(row.id, row.sealed);
      await transport.send({
        to: { name: message.name, address: row.recipient },
        subject: message.subject,
        text: message.text,
      });
      await store.markSent(row.id, attempts, clock());
      metrics.sent.inc();
    } catch (error) {
      metrics.attemptsFailed.inc();
      const why = reason(error);
      if (attempts >= deps.maxAttempts) {
        await store.markFailed(row.id, attempts, why);
        metrics.failed.inc();
        logger.error({ email: row.id, kind: row.kind, attempts, reason: why }, 'gave up sending an email');
      } else {
        await store.markRetry(row.id, attempts, clock() + retryDelay(attempts), why);
        logger.warn(
          { email: row.id, kind: row.kind, attempts, reason: why },
          'could not send an email; will retry',
        );
      }
    }
  }

  return {
    /** Sends the messages due now; returns how many it attempted. */
    async runOnce(): Promise<number> {
      const now = clock();
      const due = await store.due(now, BATCH);
      let attempted = 0;
      if (due.length > 0) {
        const transport = deps.transport();
        try {
          for (const row of due) {
            if (!(await store.claim(row, now + LEASE_MS))) continue;
            attempted += 1;
            await attempt(row, transport);
          }
        } finally {
          transport.close();
        }
      }
      metrics.pending.set(await store.pendingCount());
      return attempted;
    },
  };
}
