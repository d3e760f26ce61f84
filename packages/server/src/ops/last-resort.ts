import type { Logger } from 'pino';

export type UnhandledKind = 'uncaughtException' | 'unhandledRejection';

/**
 * The last resort for an error nothing caught. Node's default prints a bare stack trace to stderr,
 * past the logger and its redaction, and kills the process mid-request, mid-transaction; going on as if
 * nothing happened would leave a server in an unknown state answering requests. So: one fatal line
 * through the redacting logger, then the ordinary graceful close (listener, agent connections, the
 * last audit events, the database) bounded by the shutdown timeout, then a non-zero exit for the
 * supervisor to restart a fresh process.
 */
export function exitOnUnhandledErrors(options: {
  logger: Logger;
  close: () => Promise<void>;
  timeoutMs: number;
  /** Exits the process once the log is written. */
  exit: (code: number) => void;
}): void {
  const { logger, close, timeoutMs, exit } = options;
  let failing = false;
  const fail = (kind: UnhandledKind) => (error: unknown) => {
    // Whatever happens next, the process does not end with 0.
    process.exitCode = 1;
    if (failing) {
      logger.error({ err: error, kind }, 'another unhandled error while stopping');
      return;
    }
    failing = true;
    logger.fatal({ err: error, kind }, 'unhandled error; stopping');
    const deadline = setTimeout(() => {
      logger.error({ timeoutMs }, 'shutdown timed out; exiting');
      exit(1);
    }, timeoutMs);
    deadline.unref();
    close().then(
      () => exit(1),
      (closeError: unknown) => {
        logger.error({ err: closeError }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('uncaughtException', fail('uncaughtException'));
  process.on('unhandledRejection', fail('unhandledRejection'));
}
