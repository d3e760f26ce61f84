import { realpath } from 'node:fs/promises';
import path from 'node:path';
import {
  ActionDeclaration,
  AGENT_PROTOCOL_VERSION,
  type HEALTH_STATUSES,
  MAX_AGENT_MESSAGE_BYTES,
  ReportMessage,
  type RISKS,
  ServiceReport,
} from '@bulwark/protocol';
import { z } from 'zod';
import { type ActionCatalog, actionKey, compileParams, type HandlerAction, isInside } from './config.js';
import { type AgentRunner, type RunOutcome, startAgent } from './connection.js';
import type { ActionContext, HandlerReturn } from './handler.js';
import { journalFileFor, openJournal } from './journal.js';
import { createLogger, type Logger } from './log.js';
import { printable } from './net.js';
import { loadStateFile } from './state.js';

/**
 * The SDK for embedding an agent in a Node service (EXEC-5):
 *
 * ```ts
 * const restart = action({
 *   name: 'restart', description: 'Restart the workers', risk: 'medium', timeoutSeconds: 60,
 *   params: z.object({ graceful: z.boolean().default(true) }),
 *   async handler({ graceful }, { logger, signal }) { logger.info(`restarting (graceful: ${graceful})`); },
 * });
 * const agent = await startEmbeddedAgent({
 *   stateFile: '/var/lib/billing/agent.json',
 *   services: [defineService({ name: 'billing', kind: 'node', health: () => ({ status: 'up' }), actions: [restart] })],
 *   roots: ['/var/lib/billing/data'],
 * });
 * ```
 *
 * The embedded agent is the daemon's pipeline (connection.ts, commands.ts, verify-command.ts,
 * journal.ts) with one difference: an action runs by calling its handler in this process (handler.ts)
 * instead of spawning. So an SDK action is verified (signature, target, expiry, replay), journaled
 * before it runs, and at most once, exactly like an exec action; its params are checked with the
 * JSON Schema the server saw (derived from the zod schema) and then with the zod schema itself.
 *
 * The params schema reported is `z.toJSONSchema(params, {io: 'input'})` (draft 2020-12) with every
 * object closed (`additionalProperties: false`: what the handler does not declare, it does not get).
 * It must compile under Ajv 2020 in strict mode, as the server requires; `action()` throws otherwise,
 * naming the problem. Two rewrites keep common zod schemas acceptable without changing what they
 * accept: a `format` zod also expresses as a `pattern` (`z.email()`, `z.uuid()`, …) is dropped (Ajv
 * knows no formats without a plugin, and strict mode refuses unknown ones), and a bare union of
 * primitive types (`type: ["string", "number"]`) becomes an `anyOf` (strict mode refuses union types).
 */

export type Risk = (typeof RISKS)[number];
export type HealthStatus = (typeof HEALTH_STATUSES)[number];
export type Health = { status: HealthStatus; message?: string };
/** A configuration item: absent `value` means not configured; `secret` ones never leave the host. */
export type ConfigItem = { key: string; value?: string; secret?: boolean };
export type { ActionContext, ActionLogger } from './handler.js';

/** A zod object schema of an action's params. */
// biome-ignore lint/suspicious/noExplicitAny: the widest object schema, as zod's own helpers declare it
type ParamsSchema = z.ZodObject<any>;

export interface ActionDefinition<S extends ParamsSchema> {
  /** Lower-case letters, digits, `.`, `_`, `-`; unique within its service. */
  name: string;
  description: string;
  params: S;
  risk: Risk;
  /**
   * The execution timeout (1 s to 24 h; 5 minutes when not given): then the handler's signal is
   * aborted and the command `timed_out`.
   */
  timeoutSeconds?: number;
  /** Names of the secrets the action may receive. */
  secrets?: string[];
  /**
   * A workload-identity JWT for this audience (SEC-4), in `context.secrets.BULWARK_WORKLOAD_IDENTITY_TOKEN`;
   * the server mints it only for an audience its configuration allows.
   */
  workloadIdentity?: { audience: string };
  /** Resolves: `succeeded` (a returned string is added to the output). Throws: `failed`, with the error's message. */
  handler(params: z.output<S>, context: ActionContext): HandlerReturn;
}

/** An action ready for `defineService` (what `action()` returns). */
export interface SdkAction {
  readonly declaration: ActionDeclaration;
  /** @internal how the embedded agent runs it */
  readonly runnable: Omit<HandlerAction, 'service'>;
}

export class SdkDefinitionError extends Error {}

/** The JSON Schema the server checks params against, derived from the zod schema. */
export function paramsJsonSchema(params: ParamsSchema): Record<string, unknown> {
  const schema = z.toJSONSchema(params, {
    target: 'draft-2020-12',
    io: 'input',
    unrepresentable: 'throw',
    override(ctx) {
      const json = ctx.jsonSchema as Record<string, unknown>;
      if (json.type === 'object' && json.additionalProperties === undefined)
        json.additionalProperties = false;
      if (typeof json.format === 'string' && typeof json.pattern === 'string') delete json.format;
    },
  }) as Record<string, unknown>;
  return unionTypesAsAnyOf(schema) as Record<string, unknown>;
}

