import { createHash } from 'node:crypto';
import { canonicalJson, type JsonValue } from '@bulwark/protocol';
import type { AuditEventsTable } from '../db/schema.js';

/**
 * The hash chain (AUD-3). Each event's hash covers the previous event's hash and the canonical JSON
 * of every field of the event, its chain and its sequence number:
 *
 *   hash = SHA-256( prevHash + "\n" + canonicalJson(chainedEvent) )   (lowercase hex)
 *
 * so editing any field, deleting an event or reordering two changes a hash that a later event (or a
 * signed checkpoint) covers. docs/audit.md describes this for third parties verifying an export.
 */

export const GENESIS_HASH = '0'.repeat(64);
export const CHAIN_FORMAT_VERSION = 1;

export type AuditEventRow = AuditEventsTable;

/** The exact object the hash covers; also the body of an NDJSON export line. */
export function chainedEvent(row: Omit<AuditEventRow, 'prev_hash' | 'hash'>): { [key: string]: JsonValue } {
  return {
    v: CHAIN_FORMAT_VERSION,
    chain: row.chain_id,
    seq: row.seq,
    id: row.id,
    ts: row.ts,
    org: row.org_id,
    actor: { type: row.actor_type, id: row.actor_id, display: row.actor_display },
    ip: row.ip,
    userAgent: row.user_agent,
    action: row.action,
    target:
      row.target_type === null
        ? null
        : { type: row.target_type, id: row.target_id, display: row.target_display },
    outcome: row.outcome,
    requestId: row.request_id,
    details: JSON.parse(row.details) as JsonValue,
  };
}

export function chainHash(prevHash: string, event: { [key: string]: JsonValue }): string {
  return createHash('sha256').update(prevHash).update('\n').update(canonicalJson(event)).digest('hex');
}

export function hashOfRow(row: Omit<AuditEventRow, 'hash'>): string {
  return chainHash(row.prev_hash, chainedEvent(row));
}

export type SignedStatementKind = 'checkpoint' | 'anchor';

/**
 * What a checkpoint or anchor signature covers. The purpose string separates the two (and every other
 * use of server keys), so a signature made for one can never be presented as the other.
 */
export function signedStatement(s: {
  kind: SignedStatementKind;
  chainId: string;
  seq: number;
  hash: string;
  ts: number;
  keyId: string;
}): string {
  return canonicalJson({
    purpose: `bulwark.audit.${s.kind}.v1`,
    chain: s.chainId,
    seq: s.seq,
    hash: s.hash,
    ts: s.ts,
    keyId: s.keyId,
  });
}
