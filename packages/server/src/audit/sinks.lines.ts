import { canonicalJson } from '@bulwark/protocol';
import type { AuditCheckpointsTable } from '../db/schema.js';
import type { AuditEventRow } from './audit.chain.js';
import { CRITICAL_ACTIONS } from './audit.service.js';
import type { AuditAction } from './audit.types.js';

/**
 * What sinks deliver: one NDJSON line per event, exactly the line of an NDJSON export (so a sink's
 * copy verifies like an export, see docs/audit.md), and one line per signed checkpoint, with
 * `"kind":"checkpoint"` (or `"anchor"`), so the chain has witnesses outside the database
 * (`bulwark audit verify --witness`). Event lines have no `kind`; readers skip kinds they do not know.
 */
export interface SinkLine {
  /** The NDJSON line, newline included. */
  text: string;
  kind: 'event' | 'checkpoint' | 'anchor' | 'test';
  chain: string;
  seq: number;
  /** What a receiver dedupes on: the event id, or `<kind>:<chain>:<seq>` for a statement. */
  id: string;
  ts: number;
  /** The event's action, or the line's kind. */
  name: string;
  severity: 'critical' | 'warning' | 'info';
}

/**
 * Sent ahead of a backlog (AUTH-8's alert: break-glass, integrity failures, key rotation). The
 * dashboard's critical list plus the events that change what protects everything else.
 */
export const PRIORITY_ACTIONS: readonly AuditAction[] = [
  ...CRITICAL_ACTIONS,
  'keys.data_key_rotated',
  'keys.data_keys_rewrapped',
  // A new signing key for workload tokens: a rotation nobody asked for is how a stolen key is used.
  'keys.workload_identity_rotated',
  'scim.token_rotated',
  'audit.sink_deleted',
  'audit.sink_updated',
];
const priority = new Set<string>(PRIORITY_ACTIONS);

/** An event and its NDJSON export line (from `audit.exportLines`, the export's own formatting). */
export function eventLine(row: AuditEventRow, line: string): SinkLine {
  return {
    text: line,
    kind: 'event',
    chain: row.chain_id,
    seq: row.seq,
    id: row.id,
    ts: row.ts,
    name: row.action,
    severity: priority.has(row.action) ? 'critical' : row.outcome === 'success' ? 'info' : 'warning',
  };
}

export function statementLine(row: AuditCheckpointsTable): SinkLine {
  const kind = row.kind === 'anchor' ? 'anchor' : 'checkpoint';
  return {
    text: `${canonicalJson({
      kind,
      chain: row.chain_id,
      seq: row.seq,
      hash: row.hash,
      ts: row.ts,
      keyId: row.key_id,
      signature: row.signature,
      time: new Date(row.ts).toISOString(),
    })}\n`,
    kind,
    chain: row.chain_id,
    seq: row.seq,
    id: `${kind}:${row.chain_id}:${row.seq}`,
    ts: row.ts,
    name: kind,
    severity: 'info',
  };
}

/** What "send a test" delivers: a line no event reader mistakes for an event. */
export function testLine(chainId: string, sinkId: string, ts: number): SinkLine {
  const id = `test:${sinkId}:${ts}`;
  return {
    text: `${canonicalJson({ kind: 'test', chain: chainId, sink: sinkId, ts, time: new Date(ts).toISOString() })}\n`,
    kind: 'test',
    chain: chainId,
    seq: 0,
    id,
    ts,
    name: 'test',
    severity: 'info',
  };
}

/** Delivers lines, or throws; resolving means the receiver took them all. */
export interface SinkTransport {
  send(lines: SinkLine[]): Promise<void>;
}
