import { type JsonValue, newId } from '@bulwark/protocol';
import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import { acrossOrgs } from '../db/org-scope.js';
import type { DB } from '../db/schema.js';
import { BadRequestError, ServiceUnavailableError } from '../errors.js';
import type { AuditMetrics } from '../ops/metrics.js';
import type { ServerKeysService } from '../secrets/server-keys.service.js';
import { type AuditEventRow, hashOfRow, signedStatement } from './audit.chain.js';
import { type ExportFormat, exportFormatters, ndjsonLine } from './audit.export.js';
import { guardDetails, guardText } from './audit.guard.js';
import type { AuditFilters, AuditSearchKey, AuditSort, AuditStore, ChainHead } from './audit.store.js';
import type { AuditPii } from './audit-pii.js';

// The search vocabulary routes validate against: theirs through the service, never from the store.
export { AUDIT_SORTS, type AuditFilters, auditFilters } from './audit.store.js';

import {
  type AuditAction,
  type AuditActor,
  type AuditEventRef,
  type AuditInput,
  type AuditRequestContext,
  INSTANCE_CHAIN,
} from './audit.types.js';
import { type ChainVerification, verifyChain } from './audit.verify.js';

const MAX_BATCH = 1000;
/** Events waiting for the writer beyond which new ones are refused: a stalled database must not eat memory. */
const MAX_PENDING = 50_000;
const DAY_MS = 86_400_000;
/** Longest text kept in a display name, user agent or identifier column; longer is cut. */
const MAX_TEXT = 512;
const PRUNE_CHUNK = 10_000;
const EXPORT_PAGE = 1000;
export const MAX_QUERY_LIMIT = 500;

/**
 * The instance chain's events an organization's auditor sees about the org's own members: their
 * sign-ins and failed sign-ins, lockouts, CSRF refusals, second-factor checks and factor changes. A
 * whitelist: an event type added to the instance chain later is not shown to org auditors until it is
 * judged safe here (it might name another organization).
 */
export const MEMBER_SECURITY_ACTIONS = [
  'auth.login_succeeded',
  'auth.login_failed',
  'auth.locked_out',
  'auth.csrf_rejected',
  'auth.mfa_failed',
  'auth.password_changed',
  'mfa.factor_added',
  'mfa.factor_removed',
  'mfa.recovery_codes_generated',
  'mfa.recovery_code_used',
] as const satisfies readonly AuditAction[];

/**
 * The details of those events an org auditor is shown; every other key is dropped. The events above
 * hold only these today; the list keeps it so should one of them one day record, say, the
 * organization a request was for.
 */
const MEMBER_SECURITY_DETAILS = new Set([
  'via',
  'secondFactorRequired',
  'reason',
  'scope',
  'retryAfterSeconds',
  'type',
  'count',
  'remaining',
  'factorsLeft',
  'method',
]);

/** What the dashboard lists as critical: attacks refused, integrity failures, security changes. */
export const CRITICAL_ACTIONS = [
  'access.denied',
  'auth.locked_out',
  'auth.break_glass_sign_in',
  'auth.api_key_rejected',
  'agent.misbehaved',
  'agent.connection_refused',
  'agent.registration_refused',
  'agent.revoked',
  'service.report_refused',
  'command.integrity_failed',
  'command.refused_by_agent',
  'credential.integrity_failed',
  'scim.rejected',
  'org.security_policy_changed',
  'sso.enforcement_changed',
] as const satisfies readonly AuditAction[];

/** An event as an organization's search shows it: where it stands in its chain, and whether signed. */
export interface SearchedEvent {
  row: AuditEventRow;
  /** `org`: the organization's own chain; `instance`: a member's account event from the instance chain. */
  chain: 'org' | 'instance';
  /** A signed checkpoint at or after this event covers it (through the hash chain). */
  signed: boolean;
  /** The current name and email of a user actor. */
  actorUser: { email: string; name: string } | null;
}

function encodeSearchCursor(sort: AuditSort, descending: boolean, key: AuditSearchKey): string {
  return Buffer.from(JSON.stringify({ s: sort, d: descending ? 'desc' : 'asc', ...key })).toString(
    'base64url',
  );
}