/** Keywords whose values are data, not schemas: never rewritten. */
const DATA_KEYWORDS = new Set(['default', 'examples', 'const', 'enum']);
const ANNOTATIONS = new Set(['type', 'default', 'description', 'title', 'examples']);

/**
 * zod writes a union of bare primitive types as `type: [...]`, which Ajv's strict mode refuses
 * (strictTypes); `anyOf` of the same types accepts exactly the same values. `[T, "null"]` is
 * accepted by Ajv as it is and left alone.
 */
function unionTypesAsAnyOf(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(unionTypesAsAnyOf);
  if (typeof node !== 'object' || node === null) return node;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] = DATA_KEYWORDS.has(key) ? value : unionTypesAsAnyOf(value);
  }
  const types = out.type;
  if (
    Array.isArray(types) &&
    types.filter((type) => type !== 'null').length > 1 &&
    Object.keys(out).every((key) => ANNOTATIONS.has(key))
  ) {
    delete out.type;
    out.anyOf = types.map((type) => ({ type }));
  }
  return out;
}

const problemsOf = (error: z.ZodError) =>
  error.issues.map((issue) => `/${issue.path.map(String).join('/')} ${issue.message}`);

/** Declares an SDK action. Throws SdkDefinitionError when the declaration is one the server would refuse. */
export function action<S extends ParamsSchema>(definition: ActionDefinition<S>): SdkAction {
  const where = `action ${JSON.stringify(definition.name)}`;
  if (!(definition.params instanceof z.ZodObject)) {
    throw new SdkDefinitionError(`${where}: params must be a zod object schema (z.object({…}))`);
  }
  let params: Record<string, unknown>;
  try {
    params = paramsJsonSchema(definition.params);
  } catch (error) {
    throw new SdkDefinitionError(
      `${where}: params cannot be expressed as JSON Schema: ${(error as Error).message}`,
    );
  }
  const declared = ActionDeclaration.safeParse({
    name: definition.name,
    description: definition.description,
    params,
    risk: definition.risk,
    timeoutSeconds: definition.timeoutSeconds,
    secrets: definition.secrets ?? [],
    ...(definition.workloadIdentity ? { workloadIdentity: definition.workloadIdentity } : {}),
  });
  if (!declared.success) {
    throw new SdkDefinitionError(`${where}: ${problemsOf(declared.error).join('; ')}`);
  }
  const compiled = compileParams(params);
  if (!compiled.validate) {
    throw new SdkDefinitionError(`${where}: params: ${compiled.problem} (the server would refuse it)`);
  }
  const schema = definition.params;
  const handler = definition.handler;
  return {
    declaration: declared.data,
    runnable: {
      kind: 'handler',
      declaration: declared.data,
      validate: compiled.validate,
      parse(input) {
        const parsed = schema.safeParse(input);
        return parsed.success
          ? { ok: true, value: parsed.data }
          : { ok: false, problems: problemsOf(parsed.error) };
      },
      handler: (input, context) => handler(input as z.output<S>, context),
    },
  };
}

export interface ServiceDefinition {
  /** Lower-case letters, digits, `.`, `_`, `-`; unique within the agent. */
  name: string;
  kind: string;
  version?: string;
  /** Asked before each connection; a throw reports `down`, no answer within 5 s `unknown`. */
  health?: () => Promise<Health> | Health;
  /** Configuration shown in the console; items marked `secret` are sent as `[redacted]`. */
  config?: ConfigItem[];
  actions: SdkAction[];
}

export interface SdkService {
  readonly name: string;
  readonly actions: readonly SdkAction[];
  /** The report for this service now (its health asked). Never rejects. */
  report(): Promise<ServiceReport>;
}

/** How long a health check may take before the report says `unknown`. */
export const HEALTH_TIMEOUT_MS = 5000;

async function healthOf(check: ServiceDefinition['health']): Promise<Health> {
  if (!check) return { status: 'up' };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Health>((resolve) => {
    timer = setTimeout(
      () => resolve({ status: 'unknown', message: 'the health check did not answer in time' }),
      HEALTH_TIMEOUT_MS,
    );
  });
  try {
    const answer = await Promise.race([Promise.resolve().then(check), timeout]);
    const parsed = ServiceReport.shape.health.safeParse(answer);
    return parsed.success
      ? parsed.data
      : { status: 'unknown', message: 'the health check returned something that is not a health' };
  } catch (error) {
    const message = error instanceof Error ? error.message : '';
    return { status: 'down', message: printable(message || 'the health check failed', 499) };
  } finally {
    clearTimeout(timer);
  }
}

