import type { Kysely } from 'kysely';
import type { AuditService } from '../audit/audit.service.js';
import type { DB } from './schema.js';

/**
 * Records in the audit log what a migration noted (in its own transaction) that people must be able
 * to see: credentials sealed as an upgrade found them (0017). The note is marked recorded together
 * with its event, so each is recorded once, whether the migration ran at a start or by `bulwark
 * migrate`. Expected once per upgrade; the same event at any other time means someone rolled the
 * schema back to have rows of their own sealed.
 */
export async function recordUpgradeNotes(
  db: Kysely<DB>,
  audit: AuditService,
  clock: () => number,
): Promise<number> {
  const notes = await db.selectFrom('upgrade_notes').selectAll().where('recorded_at', 'is', null).execute();
  for (const note of notes) {
    await audit.withEvents(async (trx, events) => {
      const marked = await trx
        .updateTable('upgrade_notes')
        .set({ recorded_at: clock() })
        .where('id', '=', note.id)
        .where('recorded_at', 'is', null)
        .executeTakeFirst();
      // Another instance starting at the same moment recorded it first.
      if (marked.numUpdatedRows === 0n) return;
      events.push({
        actor: { type: 'system', id: 'migration', display: 'database migration' },
        action: 'credential.sealed_at_upgrade',
        target: { type: 'migration', id: note.id },
        outcome: 'success',
        details: {
          severity: 'critical',
          ...(JSON.parse(note.details) as { sealed: Array<{ table: string; rows: number }> }),
        },
      });
    });
  }
  return notes.length;
}
