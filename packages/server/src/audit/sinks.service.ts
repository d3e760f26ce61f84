import { X509Certificate } from 'node:crypto';
import { generateToken, newId } from '@bulwark/protocol';
import { type Caller, callerEvent } from '../access/caller.js';
import { AppError, NotFoundError } from '../errors.js';
import { type DataKeyring, type KeyScope, orgScope } from '../secrets/data-keyring.js';
import { type AuditActor, type AuditInput, INSTANCE_CHAIN } from './audit.types.js';
import type { Transact } from './audited-transaction.js';
import {
  type SinkConfig,
  type SinkConfigView,
  type SinkKind,
  sinkConfigContext,
  viewOfConfig,
} from './sinks.config.js';
import { type SinkTransport, testLine } from './sinks.lines.js';
import { sinkProblem } from './sinks.problems.js';
import {
  type AuditSinkRow,
  chainOfSink,
  createSinksStore,
  type SinkOwnerId,
  type SinksStore,
} from './sinks.store.js';
import { DEFAULT_SYSLOG_FACILITY } from './sinks.syslog.js';

/** What a caller asks for; the server adds the webhook's signing secret. */
export type SinkInput =
  | { kind: 'webhook'; url: string }
  | {
      kind: 'syslog';
      host: string;
      port: number;
      caPem: string;
      serverName?: string | null | undefined;
      facility?: number | undefined;
      appHostname?: string | null | undefined;
    }
  | { kind: 'file' }
  | { kind: 'otlp'; url: string; headers?: Record<string, string> | undefined };

export interface SinkView {
  id: string;
  name: string;
  kind: SinkKind;
  enabled: boolean;
  config: SinkConfigView;
  delivery: {
    deliveredSeq: number;
    checkpointSeq: number;
    failures: number;
    lastError: string | null;
    nextAttemptAt: number | null;
    lastDeliveredAt: number | null;
  };
  createdAt: number;
  updatedAt: number;
}

/**
 * Who configures sinks, for which chain: a member of an organization through the API (the org's
 * chain), or an operator on the host through the CLI (the instance chain, `orgId: null`). Each change
 * is audited in the owner's chain.
 */
export interface SinkOwner {
  orgId: SinkOwnerId;
  /** Recorded as the sink's creator (null from the CLI). */
  userId: string | null;
  event(
    action: AuditInput['action'],
    target: AuditInput['target'],
    details: AuditInput['details'],
    outcome?: AuditInput['outcome'],
  ): AuditInput;
}

export const orgSinkOwner = (caller: Caller): SinkOwner => ({
  orgId: caller.org.id,
  userId: caller.userId,
  event: (action, target, details, outcome) => callerEvent(caller, action, target, details, outcome),
});

export const instanceSinkOwner = (actor: AuditActor): SinkOwner => ({
  orgId: null,
  userId: null,
  event: (action, target, details = {}, outcome = 'success') => ({
    orgId: null,
    actor,
    action,
    target,
    outcome,
    details,
  }),
});

/** The instance's sinks are sealed under the instance's data key, an org's under the org's. */
const keyScopeOf = (orgId: SinkOwnerId): KeyScope => (orgId === null ? 'instance' : orgScope(orgId));

/** Sinks one organization (or the instance) may have: each is a delivery loop's worth of work and a connection per pass. */
export const MAX_SINKS_PER_ORG = 10;

/** Where a sink sends, for the audit event: the host (a URL's path or query may carry a token). */
function destinationOf(input: SinkInput): string {
  switch (input.kind) {
    case 'webhook':
    case 'otlp':
      return new URL(input.url).host;
    case 'syslog':
      return `${input.host}:${input.port}`;
    case 'file':
      return 'file';
  }
}

/**
 * An organization's audit sinks (AUD-6): configuration sealed under the org's data key, every change
 * audited in its own transaction, the webhook signing secret shown once (at creation or rotation).
 */
