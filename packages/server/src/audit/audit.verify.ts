import type { KeyObject } from 'node:crypto';
import { verifyEd25519 } from '../secrets/server-keys.service.js';
import { GENESIS_HASH, hashOfRow, signedStatement } from './audit.chain.js';
import type { AuditStore, CheckpointRow } from './audit.store.js';

export interface BrokenLink {
  seq: number;
  eventId?: string;
  reason: string;
}

export interface ChainVerification {
  chainId: string;
  ok: boolean;
  /** Events checked (after the anchor, when the chain was pruned). */
  events: number;
  /** The signed anchor the chain was verified from, when old events were pruned. */
  anchorSeq?: number;
  checkpoints: number;
  headSeq: number;
  broken?: BrokenLink;
}

const PAGE = 2000;

function signatureValid(row: CheckpointRow, keys: Map<string, KeyObject>): boolean {
  const key = keys.get(row.key_id);
  if (!key) return false;
  const statement = signedStatement({
    kind: row.kind as 'checkpoint' | 'anchor',
    chainId: row.chain_id,
    seq: row.seq,
    hash: row.hash,
    ts: row.ts,
    keyId: row.key_id,
  });
  return verifyEd25519(key, statement, row.signature);
}

/**
 * Walks a chain from its genesis (or its newest signed anchor, after pruning) to its head and reports
 * the first broken link: an event whose content no longer matches its hash (edited), whose sequence
 * skips (deleted), whose previous hash is not its predecessor's (reordered or spliced), or that
 * disagrees with a signed checkpoint (the chain was rewritten and re-hashed by someone without the
 * server key). A checkpoint beyond the last event shows the tail was cut off.
 */
export async function verifyChain(
  store: AuditStore,
  publicKeys: Map<string, KeyObject>,
  chainId: string,
  onProgress?: (eventsChecked: number) => void,
): Promise<ChainVerification> {
  const statements = await store.checkpoints(chainId);
  const head = await store.head(chainId);
  const result: ChainVerification = { chainId, ok: true, events: 0, checkpoints: 0, headSeq: head?.seq ?? 0 };
  const fail = (broken: BrokenLink): ChainVerification => ({ ...result, ok: false, broken });

  for (const statement of statements) {
    if (!signatureValid(statement, publicKeys)) {
      return fail({
        seq: statement.seq,
        reason: `the ${statement.kind} at seq ${statement.seq} has an invalid signature`,
      });
    }
  }
  const anchors = statements.filter((s) => s.kind === 'anchor');
  const anchor = anchors.at(-1);
  const checkpoints = new Map(statements.filter((s) => s.kind === 'checkpoint').map((s) => [s.seq, s]));

  let expectedSeq = (anchor?.seq ?? 0) + 1;
  let prevHash = anchor?.hash ?? GENESIS_HASH;
  if (anchor) result.anchorSeq = anchor.seq;

  let afterSeq = anchor?.seq ?? 0;
  for (;;) {
    const rows = await store.pageAscending(chainId, {}, PAGE, afterSeq);
    for (const row of rows) {
      if (row.seq !== expectedSeq) {
        return fail({
          seq: expectedSeq,
          reason:
            row.seq > expectedSeq
              ? `event(s) ${expectedSeq}..${row.seq - 1} are missing (deleted)`
              : `sequence goes back to ${row.seq} after ${expectedSeq - 1}`,
        });
      }
      if (row.prev_hash !== prevHash) {
        return fail({
          seq: row.seq,
          eventId: row.id,
          reason: 'previous-hash link does not match the preceding event (reordered or spliced)',
        });
      }
      if (hashOfRow(row) !== row.hash) {
        return fail({
          seq: row.seq,
          eventId: row.id,
          reason: 'event content does not match its hash (edited)',
        });
      }
      const checkpoint = checkpoints.get(row.seq);
      if (checkpoint) {
        if (checkpoint.hash !== row.hash) {
          return fail({
            seq: row.seq,
            eventId: row.id,
            reason: 'event does not match the signed checkpoint at this seq (chain rewritten)',
          });
        }
        result.checkpoints++;
      }
      prevHash = row.hash;
      expectedSeq++;
      result.events++;
    }
    if (rows.length < PAGE) break;
    afterSeq = rows.at(-1)!.seq;
    onProgress?.(result.events);
  }

  const lastSeq = expectedSeq - 1;
  const beyond = [...checkpoints.values()].find((c) => c.seq > lastSeq);
  if (beyond) {
    return fail({
      seq: lastSeq + 1,
      reason: `events after seq ${lastSeq} are missing: a signed checkpoint covers seq ${beyond.seq}`,
    });
  }
  if (head && head.seq !== lastSeq) {
    return fail({
      seq: lastSeq + 1,
      reason: `the chain head records seq ${head.seq} but the events end at seq ${lastSeq} (tail deleted)`,
    });
  }
  if (head && head.hash !== prevHash) {
    return fail({ seq: lastSeq, reason: 'the chain head hash does not match the last event' });
  }
  return result;
}