function decodeSearchCursor(cursor: string, sort: AuditSort, descending: boolean): AuditSearchKey {
  const invalid = () =>
    new BadRequestError(
      'invalid_cursor',
      'The cursor is not one this server issued for this sort order; start again from the first page.',
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  const c = parsed as { s?: unknown; d?: unknown; ts?: unknown; id?: unknown; action?: unknown };
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    c.s !== sort ||
    c.d !== (descending ? 'desc' : 'asc') ||
    typeof c.ts !== 'number' ||
    !Number.isSafeInteger(c.ts) ||
    typeof c.id !== 'string' ||
    c.id.length > 64 ||
    (sort === 'action' && (typeof c.action !== 'string' || c.action.length > 64))
  )
    throw invalid();
  return { ts: c.ts, id: c.id, ...(sort === 'action' ? { action: c.action as string } : {}) };
}

export class AuditUnavailableError extends ServiceUnavailableError {
  constructor(message: string) {
    super('audit_unavailable', message);
  }
}

type PendingRow = Omit<AuditEventRow, 'seq' | 'prev_hash' | 'hash'>;

interface Pending {
  chainId: string;
  row: PendingRow;
  resolve: (ref: AuditEventRef) => void;
  reject: (error: Error) => void;
}

export interface AuditServiceOptions {
  checkpointEvery: number;
  checkpointIntervalSeconds: number;
  retentionDays: number;
}

export interface PruneResult {
  chainId: string;
  throughSeq?: number;
  deleted: number;
  skipped?: string;
}

/**
 * Makes a string safe to hash and store identically in both databases: a lone UTF-16 surrogate would
 * be hashed as written but stored as U+FFFD (breaking the chain forever), and PostgreSQL refuses NUL
 * in text (failing a whole batch). Both become U+FFFD here, before the hash is computed.
 */
export function cleanText(value: string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  const wellFormed = (value as string & { toWellFormed(): string }).toWellFormed();
  return wellFormed.replaceAll('\u0000', '\uFFFD').slice(0, MAX_TEXT);
}

function encodeCursor(seq: number): string {
  return Buffer.from(`seq:${seq}`).toString('base64url');
}

function decodeCursor(cursor: string): number {
  const match = /^seq:(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!match) throw new BadRequestError('invalid_cursor', 'The cursor is not one this server issued.');
  return Number(match[1]);
}

/**
 * The audit log (AUD-1 to AUD-5): the one `record()` every module calls.
 *
 * Appends are group-committed: callers queue events and one writer commits them in batches, each in
 * a single transaction that locks the chain heads it extends. A caller's promise resolves only after
 * its event is durably committed (fail closed, AUD-7), so throughput comes from batching, never from
 * acknowledging early.
 */
