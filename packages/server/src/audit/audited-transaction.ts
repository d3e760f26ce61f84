import type { Transaction } from 'kysely';
import type { DB } from '../db/schema.js';
import { AppError } from '../errors.js';
import type { AuditService } from './audit.service.js';
import type { AuditInput } from './audit.types.js';

/** A refusal that is itself an audit event (a denied grant, an elevation attempt): recorded, then answered. */
export class DeniedError extends AppError {
  constructor(
    status: number,
    code: string,
    message: string,
    readonly event: AuditInput,
  ) {
    super(status, code, message);
  }
}

/**
 * Runs `work` in one transaction together with the audit events it collects (AUD-7: they commit
 * together or not at all). A {@link DeniedError} thrown inside rolls the work back and is recorded on
 * its own, since a denial changes nothing but must still be in the log.
 */
export function createAuditedTransactions(audit: AuditService) {
  return async function transact<T>(
    work: (trx: Transaction<DB>, events: AuditInput[]) => Promise<T>,
  ): Promise<T> {
    try {
      return await audit.withEvents(work);
    } catch (error) {
      if (error instanceof DeniedError) await audit.record(error.event);
      throw error;
    }
  };
}

export type Transact = ReturnType<typeof createAuditedTransactions>;
