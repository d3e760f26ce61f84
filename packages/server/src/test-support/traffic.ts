import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DB } from '../db/schema.js';
import { SESSION_COOKIE } from '../identity/session-guard.js';
import type { SessionClient } from './session-client.js';

/**
 * Concurrent traffic from a signed-in member while a test breaks the database under it: state changes
 * of three kinds (each a row and its audit event, committed together) and reads, every answer kept,
 * and a way to wait for what the answers show instead of waiting for time.
 */

export type ChangeKind = 'team' | 'apiKey' | 'secret';
export type Kind = ChangeKind | 'read' | 'ready';
export const CHANGE_KINDS: ChangeKind[] = ['team', 'apiKey', 'secret'];

export interface Outcome {
  kind: Kind;
  /** The unique name a change was sent with. */
  name: string;
  /** 0 when no answer came before the hang bound. */
  status: number;
  code?: string;
  /** The id the server gave a change it acknowledged. */
  id?: string;
  /** The phase when the request was sent, and when its answer came. */
  sent: string;
  answered: string;
}

/** The audit action recorded with each kind of change, and the table its row lives in. */
export const CHANGE_RECORDS: Record<ChangeKind, { action: string; table: 'teams' | 'api_keys' | 'secrets' }> =
  {
    team: { action: 'team.created', table: 'teams' },
    apiKey: { action: 'apikey.created', table: 'api_keys' },
    secret: { action: 'secret.created', table: 'secrets' },
  };

export class Traffic {
  readonly outcomes: Outcome[] = [];
  /** A label the test moves along ("before", "outage 1"…); every outcome records it. */
  phase = 'before';
  private running = false;
  private workers: Promise<void>[] = [];
  private waiters = new Set<() => void>();

  constructor(
    private readonly member: SessionClient,
    private readonly org: string,
    private readonly options: {
      kinds: Kind[];
      workers: number;
      /** How long one request may go unanswered before it counts as hung (a failure, not a wait). */
      hangMs: number;
      /** What a client does after a refusal before it sends again (a real client backs off too). */
      backoffMs?: number;
      /** An answer the test forbids at any time (a 500, a hang): every wait fails at once on it. */
      forbidden?: (outcome: Outcome) => boolean;
    },
  ) {}

  private body(kind: Kind, name: string): { method: string; route: string; body?: unknown } {
    const base = `/api/orgs/${this.org}`;
    switch (kind) {
      case 'team':
        return { method: 'POST', route: `${base}/teams`, body: { name } };
      case 'apiKey':
        return { method: 'POST', route: `${base}/api-keys`, body: { name, permissions: ['teams:read'] } };
      case 'secret':
        return { method: 'POST', route: `${base}/secrets`, body: { name, value: `value-of-${name}` } };
      case 'read':
        return { method: 'GET', route: `${base}/teams` };
      case 'ready':
        return { method: 'GET', route: '/readyz' };
    }
  }

  /** Sends one request of `kind` as the member and records its outcome. */
  async send(kind: Kind): Promise<Outcome> {
    const name = `${kind}_${randomBytes(6).toString('hex')}`;
    const { method, route, body } = this.body(kind, name);
    const outcome: Outcome = { kind, name, status: 0, sent: this.phase, answered: '' };
    try {
      const response = await fetch(`${this.member.base}${route}`, {
        method,
        headers: {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          cookie: `${SESSION_COOKIE}=${this.member.cookie}`,
          'x-csrf-token': this.member.csrf ?? '',
          origin: this.member.base,
          'sec-fetch-site': 'same-origin',
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(this.options.hangMs),
      });
      const text = await response.text();
      outcome.status = response.status;
      const parsed = (text.startsWith('{') ? JSON.parse(text) : {}) as {
        id?: string;
        apiKey?: { id?: string };
        error?: { code?: string };
      };
      if (response.ok) outcome.id = parsed.apiKey?.id ?? parsed.id;
      else outcome.code = parsed.error?.code;
    } catch (error) {
      // No answer at all: hung past the bound, or the connection was cut.
      outcome.code =
        (error as Error).name === 'TimeoutError' ? 'hung' : `no answer: ${(error as Error).message}`;
    }
    outcome.answered = this.phase;
    this.outcomes.push(outcome);
    for (const waiter of [...this.waiters]) waiter();
    return outcome;
  }

  start(): void {
    this.running = true;
    const { kinds, workers, backoffMs = 0 } = this.options;
    this.workers = Array.from({ length: workers }, async (_, worker) => {
      for (let i = worker; this.running; i++) {
        const outcome = await this.send(kinds[i % kinds.length]!);
        if (backoffMs > 0 && outcome.status >= 500) await new Promise((r) => setTimeout(r, backoffMs));
      }
    });
  }

  /** Stops sending and resolves once every request in flight has its answer. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves once `condition` holds over the outcomes so far; checked as each answer arrives. */
  until(condition: (outcomes: Outcome[]) => boolean, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const forbidden = this.options.forbidden && this.outcomes.find(this.options.forbidden);
        if (forbidden) {
          this.waiters.delete(check);
          reject(
            new Error(
              `forbidden answer ${JSON.stringify(forbidden)} while waiting until ${what}:\n${this.summary()}`,
            ),
          );
        } else if (condition(this.outcomes)) {
          this.waiters.delete(check);
          resolve();
        } else if (!this.running) {
          this.waiters.delete(check);
          reject(new Error(`traffic stopped before ${what}:\n${this.summary()}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Answers counted by phase, kind and status (and error code), for a failure's message. */
  summary(): string {
    const counts = new Map<string, number>();
    for (const o of this.outcomes) {
      const key = `${o.sent}→${o.answered} ${o.kind} ${o.status}${o.code ? ` ${o.code}` : ''}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return [...counts].map(([key, n]) => `  ${key}: ${n}`).join('\n');
  }
}

/** What is in the database for each kind of change: the rows, and the targets of their audit events. */
export async function changesOnRecord(
  db: Kysely<DB>,
  orgId: string,
): Promise<Record<ChangeKind, { rows: Map<string, string>; events: Set<string> }>> {
  const result = {} as Record<ChangeKind, { rows: Map<string, string>; events: Set<string> }>;
  for (const kind of CHANGE_KINDS) {
    const { action, table } = CHANGE_RECORDS[kind];
    const rows = await db.selectFrom(table).select(['id', 'name']).where('org_id', '=', orgId).execute();
    const events = await db
      .selectFrom('audit_events')
      .select('target_id')
      .where('chain_id', '=', orgId)
      .where('action', '=', action)
      .execute();
    result[kind] = {
      rows: new Map(rows.map((row) => [row.id, row.name])),
      events: new Set(events.map((event) => event.target_id ?? '')),
    };
  }
  return result;
}
