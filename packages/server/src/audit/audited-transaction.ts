import type { Kysely, Transaction } from 'kysely';
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
 * Runs `work` in one transaction and records the audit events it collected once it has committed;
 * a {@link DeniedError} thrown inside is recorded after the rollback. Events cannot be recorded inside
 * the transaction: on SQLite the audit writer needs the one connection the transaction holds.
 */
export function createAuditedTransactions(db: Kysely<DB>, audit: AuditService) {
  return async function transact<T>(
    work: (trx: Transaction<DB>, events: AuditInput[]) => Promise<T>,
  ): Promise<T> {
    const events: AuditInput[] = [];
    let result: T;
    try {
      result = await db.transaction().execute((trx) => work(trx, events));
    } catch (error) {
      if (error instanceof DeniedError) await audit.record(error.event);
      throw error;
    }
    for (const event of events) await audit.record(event);
    return result;
  };
}

export type Transact = ReturnType<typeof createAuditedTransactions>;
