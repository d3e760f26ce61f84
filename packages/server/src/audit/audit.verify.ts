import type { KeyObject } from 'node:crypto';
import { verifyEd25519 } from '../secrets/server-keys.service.js';
import { GENESIS_HASH, hashOfRow, type SignedStatementKind, signedStatement } from './audit.chain.js';
import type { AuditStore, CheckpointRow } from './audit.store.js';

export interface BrokenLink {
  seq: number;
  eventId?: string;
  reason: string;
}

export interface ChainVerification {
  chainId: string;
  ok: boolean;
  /** Events checked. */
  events: number;
  /** The signed anchor the chain was verified from, when old events were pruned. */
  anchorSeq?: number;
  /** Signed checkpoints whose hash matched the event at their sequence number. */
  checkpoints: number;
  /** The newest sequence number covered by a valid signed checkpoint or anchor (0: none). */
  signedSeq: number;
  headSeq: number;
  broken?: BrokenLink;
}

export interface VerifyOptions {
  /**
   * How many events may follow the newest signed statement. The server signs a checkpoint every
   * N events, on a timer and at shutdown; a longer unsigned tail means signed checkpoints were
   * deleted, which is how a rewritten chain would otherwise pass.
   */
  maxUnsignedTail: number;
  /**
   * A longer tail is accepted while the newest signed statement is at most this old (by its signed
   * time): the server is alive and signing, it is only behind a burst of appends.
   */
  signedRecentlyMs: number;
  now: number;
  /**
   * `start`: walk from genesis (or the newest anchor) and match every checkpoint. `latestSigned`:
   * walk only from the newest valid signed statement, which is what must hold before signing the next.
   */
  from?: 'start' | 'latestSigned';
  onProgress?: (eventsChecked: number) => void;
}

const PAGE = 2000;

function signatureValid(row: CheckpointRow, keys: Map<string, KeyObject>): boolean {
  const key = keys.get(row.key_id);
  if (!key) return false;
  const statement = signedStatement({
    kind: row.kind as SignedStatementKind,
    chainId: row.chain_id,
    seq: row.seq,
    hash: row.hash,
    ts: row.ts,
    keyId: row.key_id,
  });
  return verifyEd25519(key, statement, row.signature);
}

/**
 * Walks a chain up to its head, as read when the walk starts (events appended meanwhile belong to the
 * next verification), and reports the first broken link: an event whose content no longer matches its
 * hash (edited), whose sequence skips (deleted), whose previous hash is not its predecessor's
 * (reordered or spliced), or that disagrees with a signed checkpoint (rewritten and re-hashed by
 * someone without the server key); a head or checkpoint beyond the last event (tail cut off); and an
 * unsigned tail longer than the server ever leaves (checkpoints deleted to hide a rewrite).
 */
export async function verifyChain(
  store: AuditStore,
  publicKeys: Map<string, KeyObject>,
  chainId: string,
  options: VerifyOptions,
): Promise<ChainVerification> {
  // Statements first, then the head: any statement the server wrote before the head was read is
  // covered by that head, so a statement beyond it means the head was moved back.
  const statements = await store.checkpoints(chainId);
  const head = await store.head(chainId);
  const result: ChainVerification = {
    chainId,
    ok: true,
    events: 0,
    checkpoints: 0,
    signedSeq: 0,
    headSeq: head?.seq ?? 0,
  };
  const fail = (broken: BrokenLink): ChainVerification => ({ ...result, ok: false, broken });

  for (const statement of statements) {
    if (!signatureValid(statement, publicKeys)) {
      return fail({
        seq: statement.seq,
        reason: `the ${statement.kind} at seq ${statement.seq} has an invalid signature`,
      });
    }
  }
  if (!head) {
    const [first] = await store.pageAscending(chainId, {}, 1, 0);
    if (first || statements.length > 0) {
      return fail({
        seq: first?.seq ?? 0,
        reason: 'the chain has events or signed statements but its head record is missing',
      });
    }
    return result;
  }
  const beyond = statements.find((s) => s.seq > head.seq);
  if (beyond) {
    return fail({
      seq: head.seq + 1,
      reason: `events after seq ${head.seq} are missing: a signed ${beyond.kind} covers seq ${beyond.seq}`,
    });
  }

  const anchor = statements.filter((s) => s.kind === 'anchor').at(-1);
  if (anchor) result.anchorSeq = anchor.seq;
  const checkpoints = new Map(statements.filter((s) => s.kind === 'checkpoint').map((s) => [s.seq, s]));
  result.signedSeq = anchor?.seq ?? 0;

  let start: { seq: number; hash: string } = anchor ?? { seq: 0, hash: GENESIS_HASH };
  if (options.from === 'latestSigned') {
    const latest = statements.filter((s) => s.kind === 'checkpoint' && s.seq > start.seq).at(-1);
    if (latest) {
      const event = await store.eventAt(chainId, latest.seq);
      if (!event || event.hash !== latest.hash) {
        return fail({
          seq: latest.seq,
          eventId: event?.id,
          reason: 'event does not match the signed checkpoint at this seq (chain rewritten)',
        });
      }
      start = latest;
      result.signedSeq = latest.seq;
      result.checkpoints++;
    }
  }

  let expectedSeq = start.seq + 1;
  let prevHash = start.hash;
  while (expectedSeq <= head.seq) {
    const rows = await store.pageAscending(chainId, {}, PAGE, expectedSeq - 1);
    if (rows.length === 0) break;
    for (const row of rows) {
      if (row.seq > head.seq) break;
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
        result.signedSeq = row.seq;
      }
      prevHash = row.hash;
      expectedSeq++;
      result.events++;
    }
    options.onProgress?.(result.events);
    if (rows.length < PAGE) break;
  }

  const lastSeq = expectedSeq - 1;
  if (lastSeq !== head.seq) {
    return fail({
      seq: lastSeq + 1,
      reason: `the chain head records seq ${head.seq} but the events end at seq ${lastSeq} (tail deleted)`,
    });
  }
  if (head.hash !== prevHash) {
    return fail({ seq: lastSeq, reason: 'the chain head hash does not match the last event' });
  }
  const unsigned = head.seq - result.signedSeq;
  const newestSignedTs = Math.max(
    0,
    ...statements.filter((st) => st.seq <= result.signedSeq).map((st) => st.ts),
  );
  const signedRecently = result.signedSeq > 0 && newestSignedTs >= options.now - options.signedRecentlyMs;
  if (unsigned > options.maxUnsignedTail && !signedRecently) {
    return fail({
      seq: result.signedSeq + 1,
      reason: `${unsigned} events follow the last signed statement (seq ${result.signedSeq}); the server leaves at most ${options.maxUnsignedTail} unsigned, so signed checkpoints were deleted`,
    });
  }
  return result;
}
