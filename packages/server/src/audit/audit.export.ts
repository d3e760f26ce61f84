import { canonicalJson } from '@bulwark/protocol';
import { type AuditEventRow, chainedEvent } from './audit.chain.js';

/**
 * Export formats (AUD-4). Both carry the chain fields (seq, prevHash, hash) so a third party can
 * verify an export without Bulwark: see docs/audit.md. Personal fields are exported as hashed (sealed,
 * for events written since DATA-2) and, beside them, as read (`shown`: opened, or `(erased)`).
 */

export const EXPORT_FORMATS = ['ndjson', 'csv'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

const CSV_COLUMNS = [
  'seq',
  'id',
  'time',
  'ts',
  'chain',
  'org',
  'actor_type',
  'actor_id',
  'actor_display',
  'ip',
  'user_agent',
  'action',
  'target_type',
  'target_id',
  'target_display',
  'outcome',
  'request_id',
  'details',
  'prev_hash',
  'hash',
  'shown_actor_display',
  'shown_ip',
  'shown_user_agent',
  'shown_target_display',
] as const;

/**
 * A spreadsheet runs a cell that starts with = + - @ (or a tab/CR that hides one) as a formula, so an
 * attacker who controls a display name could make an auditor's spreadsheet fetch URLs or run DDE.
 * OWASP's remedy: prefix such cells with a single quote, which spreadsheets show as text. A cell that
 * already starts with a quote gets one too, so removing exactly one leading quote from any cell that
 * starts with one restores the original (needed to re-hash a CSV export). Cells holding a separator of
 * any locale (`,` `;` tab) or a line break are quoted, so no locale splits one into a new cell.
 */
export function csvCell(value: string | number | null): string {
  if (value === null) return '';
  let text = String(value);
  if (/^[=+\-@\t\r']/.test(text)) text = `'${text}`;
  return /[",;\t\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function csvLine(row: AuditEventRow, shown: AuditEventRow): string {
  const cells: Record<(typeof CSV_COLUMNS)[number], string | number | null> = {
    seq: row.seq,
    id: row.id,
    time: new Date(row.ts).toISOString(),
    ts: row.ts,
    chain: row.chain_id,
    org: row.org_id,
    actor_type: row.actor_type,
    actor_id: row.actor_id,
    actor_display: row.actor_display,
    ip: row.ip,
    user_agent: row.user_agent,
    action: row.action,
    target_type: row.target_type,
    target_id: row.target_id,
    target_display: row.target_display,
    outcome: row.outcome,
    request_id: row.request_id,
    details: row.details,
    prev_hash: row.prev_hash,
    hash: row.hash,
    shown_actor_display: shown.actor_display,
    shown_ip: shown.ip,
    shown_user_agent: shown.user_agent,
    shown_target_display: shown.target_display,
  };
  return `${CSV_COLUMNS.map((column) => csvCell(cells[column])).join(',')}\r\n`;
}

/**
 * One JSON object per line: exactly the hashed event, plus `prevHash`, `hash`, a readable `time` and
 * `shown`, the personal fields as read (opened, or `(erased)`; the same as hashed for plain events).
 * Without `shown` (a sink not trusted with personal data) the line holds only the sealed/hashed form,
 * which is all verification needs, and which erasure (shredding the person's key) reaches.
 */
export function ndjsonLine(row: AuditEventRow, shown?: AuditEventRow): string {
  return `${canonicalJson({
    ...chainedEvent(row),
    prevHash: row.prev_hash,
    hash: row.hash,
    time: new Date(row.ts).toISOString(),
    ...(shown
      ? {
          shown: {
            actorDisplay: shown.actor_display,
            ip: shown.ip,
            userAgent: shown.user_agent,
            targetDisplay: shown.target_display,
          },
        }
      : {}),
  })}\n`;
}

export const exportFormatters: Record<
  ExportFormat,
  { header?: string; contentType: string; line: (row: AuditEventRow, shown: AuditEventRow) => string }
> = {
  ndjson: { contentType: 'application/x-ndjson', line: ndjsonLine },
  csv: { header: `${CSV_COLUMNS.join(',')}\r\n`, contentType: 'text/csv; charset=utf-8', line: csvLine },
};
