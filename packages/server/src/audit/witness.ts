import type { KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { verifyEd25519 } from '../secrets/server-keys.service.js';
import { type SignedStatementKind, signedStatement } from './audit.chain.js';
import type { AuditStore } from './audit.store.js';

/**
 * A sink's copy of the chain as a witness (AUD-3, AUD-6). The database alone cannot show that its
 * newest events were deleted together with their checkpoints and the head moved back: what is left is
 * a shorter chain that verifies. A copy delivered outside the database can: each signed checkpoint in
 * it says "the chain had this hash at this seq", so the database must still hold that event with that
 * hash; and each event line says the same of one event.
 */

export interface WitnessProblem {
  chain: string;
  seq: number;
  reason: string;
}

export interface WitnessResult {
  ok: boolean;
  checkpoints: number;
  events: number;
  /** Lines that were not JSON (a line cut short by a crash while it was being written). */
  unreadable: number;
  problem?: WitnessProblem;
}

interface Witnessed {
  chain: string;
  seq: number;
  hash: string;
  what: 'checkpoint' | 'anchor' | 'event';
  eventId?: string;
}

const isHash = (value: unknown): value is string => typeof value === 'string' && /^[0-9a-f]{64}$/.test(value);

/** Reads NDJSON witness files (a file sink's files, or a receiver's saved bodies) line by line. */
export async function* witnessLines(files: readonly string[]): AsyncGenerator<string> {
  for (const file of files) {
    const lines = createInterface({
      input: createReadStream(file, 'utf8'),
      crlfDelay: Number.POSITIVE_INFINITY,
    });
    for await (const line of lines) if (line.trim() !== '') yield line;
  }
}

export async function checkWitness(
  store: Pick<AuditStore, 'eventAt' | 'checkpoints' | 'head'>,
  publicKeys: Map<string, KeyObject>,
  lines: AsyncIterable<string> | Iterable<string>,
  onlyChain?: string,
): Promise<WitnessResult> {
  const witnessed = new Map<string, Witnessed>();
  const result: WitnessResult = { ok: true, checkpoints: 0, events: 0, unreadable: 0 };
  const fail = (problem: WitnessProblem): WitnessResult => ({ ...result, ok: false, problem });

  for await (const text of lines) {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      result.unreadable++;
      continue;
    }
    const { chain, seq, hash, kind } = line;
    if (typeof chain !== 'string' || typeof seq !== 'number' || !Number.isSafeInteger(seq) || !isHash(hash))
      continue;
    if (onlyChain !== undefined && chain !== onlyChain) continue;
    if (kind === 'checkpoint' || kind === 'anchor') {
      const { ts, keyId, signature } = line;
      const key = typeof keyId === 'string' ? publicKeys.get(keyId) : undefined;
      const statement =
        typeof ts === 'number' && typeof keyId === 'string'
          ? signedStatement({ kind: kind as SignedStatementKind, chainId: chain, seq, hash, ts, keyId })
          : undefined;
      // Only this server's signature makes a line a witness: a made-up line proves nothing.
      if (!key || !statement || typeof signature !== 'string' || !verifyEd25519(key, statement, signature))
        return fail({
          chain,
          seq,
          reason: `the witness's ${kind} at seq ${seq} is not signed by this server's audit key`,
        });
      witnessed.set(`${chain}\u0000${seq}\u0000${kind}`, { chain, seq, hash, what: kind });
    } else if (kind === undefined) {
      witnessed.set(`${chain}\u0000${seq}\u0000event`, {
        chain,
        seq,
        hash,
        what: 'event',
        ...(typeof line.id === 'string' ? { eventId: line.id } : {}),
      });
    }
  }

  const ordered = [...witnessed.values()].sort(
    (a, b) => a.chain.localeCompare(b.chain) || a.seq - b.seq || (a.what === 'event' ? -1 : 1),
  );
  const anchors = new Map<string, number>();
  const heads = new Map<string, number>();
  for (const entry of ordered) {
    if (!anchors.has(entry.chain)) {
      const statements = await store.checkpoints(entry.chain);
      anchors.set(entry.chain, statements.filter((s) => s.kind === 'anchor').at(-1)?.seq ?? 0);
      heads.set(entry.chain, (await store.head(entry.chain))?.seq ?? 0);
    }
    if (entry.what === 'event') result.events++;
    else result.checkpoints++;
    // Pruned by retention, below the signed anchor: the anchor, verified with the chain, stands for them.
    if (entry.seq <= anchors.get(entry.chain)!) continue;
    const label =
      entry.what === 'event' ? `event${entry.eventId ? ` ${entry.eventId}` : ''}` : `signed ${entry.what}`;
    const event = await store.eventAt(entry.chain, entry.seq);
    if (!event) {
      return fail({
        chain: entry.chain,
        seq: entry.seq,
        reason: `the witness holds a ${label} at seq ${entry.seq}, but the database's chain ends at seq ${heads.get(entry.chain)} and has no event there: its tail was truncated`,
      });
    }
    if (event.hash !== entry.hash) {
      return fail({
        chain: entry.chain,
        seq: entry.seq,
        reason: `the database's event at seq ${entry.seq} does not match the witness's ${label} (hash ${event.hash.slice(0, 12)}… instead of ${entry.hash.slice(0, 12)}…): the chain was rewritten`,
      });
    }
  }
  return result;
}