export function createSinksService(deps: {
  store: SinksStore;
  dataKeys: Pick<DataKeyring, 'seal' | 'open'>;
  transact: Transact;
  clock: () => number;
  /** Where file sinks write; undefined: file sinks are refused. */
  fileDir: string | undefined;
  transportOf: (sinkId: string, config: SinkConfig) => SinkTransport;
  /** Told when a sink is deleted or disabled, so its metrics go. */
  onRemoved?: (sinkId: string, kind: string) => void;
}) {
  const { store, dataKeys, transact, clock } = deps;

  async function open(row: AuditSinkRow): Promise<SinkConfig> {
    const opened = await dataKeys.open(
      keyScopeOf(row.org_id),
      row.config_sealed,
      sinkConfigContext(chainOfSink(row), row.id),
    );
    return JSON.parse(opened.plaintext.toString('utf8')) as SinkConfig;
  }

  const seal = (orgId: SinkOwnerId, id: string, config: SinkConfig) =>
    dataKeys.seal(keyScopeOf(orgId), JSON.stringify(config), sinkConfigContext(orgId ?? INSTANCE_CHAIN, id));

  async function view(row: AuditSinkRow): Promise<SinkView> {
    return {
      id: row.id,
      name: row.name,
      kind: row.kind as SinkKind,
      enabled: row.enabled === 1,
      config: viewOfConfig(await open(row), row.id),
      delivery: {
        deliveredSeq: row.delivered_seq,
        checkpointSeq: row.checkpoint_seq,
        failures: row.failures,
        lastError: row.last_error,
        nextAttemptAt: row.next_attempt_at > 0 ? row.next_attempt_at : null,
        lastDeliveredAt: row.last_delivered_at,
      },
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  function configOf(input: SinkInput): { config: SinkConfig; signingSecret?: string } {
    switch (input.kind) {
      case 'webhook': {
        const signingSecret = generateToken('bwh');
        return { config: { kind: 'webhook', url: input.url, signingSecret }, signingSecret };
      }
      case 'syslog':
        try {
          new X509Certificate(input.caPem);
        } catch {
          throw new AppError(422, 'invalid_ca_certificate', 'caPem is not a PEM certificate.');
        }
        return {
          config: {
            kind: 'syslog',
            host: input.host,
            port: input.port,
            caPem: input.caPem,
            serverName: input.serverName ?? null,
            facility: input.facility ?? DEFAULT_SYSLOG_FACILITY,
            appHostname: input.appHostname ?? null,
          },
        };
      case 'file':
        if (!deps.fileDir)
          throw new AppError(
            409,
            'file_sinks_disabled',
            'File sinks need BULWARK_AUDIT_SINK_DIR set on the server (where their files go).',
          );
        return { config: { kind: 'file' } };
      case 'otlp':
        return { config: { kind: 'otlp', url: input.url, headers: input.headers ?? {} } };
    }
  }

  async function existing(orgId: SinkOwnerId, id: string): Promise<AuditSinkRow> {
    const row = await store.get(orgId, id);
    if (!row) throw new NotFoundError('No such audit sink.');
    return row;
  }

  return {
    open,

    async list(orgId: SinkOwnerId): Promise<SinkView[]> {
      return Promise.all((await store.list(orgId)).map(view));
    },

    async get(orgId: SinkOwnerId, id: string): Promise<SinkView> {
      return view(await existing(orgId, id));
    },

    async create(
      owner: SinkOwner,
      input: { name: string; config: SinkInput; from: 'start' | 'now'; personalData?: boolean | undefined },
    ): Promise<{ sink: SinkView; signingSecret?: string }> {
      const now = clock();
      const id = newId('snk', now);
      const made = configOf(input.config);
      const signingSecret = made.signingSecret;
      const personalData = input.personalData === true;
      const config: SinkConfig = { ...made.config, personalData };
      // Sealed before the transaction: the org's data key may need reading, on a connection of its own.
      const sealed = await seal(owner.orgId, id, config);
      const row = await transact(async (trx, events) => {
        const tx = createSinksStore(trx);
        const sinks = await tx.list(owner.orgId);
        if (sinks.some((sink) => sink.name === input.name))
          throw new AppError(
            409,
            'audit_sink_exists',
            'An audit sink with this name exists; choose another.',
          );
        // Counted inside the transaction, so parallel creations cannot slip past the cap together.
        if (sinks.length >= MAX_SINKS_PER_ORG)
          throw new AppError(
            409,
            'audit_sink_limit',
            `An organization may have at most ${MAX_SINKS_PER_ORG} audit sinks; delete one first.`,
          );
        // `now`: from the head as it is (this very event included, it is appended after).
        const start = input.from === 'now' ? await tx.headSeq(owner.orgId ?? INSTANCE_CHAIN) : 0;
        const row: AuditSinkRow = {
          id,
          org_id: owner.orgId,
          name: input.name,
          kind: config.kind,
          config_sealed: sealed,
          enabled: 1,
          delivered_seq: start,
          checkpoint_seq: start,
          priority_seq: start,
          failures: 0,
          next_attempt_at: 0,
          last_error: null,
          last_delivered_at: null,
          created_by: owner.userId,
          created_at: now,
          updated_at: now,
        };
        await tx.insert(row);
        events.push(
          owner.event(
            'audit.sink_created',
            { type: 'audit_sink', id, display: input.name },
            {
              kind: config.kind,
              destination: destinationOf(input.config),
              from: input.from,
              personalData,
            },
          ),
        );
        return row;
      });
      return { sink: await view(row), ...(signingSecret ? { signingSecret } : {}) };
    },

    /** Renames, enables or disables a sink, or gives a webhook a new signing secret (shown once). */
    async update(
      owner: SinkOwner,
      id: string,
      patch: {
        name?: string | undefined;
        enabled?: boolean | undefined;
        rotateSigningSecret?: boolean | undefined;
        personalData?: boolean | undefined;
      },
    ): Promise<{ sink: SinkView; signingSecret?: string }> {
      const current = await existing(owner.orgId, id);
      let signingSecret: string | undefined;
      let sealed: string | undefined;
      const config = await open(current);
      const wasPersonal = config.personalData === true;
      const personalChanged = patch.personalData !== undefined && patch.personalData !== wasPersonal;
      if (patch.rotateSigningSecret && config.kind !== 'webhook')
        throw new AppError(422, 'not_a_webhook', 'Only a webhook sink has a signing secret to rotate.');
      if (patch.rotateSigningSecret || personalChanged) {
        if (patch.rotateSigningSecret) signingSecret = generateToken('bwh');
        const next: SinkConfig =
          config.kind === 'webhook' && signingSecret ? { ...config, signingSecret } : { ...config };
        next.personalData = patch.personalData ?? wasPersonal;
        sealed = await seal(owner.orgId, id, next);
      }
      const now = Math.max(clock(), current.updated_at + 1);
      await transact(async (trx, events) => {
        const tx = createSinksStore(trx);
        if (patch.name !== undefined && patch.name !== current.name) {
          if ((await tx.list(owner.orgId)).some((sink) => sink.name === patch.name))
            throw new AppError(
              409,
              'audit_sink_exists',
              'An audit sink with this name exists; choose another.',
            );
        }
        const updated = await tx.update(owner.orgId, id, {
          ...(patch.name !== undefined ? { name: patch.name } : {}),
          ...(patch.enabled !== undefined ? { enabled: patch.enabled ? 1 : 0 } : {}),
          ...(sealed ? { config_sealed: sealed } : {}),
          // Re-enabled or re-keyed: try again now rather than at the end of a long backoff.
          failures: 0,
          next_attempt_at: 0,
          updated_at: now,
        });
        if (!updated) throw new NotFoundError('No such audit sink.');
        events.push(
          owner.event(
            'audit.sink_updated',
            { type: 'audit_sink', id, display: patch.name ?? current.name },
            {
              kind: current.kind,
              ...(patch.name !== undefined ? { renamedFrom: current.name } : {}),
              ...(patch.enabled !== undefined ? { enabled: patch.enabled } : {}),
              ...(patch.rotateSigningSecret ? { signingRotated: true } : {}),
              ...(personalChanged ? { personalData: patch.personalData === true } : {}),
            },
          ),
        );
      });
      if (patch.enabled === false) deps.onRemoved?.(id, current.kind);
      const sink = await view(await existing(owner.orgId, id));
      return { sink, ...(signingSecret ? { signingSecret } : {}) };
    },

    async remove(owner: SinkOwner, id: string): Promise<void> {
      const current = await existing(owner.orgId, id);
      await transact(async (trx, events) => {
        if (!(await createSinksStore(trx).remove(owner.orgId, id)))
          throw new NotFoundError('No such audit sink.');
        events.push(
          owner.event(
            'audit.sink_deleted',
            { type: 'audit_sink', id, display: current.name },
            { kind: current.kind, deliveredSeq: current.delivered_seq },
          ),
        );
      });
      deps.onRemoved?.(id, current.kind);
    },

    /** Sends one test line (`"kind":"test"`) now, outside the stream, and says what went wrong. */
    async test(owner: SinkOwner, id: string): Promise<{ ok: boolean; problem?: string }> {
      const row = await existing(owner.orgId, id);
      let problem: string | undefined;
      try {
        await deps.transportOf(row.id, await open(row)).send([testLine(chainOfSink(row), row.id, clock())]);
      } catch (error) {
        // A fixed reason, never Node's message (it names the resolved address and port).
        problem = sinkProblem(error);
      }
      await transact(async (_trx, events) => {
        events.push(
          owner.event(
            'audit.sink_tested',
            { type: 'audit_sink', id, display: row.name },
            { kind: row.kind, ...(problem ? { problem } : {}) },
            problem ? 'failure' : 'success',
          ),
        );
      });
      return problem ? { ok: false, problem } : { ok: true };
    },
  };
}

export type SinksService = ReturnType<typeof createSinksService>;