export function createAuditService(deps: {
  store: AuditStore;
  serverKeys: ServerKeysService;
  clock: () => number;
  logger: Logger;
  metrics: AuditMetrics;
  options: AuditServiceOptions;
  /** Seals the personal fields of events as they are appended, opens them as they are read (DATA-2). */
  pii: AuditPii;
}) {
  const { store, serverKeys, clock, logger, metrics, options, pii } = deps;
  const queue: Pending[] = [];
  let draining: Promise<void> | undefined;
  let closed = false;
  const background = new Set<Promise<unknown>>();

  function track(work: Promise<unknown>, what: string): void {
    const tracked = work.catch((error) => logger.error({ err: error }, `audit ${what} failed`));
    background.add(tracked);
    void tracked.finally(() => background.delete(tracked));
  }

  /**
   * What lets a checkpoint be signed without reading the chain back. `ownRuns`: per chain, the
   * contiguous run of events this process appended itself, each batch extending exactly the head the
   * previous one left (any other writer in between, another instance or someone editing the
   * database, starts a new run). `verifiedHeads`: per chain, a head this process verified from a
   * signed statement, or signed. When a run covers everything after a verified head, the run's head
   * is vouched for by construction; otherwise the tail is verified from the database first.
   */
  const ownRuns = new Map<string, { start: number; head: ChainHead }>();
  const verifiedHeads = new Map<string, ChainHead>();
  const sameHead = (a: ChainHead | undefined, b: ChainHead) =>
    a !== undefined && a.seq === b.seq && a.hash === b.hash;

  /** What an append did to each chain it extended: the head it found locked, and the head it left. */
  interface Appended {
    refs: AuditEventRef[];
    moved: Map<string, { from: ChainHead; to: ChainHead }>;
  }

  /**
   * Appends events inside `tx`: locks the heads of their chains, hashes each event onto its chain and
   * moves the heads. Nothing is kept in memory until the transaction has committed ({@link committed}).
   */
  async function appendIn(tx: Transaction<DB>, rows: PendingRow[]): Promise<Appended> {
    const now = clock();
    // Lock heads in a fixed order so two instances appending to the same chains cannot deadlock.
    const heads = new Map<string, ChainHead>();
    const found = new Map<string, ChainHead>();
    for (const chainId of [...new Set(rows.map((row) => row.chain_id))].sort()) {
      const head = await store.lockHead(tx, chainId, now);
      heads.set(chainId, head);
      found.set(chainId, head);
    }
    // Sealed before hashing: the chain covers the sealed form, so it verifies without keys and after an erasure.
    const sealed = await pii.sealRows(tx, rows);
    const hashed: AuditEventRow[] = sealed.map((pending) => {
      const head = heads.get(pending.chain_id)!;
      const unhashed = { ...pending, seq: head.seq + 1, prev_hash: head.hash };
      const row = { ...unhashed, hash: hashOfRow(unhashed) };
      heads.set(pending.chain_id, { chainId: pending.chain_id, seq: row.seq, hash: row.hash });
      return row;
    });
    await store.insertEvents(tx, hashed);
    for (const head of heads.values()) await store.setHead(tx, head, now);
    return {
      refs: hashed.map((row) => ({ id: row.id, chainId: row.chain_id, seq: row.seq, hash: row.hash })),
      moved: new Map([...heads].map(([chainId, to]) => [chainId, { from: found.get(chainId)!, to }])),
    };
  }

  /**
   * The events of one transaction, from every write of it. A group-commit batch holds several writes,
   * each with its events; they are appended together, once, after the batch's writes, so that the
   * chain heads of the whole batch are locked in one sorted order: two transactions, on one instance
   * or two, then never wait for each other's heads in opposite orders (PostgreSQL).
   */
  interface SharedAppend {
    rows: PendingRow[];
    appended?: Appended;
  }
  const sharedAppends = new WeakMap<Transaction<DB>, SharedAppend>();
  const countedAppends = new WeakSet<Appended>();
  function rowsOf(tx: Transaction<DB>): SharedAppend {
    let shared = sharedAppends.get(tx);
    if (!shared) {
      shared = { rows: [] };
      sharedAppends.set(tx, shared);
    }
    return shared;
  }

  /** Appends a transaction's events, by the first of its writes to finish; refuses (503) when it cannot. */
  async function appendShared(tx: Transaction<DB>): Promise<void> {
    const shared = sharedAppends.get(tx);
    if (!shared || shared.appended || shared.rows.length === 0) return;
    try {
      shared.appended = await appendIn(tx, shared.rows);
    } catch (error) {
      logger.error(
        { err: error, events: shared.rows.length },
        'audit events could not be stored; the change is rolled back',
      );
      throw new AuditUnavailableError('The audit log could not record this action, so it was not performed.');
    }
  }

  /** {@link committed}, once per transaction's append, whichever of its writes sees it first. */
  function countOnce(appended: Appended): void {
    if (countedAppends.has(appended)) return;
    countedAppends.add(appended);
    committed(appended);
  }

  /** Once an append has committed: extends this process's own runs, counts it, signs what is due. */
  function committed(appended: Appended): void {
    for (const [chainId, { from, to }] of appended.moved) {
      const run = ownRuns.get(chainId);
      ownRuns.set(chainId, { start: run && sameHead(run.head, from) ? run.start : from.seq + 1, head: to });
    }
    metrics.appended.inc(appended.refs.length);
    checkpointIfDue(appended.refs);
  }

  /**
   * Commits the events `take` hands over, in a transaction of the group commit. They are taken when
   * the transaction runs, not when it is queued: the group commit already waits for the end of the
   * current turn of the event loop, and every event recorded meanwhile joins this batch, so an event
   * waits one turn for its commit rather than two. `take` answers the same events again if the
   * transaction is retried.
   */
  async function writeBatch(take: () => Pending[]): Promise<AuditEventRef[]> {
    let shared: SharedAppend | undefined;
    await store.groupedTransaction(async (tx) => {
      shared = rowsOf(tx);
      shared.rows.push(...take().map((p) => p.row));
    }, appendShared);
    countOnce(shared!.appended!);
    const refs = new Map(shared!.appended!.refs.map((ref) => [ref.id, ref]));
    return take().map((p) => refs.get(p.row.id)!);
  }

  /** Chains with a background checkpoint in flight, and whether another was asked for meanwhile. */
  const checkpointing = new Map<string, { again: boolean }>();

  function checkpointInBackground(chainId: string): void {
    const inFlight = checkpointing.get(chainId);
    if (inFlight) {
      inFlight.again = true;
      return;
    }
    const state = { again: false };
    checkpointing.set(chainId, state);
    const run = async () => {
      do {
        state.again = false;
        await checkpoint(chainId);
      } while (state.again && !closed);
    };
    track(
      acrossOrgs(run).finally(() => checkpointing.delete(chainId)),
      'checkpoint',
    );
  }

  function checkpointIfDue(refs: AuditEventRef[]): void {
    const firstSeq = new Map<string, number>();
    const lastSeq = new Map<string, number>();
    for (const ref of refs) {
      if (!firstSeq.has(ref.chainId)) firstSeq.set(ref.chainId, ref.seq);
      lastSeq.set(ref.chainId, ref.seq);
    }
    for (const [chainId, last] of lastSeq) {
      const first = firstSeq.get(chainId)!;
      // Due when this batch crossed a multiple of checkpointEvery.
      if (Math.floor(last / options.checkpointEvery) > Math.floor((first - 1) / options.checkpointEvery)) {
        checkpointInBackground(chainId);
      }
    }
  }

  async function drain(): Promise<void> {
    while (queue.length > 0) {
      let taken: Pending[] | undefined;
      const take = () => {
        taken ??= queue.splice(0, MAX_BATCH);
        return taken;
      };
      const started = process.hrtime.bigint();
      try {
        const refs = await writeBatch(take);
        const batch = take();
        for (const [i, pending] of batch.entries()) pending.resolve(refs[i]!);
        metrics.commitSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
      } catch (error) {
        const batch = take();
        logger.error({ err: error, events: batch.length }, 'audit batch could not be committed');
        metrics.unavailable.inc(batch.length);
        const failure = new AuditUnavailableError(
          'The audit log could not record this action, so it was not performed.',
        );
        for (const pending of batch) pending.reject(failure);
      } finally {
        metrics.pending.set(queue.length);
      }
    }
  }

  function scheduleDrain(): void {
    if (draining) return;
    // One writer for every organization's events, whichever request's event started it.
    draining = acrossOrgs(drain).finally(() => {
      draining = undefined;
      if (queue.length > 0) scheduleDrain();
    });
  }

  /**
   * The row an event becomes, with every credential in it redacted (AUD-2). Never throws: what an
   * attacker put in a request must not be able to fail the request or suppress its record.
   */
  function prepare(input: AuditInput): PendingRow {
    const ts = clock();
    const chainId = input.orgId ?? INSTANCE_CHAIN;
    const context = input.context ?? {};
    const { json: details, redactions } = guardDetails(input.details);
    const text = (value: string | null | undefined, path: string) =>
      guardText(cleanText(value), redactions, path);
    const row: PendingRow = {
      id: newId('evt', ts),
      chain_id: chainId,
      org_id: input.orgId ?? null,
      ts,
      actor_type: input.actor.type,
      actor_id: text(input.actor.id, 'actor.id'),
      actor_display: text(input.actor.display, 'actor.display'),
      ip: text(context.ip, 'ip'),
      user_agent: text(context.userAgent, 'userAgent'),
      action: input.action,
      target_type: text(input.target?.type, 'target.type'),
      target_id: text(input.target?.id, 'target.id'),
      target_display: text(input.target?.display, 'target.display'),
      outcome: input.outcome,
      request_id: text(context.requestId, 'requestId'),
      details,
    };
    if (redactions.length > 0) {
      metrics.redacted.inc(redactions.length);
      logger.warn(
        { action: input.action, redactions },
        'audit event redacted: it held what looked like a credential',
      );
    }
    return row;
  }

  /**
   * Records an event that goes with no change of state (a denial, a failed sign-in, an export), through
   * the group-committed writer. Resolves once the event is durably committed; rejects with
   * {@link AuditUnavailableError} when it cannot be, so the caller does not proceed unrecorded.
   */
  function record(input: AuditInput): Promise<AuditEventRef> {
    if (closed) {
      return Promise.reject(new AuditUnavailableError('The audit log is closed (the server is stopping).'));
    }
    if (queue.length >= MAX_PENDING) {
      return Promise.reject(
        new AuditUnavailableError('The audit log is not keeping up, so this action was not performed.'),
      );
    }
    const row = prepare(input);
    return new Promise((resolve, reject) => {
      queue.push({ chainId: row.chain_id, row, resolve, reject });
      metrics.pending.set(queue.length);
      scheduleDrain();
    });
  }

  /** Transactions with their events in flight, so that closing waits for them. */
  const inFlight = new Set<Promise<unknown>>();

  /**
   * AUD-7: runs `work` in one transaction and appends the events it collects in that same transaction,
   * so the change and its record commit together or not at all. When the events cannot be stored the
   * whole transaction rolls back and {@link AuditUnavailableError} (503) is thrown: no change is ever
   * applied unaudited. `grouped` commits through the shared group commit (for hot, independent writes
   * such as a command's transitions); `work` may then run more than once and must only touch `tx`.
   */
  async function withEvents<T>(
    work: (tx: Transaction<DB>, events: AuditInput[]) => Promise<T>,
    options: { grouped?: boolean } = {},
  ): Promise<T> {
    if (closed) throw new AuditUnavailableError('The audit log is closed (the server is stopping).');
    let shared: SharedAppend | undefined;
    const run = async (tx: Transaction<DB>): Promise<T> => {
      const events: AuditInput[] = [];
      const result = await work(tx, events);
      shared = rowsOf(tx);
      shared.rows.push(...events.map(prepare));
      return result;
    };
    const transaction = options.grouped
      ? store.groupedTransaction(run, appendShared)
      : store.transaction(async (tx) => {
          const result = await run(tx);
          await appendShared(tx);
          return result;
        });
    inFlight.add(transaction);
    try {
      const result = await transaction;
      if (shared?.appended) countOnce(shared.appended);
      return result;
    } catch (error) {
      // Counted once per refused change, however often a group-commit batch retried it.
      if (error instanceof AuditUnavailableError) metrics.unavailable.inc();
      throw error;
    } finally {
      inFlight.delete(transaction);
    }
  }

  // What the server itself may leave unsigned: a count-triggered checkpoint lost in a crash plus one
  // batch; under a burst, more, as long as it signed something within two timer periods.
  const tailRule = () => ({
    maxUnsignedTail: 2 * options.checkpointEvery + MAX_BATCH,
    signedRecentlyMs: 2 * options.checkpointIntervalSeconds * 1000,
    now: clock(),
  });

  async function verify(chainId: string, onProgress?: (events: number) => void): Promise<ChainVerification> {
    const keys = await serverKeys.publicKeys('audit-checkpoint');
    return verifyChain(store, keys, chainId, {
      ...tailRule(),
      from: 'start',
      ...(onProgress ? { onProgress } : {}),
    });
  }

  /**
   * Signs a checkpoint of a chain's head, after checking every event since the last signed statement:
   * the server key must never vouch for a chain someone rewrote in the database. A chain that does not
   * verify is left unsigned and reported.
   */
  /** The newest sequence number this process signed per chain, so an unchanged head is not re-signed. */
  const signedUpTo = new Map<string, number>();

  async function checkpoint(chainId: string): Promise<void> {
    const run = ownRuns.get(chainId);
    const verified = verifiedHeads.get(chainId);
    let head: ChainHead;
    if (run && verified && run.start <= verified.seq + 1 && run.head.seq >= verified.seq) {
      // Everything after the verified head was appended here, in one unbroken run.
      head = run.head;
    } else {
      const keys = await serverKeys.publicKeys('audit-checkpoint');
      const check = await verifyChain(store, keys, chainId, { ...tailRule(), from: 'latestSigned' });
      if (!check.ok) {
        logger.error({ chainId, broken: check.broken }, 'audit chain does not verify; no checkpoint signed');
        return;
      }
      const event = check.headSeq > 0 ? await store.eventAt(chainId, check.headSeq) : undefined;
      if (!event) return;
      head = { chainId, seq: event.seq, hash: event.hash };
      signedUpTo.set(chainId, Math.max(check.signedSeq, signedUpTo.get(chainId) ?? 0));
    }
    verifiedHeads.set(chainId, head);
    if (head.seq > (signedUpTo.get(chainId) ?? 0)) await signCheckpoint(head);
  }

  async function signCheckpoint(head: ChainHead): Promise<void> {
    const { chainId } = head;
    const signer = await serverKeys.signer('audit-checkpoint');
    const ts = clock();
    const statement = signedStatement({
      kind: 'checkpoint',
      chainId,
      seq: head.seq,
      hash: head.hash,
      ts,
      keyId: signer.keyId,
    });
    await store.insertCheckpoint({
      id: newId('ckp', ts),
      chain_id: chainId,
      kind: 'checkpoint',
      seq: head.seq,
      hash: head.hash,
      ts,
      key_id: signer.keyId,
      signature: signer.sign(statement),
    });
    signedUpTo.set(chainId, Math.max(head.seq, signedUpTo.get(chainId) ?? 0));
  }

  async function* exportChunks(
    chainId: string,
    filters: AuditFilters,
    format: ExportFormat,
    onProgress?: (rows: number) => void,
  ): AsyncGenerator<string> {
    const formatter = exportFormatters[format];
    if (formatter.header) yield formatter.header;
    let rows = 0;
    let afterSeq = 0;
    for (;;) {
      const page = await store.pageAscending(chainId, filters, EXPORT_PAGE, afterSeq);
      if (page.length > 0) {
        const shown = await pii.openRows(page);
        yield page.map((row, i) => formatter.line(row, shown[i]!)).join('');
      }
      rows += page.length;
      onProgress?.(rows);
      if (page.length < EXPORT_PAGE) return;
      afterSeq = page.at(-1)!.seq;
    }
  }

  async function checkpointAll(): Promise<void> {
    for (const chainId of await store.chainIds()) await checkpoint(chainId);
  }

  /**
   * Deletes the oldest events of a chain once they are past retention, anchoring the rest of the chain
   * to a signed statement of the last deleted event. Only a contiguous run of old events from the start
   * is deleted, never past the newest signed checkpoint: a single back-dated event (a clock gone wrong,
   * or an attacker's edit) cannot pull recent history into the pruned range.
   */
  async function pruneChain(chainId: string, cutoff: number): Promise<PruneResult> {
    // Retention must never destroy the evidence of tampering: a broken chain is left for an operator.
    const verification = await verify(chainId);
    if (!verification.ok) {
      logger.error(
        { chainId, broken: verification.broken },
        'audit retention skipped a chain that does not verify',
      );
      return { chainId, deleted: 0, skipped: verification.broken?.reason ?? 'chain does not verify' };
    }
    const from = verification.anchorSeq ?? 0;
    const firstKept = (await store.firstSeqAtOrAfter(chainId, cutoff)) ?? verification.headSeq + 1;
    const through = Math.min(firstKept - 1, verification.signedSeq);
    if (through <= from) return { chainId, deleted: 0 };

    // Recorded before anything is deleted: if the record cannot be written, nothing is pruned.
    await record({
      orgId: chainId === INSTANCE_CHAIN ? null : chainId,
      actor: { type: 'system', id: 'retention', display: 'audit retention' },
      action: 'audit.pruned',
      outcome: 'success',
      details: { throughSeq: through, deleted: through - from, retentionDays: options.retentionDays },
    });
    const signer = await serverKeys.signer('audit-checkpoint');
    let deleted = 0;
    for (let done = from; done < through; ) {
      const upTo = Math.min(through, done + PRUNE_CHUNK);
      deleted += await store.transaction(async (tx) => {
        const event = await store.eventAt(chainId, upTo, tx);
        if (!event) throw new Error(`audit event ${chainId}#${upTo} disappeared during pruning`);
        const ts = clock();
        const statement = signedStatement({
          kind: 'anchor',
          chainId,
          seq: upTo,
          hash: event.hash,
          ts,
          keyId: signer.keyId,
        });
        await store.insertCheckpoint(
          {
            id: newId('ckp', ts),
            chain_id: chainId,
            kind: 'anchor',
            seq: upTo,
            hash: event.hash,
            ts,
            key_id: signer.keyId,
            signature: signer.sign(statement),
          },
          tx,
        );
        return store.deleteThrough(tx, chainId, upTo);
      });
      done = upTo;
    }
    return { chainId, throughSeq: through, deleted };
  }

  /**
   * Creates the checkpoint signing key only for a log that has never been signed. If checkpoints exist
   * but their key is gone, a new key would vouch for whatever the database now holds.
   */
  async function ensureSigningKey(): Promise<void> {
    if (!(await serverKeys.exists('audit-checkpoint')) && (await store.hasStatements())) {
      throw new AuditUnavailableError(
        'signed audit checkpoints exist but their signing key is missing from the database; refusing to create a new key that would vouch for a possibly rewritten log (restore server_keys from a backup)',
      );
    }
    await serverKeys.signer('audit-checkpoint');
  }

  return {
    record,
    withEvents,

    /** Resolves when every event recorded so far is committed (or has failed). */
    async flush(): Promise<void> {
      while (draining) await draining;
    },

    /** Resolves when, in addition, the checkpoints those events triggered are signed. */
    async settled(): Promise<void> {
      while (draining) await draining;
      await Promise.allSettled([...background]);
    },

    /**
     * Whether an organization's chain records an event of one of `actions` about `targetId`: the log
     * as a witness a database writer cannot quietly rewrite (an edit breaks the chain).
     */
    hasEventAbout: (orgId: string, targetId: string, actions: readonly AuditAction[]) =>
      store.hasEventAbout(orgId, targetId, actions),

    checkpoint,
    checkpointAll,
    verify,
    ensureSigningKey,

    async verifyAll(onProgress?: (chainId: string, events: number) => void): Promise<ChainVerification[]> {
      const results: ChainVerification[] = [];
      for (const chainId of await store.chainIds()) {
        results.push(await verify(chainId, (n) => onProgress?.(chainId, n)));
      }
      return results;
    },

    async prune(now: number = clock()): Promise<PruneResult[]> {
      const cutoff = now - options.retentionDays * DAY_MS;
      const results: PruneResult[] = [];
      for (const chainId of await store.chainIds()) results.push(await pruneChain(chainId, cutoff));
      return results;
    },

    async query(
      chainId: string,
      filters: AuditFilters,
      page: { limit: number; cursor?: string },
    ): Promise<{ events: AuditEventRow[]; nextCursor: string | null }> {
      const limit = Math.min(Math.max(1, page.limit), MAX_QUERY_LIMIT);
      const beforeSeq = page.cursor === undefined ? undefined : decodeCursor(page.cursor);
      const rows = await store.page(chainId, filters, limit + 1, beforeSeq);
      const events = await pii.openRows(rows.slice(0, limit));
      return { events, nextCursor: rows.length > limit ? encodeCursor(events.at(-1)!.seq) : null };
    },

    /**
     * The organization's audit search (AUD-4): its own chain, plus (with `memberSecurity`) its current
     * members' account security events from the instance chain, whose details are cut down to
     * {@link MEMBER_SECURITY_DETAILS}. Sorted by time or by type, keyset-paged.
     */
    async search(
      orgId: string,
      filters: AuditFilters,
      page: {
        limit: number;
        cursor?: string;
        sort?: AuditSort;
        order?: 'asc' | 'desc';
        memberSecurity?: boolean;
      },
    ): Promise<{ events: SearchedEvent[]; nextCursor: string | null }> {
      const limit = Math.min(Math.max(1, page.limit), MAX_QUERY_LIMIT);
      const sort = page.sort ?? 'time';
      const descending = (page.order ?? 'desc') === 'desc';
      const after = page.cursor === undefined ? undefined : decodeSearchCursor(page.cursor, sort, descending);
      // Members' events come from the instance chain, which no organization's scope admits: the query
      // names the organization and its members itself (audit.store.ts), so it runs across organizations.
      const acrossChains = <T>(read: () => Promise<T>) => (page.memberSecurity ? acrossOrgs(read) : read());
      const rows = await acrossChains(() =>
        store.search(orgId, filters, {
          limit: limit + 1,
          sort,
          descending,
          ...(after ? { after } : {}),
          ...(page.memberSecurity ? { memberSecurity: MEMBER_SECURITY_ACTIONS } : {}),
        }),
      );
      const shown = await pii.openRows(rows.slice(0, limit));
      const signed = await acrossChains(() => store.signedThrough(shown.map((row) => row.chain_id)));
      const users = await store.userNames(
        shown.filter((row) => row.actor_type === 'user' && row.actor_id).map((row) => row.actor_id!),
      );
      const events = shown.map((row): SearchedEvent => {
        const fromInstance = row.chain_id !== orgId;
        const details = fromInstance
          ? JSON.stringify(
              Object.fromEntries(
                Object.entries(JSON.parse(row.details) as Record<string, unknown>).filter(([key]) =>
                  MEMBER_SECURITY_DETAILS.has(key),
                ),
              ),
            )
          : row.details;
        return {
          row: { ...row, details },
          chain: fromInstance ? 'instance' : 'org',
          signed: (signed.get(row.chain_id) ?? 0) >= row.seq,
          actorUser: row.actor_type === 'user' && row.actor_id ? (users.get(row.actor_id) ?? null) : null,
        };
      });
      const last = shown.at(-1);
      return {
        events,
        nextCursor:
          rows.length > limit && last
            ? encodeSearchCursor(sort, descending, {
                ts: last.ts,
                id: last.id,
                ...(sort === 'action' ? { action: last.action } : {}),
              })
            : null,
      };
    },

    /** Resolves what a person typed for an actor (an email or a name) to the user ids it names. */
    usersNamed: (text: string) => store.usersNamed(text),

    /** The organization's critical events since `since`, newest first (the dashboard's list). */
    async recentCritical(orgId: string, since: number, limit: number): Promise<AuditEventRow[]> {
      return pii.openRows(
        await store.search(
          orgId,
          { actions: CRITICAL_ACTIONS, since },
          { limit, sort: 'time', descending: true },
        ),
      );
    },

    /**
     * Opens an export of a chain's events, oldest first, with no row limit: the returned iterable
     * reads page by page as the consumer pulls, so memory stays flat for any size. The export is
     * recorded before it is returned, and refused if that record cannot be written.
     */
    async openExport(request: {
      chainId: string;
      filters: AuditFilters;
      format: ExportFormat;
      actor: AuditActor;
      context?: AuditRequestContext;
      onProgress?: (rows: number) => void;
    }): Promise<AsyncGenerator<string>> {
      const { chainId, filters, format } = request;
      await record({
        orgId: chainId === INSTANCE_CHAIN ? null : chainId,
        actor: request.actor,
        action: 'audit.exported',
        target: { type: 'audit_log', id: chainId },
        outcome: 'success',
        ...(request.context ? { context: request.context } : {}),
        details: {
          format,
          filters: JSON.parse(JSON.stringify(filters)) as { [key: string]: JsonValue },
        },
      });
      return exportChunks(chainId, filters, format, request.onProgress);
    },

    /** Stops accepting events, commits everything queued, and signs a final checkpoint of each chain. */
    async close(): Promise<void> {
      closed = true;
      await Promise.allSettled([...inFlight]);
      while (draining) await draining;
      await Promise.allSettled([...background]);
      try {
        await checkpointAll();
      } catch (error) {
        logger.error({ err: error }, 'final audit checkpoint failed');
      }
    },

    /** Chains that exist (organizations and the instance chain), including any whose head record is gone. */
    chains: () => store.chainIds(),

    /**
     * A chain's events after `afterSeq`, oldest first, each with its NDJSON export line: what audit
     * sinks deliver (AUD-6), so a sink's copy is read and verified exactly like an export.
     */
    async exportLines(
      chainId: string,
      filters: AuditFilters,
      limit: number,
      afterSeq: number,
      /** Whether lines carry `shown` (opened personal data); off: only the sealed/hashed form. */
      personalData = false,
    ): Promise<Array<{ row: AuditEventRow; line: string }>> {
      const page = await store.pageAscending(chainId, filters, limit, afterSeq);
      const shown = personalData && page.length > 0 ? await pii.openRows(page) : [];
      return page.map((row, i) => ({ row, line: ndjsonLine(row, shown[i]) }));
    },
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
