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

const str = (value: string | null) => (value === null ? 'null' : JSON.stringify(value));

/**
 * `canonicalJson(chainedEvent(row))`, written directly: the event has a fixed shape, so its keys are
 * emitted in their sorted order without sorting, and `details` is spliced in as stored (it is stored
 * as canonical JSON). The hash runs for every event appended and verified, so this matters; a
 * property test holds it byte-identical to the generic form.
 */
export function canonicalEventJson(row: Omit<AuditEventRow, 'prev_hash' | 'hash'>): string {
  const target =
    row.target_type === null
      ? 'null'
      : `{"display":${str(row.target_display)},"id":${str(row.target_id)},"type":${str(row.target_type)}}`;
  return (
    `{"action":${str(row.action)}` +
    `,"actor":{"display":${str(row.actor_display)},"id":${str(row.actor_id)},"type":${str(row.actor_type)}}` +
    `,"chain":${str(row.chain_id)},"details":${row.details},"id":${str(row.id)},"ip":${str(row.ip)}` +
    `,"org":${str(row.org_id)},"outcome":${str(row.outcome)},"requestId":${str(row.request_id)}` +
    `,"seq":${row.seq},"target":${target},"ts":${row.ts},"userAgent":${str(row.user_agent)}` +
    `,"v":${CHAIN_FORMAT_VERSION}}`
  );
}

export function chainHash(prevHash: string, canonicalEvent: string): string {
  return createHash('sha256').update(prevHash).update('\n').update(canonicalEvent).digest('hex');
}

export function hashOfRow(row: Omit<AuditEventRow, 'hash'>): string {
  return chainHash(row.prev_hash, canonicalEventJson(row));
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