/** Declares a service of an embedded agent. Throws SdkDefinitionError when the server would refuse it. */
export function defineService(definition: ServiceDefinition): SdkService {
  const where = `service ${JSON.stringify(definition.name)}`;
  const names = new Set<string>();
  for (const declared of definition.actions) {
    if (names.has(declared.declaration.name)) {
      throw new SdkDefinitionError(`${where}: duplicate action name "${declared.declaration.name}"`);
    }
    names.add(declared.declaration.name);
  }
  const base = {
    name: definition.name,
    kind: definition.kind,
    version: definition.version ?? '',
    health: { status: 'unknown' },
    config: definition.config ?? [],
    actions: definition.actions.map((a) => a.declaration),
  };
  const checked = ServiceReport.safeParse(base);
  if (!checked.success) throw new SdkDefinitionError(`${where}: ${problemsOf(checked.error).join('; ')}`);
  const report = checked.data;
  return {
    name: definition.name,
    actions: definition.actions,
    async report() {
      return { ...report, health: ServiceReport.shape.health.parse(await healthOf(definition.health)) };
    },
  };
}

export interface EmbeddedAgentOptions {
  /** The state file `bulwark-agent register` (or `register()`) wrote; mode 0600. Its journal sits beside it. */
  stateFile: string;
  services: SdkService[];
  /** What the handlers' `context.fs` reaches (EXEC-3); none by default (then every file access is refused). */
  roots?: string[];
  /** The agent's own log (JSON lines on stdout by default); never the commands' output. */
  logger?: Logger;
  /** How long a handler has to stop after its signal is aborted before its outcome is reported anyway; 5 s. */
  graceMs?: number;
  /** Told when the agent comes online and goes offline. */
  onStatus?(status: 'online' | 'offline'): void;
}

export interface EmbeddedAgent {
  readonly agentId: string;
  /** Settles when the agent stops for good (stopped, or revoked by the server); the journal is closed. */
  readonly done: Promise<RunOutcome>;
  /** Signals running handlers, waits for them (at most the grace period), closes the connection and the journal. */
  stop(): Promise<RunOutcome>;
}

/**
 * Starts an agent inside this process: loads the state file, opens (and recovers) the command
 * journal, connects and reports `services`, and runs their actions' handlers on signed commands.
 * Throws when the state file or the journal is unusable, when a root contains the state file, or
 * when the services break a rule.
 */
export async function startEmbeddedAgent(options: EmbeddedAgentOptions): Promise<EmbeddedAgent> {
  const logger = options.logger ?? createLogger();
  const actions: ActionCatalog = new Map();
  const seen = new Set<string>();
  for (const service of options.services) {
    if (seen.has(service.name)) throw new SdkDefinitionError(`duplicate service name "${service.name}"`);
    seen.add(service.name);
    for (const declared of service.actions) {
      actions.set(actionKey(service.name, declared.declaration.name), {
        ...declared.runnable,
        service: service.name,
      });
    }
  }
  const report = () => Promise.all(options.services.map((service) => service.report()));
  const size = Buffer.byteLength(
    JSON.stringify(
      ReportMessage.parse({ v: AGENT_PROTOCOL_VERSION, type: 'report', services: await report() }),
    ),
  );
  // The server closes the connection on a larger message; better to say so now than loop on it.
  if (size > MAX_AGENT_MESSAGE_BYTES) {
    throw new SdkDefinitionError(`the services' report would exceed ${MAX_AGENT_MESSAGE_BYTES} bytes`);
  }
  const roots = (options.roots ?? []).map((root) => path.resolve(root));
  const stateFile = path.resolve(options.stateFile);
  // The state file holds the agent's private keys: a handler's file helpers must never reach it.
  for (const root of roots) {
    const realRoot = await realpath(root).catch(() => root);
    const realStateDir = await realpath(path.dirname(stateFile)).catch(() => path.dirname(stateFile));
    if (isInside(root, stateFile) || isInside(realRoot, realStateDir)) {
      throw new SdkDefinitionError(
        `the state file ${stateFile} is inside the root ${root}: handlers could read the agent's keys`,
      );
    }
  }
  const state = await loadStateFile(stateFile);
  // Opening the journal records as interrupted whatever a previous run of this process left unfinished.
  const journal = await openJournal(journalFileFor(stateFile), { logger });
  let runner: AgentRunner;
  try {
    runner = startAgent({
      state,
      services: report,
      actions,
      allowedRoots: roots,
      journal,
      logger,
      ...(options.graceMs !== undefined ? { killGraceMs: options.graceMs } : {}),
      ...(options.onStatus ? { onStatus: options.onStatus } : {}),
    });
  } catch (error) {
    await journal.close();
    throw error;
  }
  const done = runner.done.finally(() => journal.close());
  return {
    agentId: state.agentId,
    done,
    async stop() {
      await runner.stop();
      return done;
    },
  };
}
