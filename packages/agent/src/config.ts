import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  ActionDeclaration,
  AGENT_PROTOCOL_VERSION,
  MAX_AGENT_MESSAGE_BYTES,
  ReportMessage,
  ServiceReport,
} from '@bulwark/protocol';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import type { ActionHandler } from './handler.js';
import { Fingerprint256, type TlsPin } from './net.js';
import { MAX_ID, type RunAsIdentity, resolveRunAs, runAsPrivilegeProblem } from './run-as.js';
import { DEFAULT_STATE_FILE } from './state.js';

/**
 * `agent.yaml`: where the state file is, optional TLS pinning, and the services this agent reports.
 * Strict: an unknown key is a typo or a setting this version does not have, and silently ignoring it
 * would run the agent differently from what the operator wrote. There is no `server` setting: the
 * server is the one pinned in the state file at registration (AGT-6), and no `heartbeat`: the server
 * decides it in `welcome`.
 *
 * ```yaml
 * stateFile: /var/lib/bulwark-agent/state.json   # relative paths are relative to this file
 * tls: { caFile: /etc/bulwark-agent/ca.pem }    # optional; overrides the pin made at registration
 * services:
 *   - name: billing-db
 *     kind: postgresql
 *     version: "16.4"
 *     health: { status: up }
 *     config: [{ key: max_connections, value: "200" }, { key: password, secret: true, value: "…" }]
 *     actions:
 *       - { name: restart, description: Restart the service, params: {}, risk: medium, timeoutSeconds: 120 }
 *       - name: vacuum
 *         description: VACUUM one table
 *         params:
 *           type: object
 *           required: [table]
 *           properties: { table: { type: string, pattern: "^[a-z_]{1,63}$", maxLength: 63 } }
 *         risk: low
 *         timeoutSeconds: 600
 *         exec:                                       # EXEC-1: what the agent runs for this action
 *           argv: [/usr/bin/vacuumdb, --table, "{{table}}", billing]   # never a shell
 *           env: { PGHOST: /run/postgresql }          # added to the scrubbed environment (EXEC-2)
 *           workingDirectory: /srv/billing            # must be inside allowedRoots; default /
 *           outputLimitBytes: 65536                   # default and maximum 1 MiB
 *           runAs: { user: postgres }                 # optional; needs a root agent (run-as.ts)
 * allowedRoots: [/srv]                                # where exec actions may run; default: none
 * ```
 *
 * Exec actions (EXEC-1): `argv[0]` is literal text, an absolute path or a bare name looked up in the
 * scrubbed PATH. Every other element is literal text or exactly one `{{param}}`, which becomes exactly
 * one argument; a placeholder inside other text (`--table={{table}}`) is refused, because it invites
 * reading the argument as a template when it is only ever one string. Each placeholder must name a
 * required string parameter whose schema bounds it: an `enum`, or a `pattern` with a `maxLength`
 * (the agent matches the pattern against the WHOLE value, anchored or not). Actions without `exec`
 * are declarations only: this daemon refuses to run them (an embedded agent's SDK runs those).
 *
 * `runAs` (EXEC-2) names the user (and optionally the one group) a command runs as, by name or
 * numeric id. Names are resolved when the config is loaded, and an unknown one refuses the config;
 * `bulwark-agent run` then refuses to start unless it is root with the capabilities to switch
 * (run-as.ts says why a non-root agent with CAP_SETUID is not enough).
 */

export class ConfigError extends Error {}

/** The most output a command may forward; the server stores at most this much (CMD-5). */
export const MAX_OUTPUT_LIMIT_BYTES = 1024 * 1024;

const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be an environment variable name');

// A name as useradd/groupadd accept it (never starting with `-`, so never read as an option), or an id.
const AccountName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,255}\$?$/, 'must be a user or group name, or a numeric id');
const Account = z.union([z.number().int().min(0).max(MAX_ID), AccountName]);

const RunAsSchema = z.strictObject({
  /** The user the command runs as: a name from the user database, or a numeric uid taken as is. */
  user: Account,
  /** Its one group (supplementary groups are cleared): a name or a gid; default the user's primary group. */
  group: Account.optional(),
});

const ExecSchema = z.strictObject({
  /** The program and its arguments; `{{param}}` elements are replaced by one parameter each. */
  argv: z.array(z.string().max(4096)).min(1).max(256),
  /** Variables added to the scrubbed environment. */
  env: z.record(EnvName, z.string().max(32_768)).default({}),
  /** Where the command runs: inside one of `allowedRoots` (checked again through realpath at each run). */
  workingDirectory: z.string().min(1).optional(),
  /** Output beyond this many bytes is not forwarded (the process is not stopped). */
  outputLimitBytes: z.number().int().min(1).max(MAX_OUTPUT_LIMIT_BYTES).default(MAX_OUTPUT_LIMIT_BYTES),
  /** Run as this user and group instead of the agent's own; resolved at load, and needs a root agent. */
  runAs: RunAsSchema.optional(),
});

const ActionConfigSchema = ActionDeclaration.extend({ exec: ExecSchema.optional() });
const ServiceConfigSchema = ServiceReport.extend({
  actions: z.array(ActionConfigSchema).max(100).default([]),
});

const ConfigSchema = z.strictObject({
  /** The state file written by `bulwark-agent register`. */
  stateFile: z.string().min(1).default(DEFAULT_STATE_FILE),
  /** TLS pinning for the connection; when absent, the pin recorded at registration applies. */
  tls: z
    .strictObject({ caFile: z.string().min(1).optional(), fingerprint256: Fingerprint256.optional() })
    .optional(),
  /** Directories exec actions may run in (EXEC-2). None by default: then only the default `/`. */
  allowedRoots: z.array(z.string().min(1)).max(64).default([]),
  /** The services this agent looks after, reported after every connect (AGT-5). */
  services: z
    .array(ServiceConfigSchema)
    .max(200)
    .default([])
    .superRefine((services, ctx) => {
      const seen = new Set<string>();
      services.forEach((service, index) => {
        if (seen.has(service.name)) {
          ctx.addIssue({
            code: 'custom',
            path: [index, 'name'],
            message: `duplicate service name "${service.name}"`,
          });
        }
        seen.add(service.name);
        const actions = new Set<string>();
        service.actions.forEach((action, a) => {
          if (actions.has(action.name)) {
            ctx.addIssue({
              code: 'custom',
              path: [index, 'actions', a, 'name'],
              message: `duplicate action name "${action.name}"`,
            });
          }
          actions.add(action.name);
        });
      });
    }),
});

export interface ExecSpec {
  argv: string[];
  env: Record<string, string>;
  /** Absolute; `/` when the action does not say. */
  workingDirectory: string;
  outputLimitBytes: number;
  /** The user and group the command runs as; absent: the agent's own. */
  runAs?: RunAsIdentity;
}

interface RunnableBase {
  service: string;
  declaration: ActionDeclaration;
  /** Ajv 2020 (strict) validator of the params schema. */
  validate: ValidateFunction;
}

/** An action this daemon runs as a process (agent.yaml `exec`). */
export interface ExecAction extends RunnableBase {
  kind: 'exec';
  exec: ExecSpec;
  /** For each placeholder parameter with a `pattern`: the pattern matched against the whole value. */
  wholeMatch: Map<string, RegExp>;
}

/** An action an embedded agent runs in-process (the SDK, sdk.ts): its handler, after a second check. */
export interface HandlerAction extends RunnableBase {
  kind: 'handler';
  /** The SDK's own check of the params (zod), after the JSON Schema: its output reaches the handler. */
  parse(params: Record<string, unknown>): { ok: true; value: unknown } | { ok: false; problems: string[] };
  handler: ActionHandler;
}

/** An action the agent can run: its declaration, how it runs, and its compiled params schema. */
export type RunnableAction = ExecAction | HandlerAction;

/** Actions are looked up by service and action name. */
export type ActionCatalog = Map<string, RunnableAction>;
export const actionKey = (service: string, action: string) => `${service}\u0000${action}`;

export interface AgentConfig {
  /** The config file, absolute. */
  file: string;
  /** The state file, absolute. */
  stateFile: string;
  tls?: TlsPin;
  /** What the report carries: the declarations, without `exec` (it stays on the host). */
  services: ServiceReport[];
  /** The actions with `exec`, which this daemon runs. */
  actions: ActionCatalog;
  /** Absolute, as written (realpath is taken at each run). */
  allowedRoots: string[];
}

/** The default working directory of an exec action: owned by root, holds nothing of the agent's. */
export const DEFAULT_WORKING_DIRECTORY = '/';

const PLACEHOLDER = /^\{\{([A-Za-z_][A-Za-z0-9_]{0,63})\}\}$/;

/** `inside` is `root` or below it (both absolute and normalized). */
export function isInside(root: string, inside: string): boolean {
  const relative = path.relative(root, inside);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

type Problem = { where: (string | number)[]; message: string };

/** EXEC-1: the argv template and the parameters it substitutes; returns the problems found. */
function execProblems(
  action: z.infer<typeof ActionConfigSchema>,
  exec: z.infer<typeof ExecSchema>,
  allowedRoots: string[],
  dir: string,
): { problems: Problem[]; wholeMatch: Map<string, RegExp>; workingDirectory: string } {
  const problems: Problem[] = [];
  const wholeMatch = new Map<string, RegExp>();
  const params = action.params as {
    type?: unknown;
    properties?: Record<string, Record<string, unknown>>;
    required?: unknown;
  };
  const program = exec.argv[0] ?? '';
  if (program === '' || program.includes('{{') || program.includes('}}')) {
    problems.push({ where: ['argv', 0], message: 'the program must be literal text, not a placeholder' });
  } else if (!path.isAbsolute(program) && program.includes('/')) {
    problems.push({
      where: ['argv', 0],
      message: 'the program must be an absolute path or a bare name looked up in PATH, not a relative path',
    });
  }
  exec.argv.forEach((element, index) => {
    if (index === 0 || (!element.includes('{{') && !element.includes('}}'))) return;
    const match = PLACEHOLDER.exec(element);
    if (!match) {
      problems.push({
        where: ['argv', index],
        message:
          `"${element}": a placeholder must be a whole argument, exactly "{{name}}" (no other text, ` +
          'one placeholder per element); write the option and the value as two elements',
      });
      return;
    }
    const name = match[1]!;
    const property = params.properties?.[name];
    const where = ['argv', index];
    if (typeof property !== 'object' || property === null) {
      problems.push({ where, message: `{{${name}}} names no parameter declared in params.properties` });
      return;
    }
    if (property.type !== 'string') {
      problems.push({ where, message: `{{${name}}}: the parameter must be declared type: "string"` });
      return;
    }
    if (!Array.isArray(params.required) || !params.required.includes(name)) {
      problems.push({ where, message: `{{${name}}}: the parameter must be listed in params.required` });
    }
    const hasEnum =
      Array.isArray(property.enum) &&
      property.enum.length > 0 &&
      property.enum.every((v) => typeof v === 'string');
    const hasPattern = typeof property.pattern === 'string';
    const hasMaxLength = typeof property.maxLength === 'number';
    if (!hasEnum && !(hasPattern && hasMaxLength)) {
      problems.push({
        where,
        message: `{{${name}}}: the parameter must be bounded by an enum of strings, or by a pattern and a maxLength`,
      });
    }
    if (hasPattern) {
      try {
        wholeMatch.set(name, new RegExp(`^(?:${property.pattern as string})$`, 'u'));
      } catch {
        problems.push({ where, message: `{{${name}}}: the pattern is not a valid regular expression` });
      }
    }
  });
  let workingDirectory = DEFAULT_WORKING_DIRECTORY;
  if (exec.workingDirectory !== undefined) {
    workingDirectory = path.resolve(dir, exec.workingDirectory);
    if (exec.workingDirectory.split(/[\\/]/).includes('..')) {
      problems.push({ where: ['workingDirectory'], message: 'must not contain ".."' });
    } else if (!allowedRoots.some((root) => isInside(root, workingDirectory))) {
      problems.push({
        where: ['workingDirectory'],
        message:
          allowedRoots.length === 0
            ? 'no allowedRoots are configured: an action may only run in the default working directory /'
            : `${workingDirectory} is not inside any of allowedRoots (${allowedRoots.join(', ')})`,
      });
    }
  }
  return { problems, wholeMatch, workingDirectory };
}

/** Compiles an action's params schema as the server does (Ajv, draft 2020-12, strict). */
export function compileParams(params: Record<string, unknown>): {
  validate?: ValidateFunction;
  problem?: string;
} {
  if (params.type !== 'object') return { problem: 'params must be a JSON Schema of type "object"' };
  // One instance per action: an `$id` in one schema never meets another's.
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  if (!ajv.validateSchema(params)) {
    return { problem: `params is not a valid JSON Schema: ${ajv.errorsText(ajv.errors)}` };
  }
  try {
    return { validate: ajv.compile(params) };
  } catch (error) {
    return { problem: `params cannot be used: ${(error as Error).message}` };
  }
}

const SETTINGS_NOT_ALLOWED: Record<string, string> = {
  server: 'the server comes from the state file, pinned at registration; register again to change it',
  heartbeat: 'the server decides the heartbeat interval',
  heartbeatSeconds: 'the server decides the heartbeat interval',
};

export function loadConfig(file: string): AgentConfig {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `cannot read config ${absolute}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  return parseConfig(text, absolute);
}

/** Parses the text of `file` (absolute; relative paths inside are resolved against its directory). */
export function parseConfig(text: string, file: string): AgentConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(`${file}: invalid YAML: ${doc.errors.map((e) => e.message).join('; ')}`);
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
    for (const key of Object.keys(raw)) {
      const why = SETTINGS_NOT_ALLOWED[key];
      if (why) throw new ConfigError(`${file}: ${key}: not allowed: ${why}`);
    }
  }
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const where = issue.path.map(String).join('.') || '(top level)';
      return `  ${where}: ${issue.message}`;
    });
    throw new ConfigError(`${file} is invalid:\n${problems.join('\n')}`);
  }
  const dir = path.dirname(file);
  const allowedRoots = parsed.data.allowedRoots.map((root) => path.resolve(dir, root));
  const actions: ActionCatalog = new Map();
  const problems: string[] = [];
  parsed.data.services.forEach((service, s) => {
    service.actions.forEach((action, a) => {
      if (!action.exec) return;
      const at = (where: (string | number)[]) => ['services', s, 'actions', a, ...where].join('.');
      const compiled = compileParams(action.params);
      if (compiled.problem) problems.push(`  ${at(['params'])}: ${compiled.problem}`);
      const checked = execProblems(action, action.exec, allowedRoots, dir);
      for (const problem of checked.problems) {
        problems.push(`  ${at(['exec', ...problem.where])}: ${problem.message}`);
      }
      let runAs: RunAsIdentity | undefined;
      if (action.exec.runAs) {
        const resolved = resolveRunAs(action.exec.runAs);
        if (resolved.ok) runAs = resolved.identity;
        else problems.push(`  ${at(['exec', 'runAs', resolved.where])}: ${resolved.message}`);
      }
      if (compiled.validate && checked.problems.length === 0 && (runAs || !action.exec.runAs)) {
        const { exec, ...declaration } = action;
        const { runAs: _declared, ...spec } = exec;
        actions.set(actionKey(service.name, action.name), {
          kind: 'exec',
          service: service.name,
          declaration,
          exec: { ...spec, workingDirectory: checked.workingDirectory, ...(runAs ? { runAs } : {}) },
          validate: compiled.validate,
          wholeMatch: checked.wholeMatch,
        });
      }
    });
  });
  if (problems.length > 0) throw new ConfigError(`${file} is invalid:\n${problems.join('\n')}`);
  const config: AgentConfig = {
    file,
    stateFile: path.resolve(dir, parsed.data.stateFile),
    // `exec` stays on the host: the server has no use for it, and its strict schema refuses it.
    services: parsed.data.services.map((service) => ({
      ...service,
      actions: service.actions.map(({ exec: _exec, ...declaration }) => declaration),
    })),
    actions,
    allowedRoots,
  };
  if (parsed.data.tls) {
    const tls: TlsPin = {};
    if (parsed.data.tls.caFile) tls.caFile = path.resolve(dir, parsed.data.tls.caFile);
    if (parsed.data.tls.fingerprint256) tls.fingerprint256 = parsed.data.tls.fingerprint256;
    config.tls = tls;
  }
  const report = JSON.stringify(
    ReportMessage.parse({ v: AGENT_PROTOCOL_VERSION, type: 'report', services: config.services }),
  );
  // The server closes the connection on a larger message; better to say so now than loop on it.
  if (Buffer.byteLength(report) > MAX_AGENT_MESSAGE_BYTES) {
    throw new ConfigError(`${file}: services: the report would exceed ${MAX_AGENT_MESSAGE_BYTES} bytes`);
  }
  return config;
}

/**
 * Refuses to run a config whose exec actions declare `runAs` when this process cannot switch to
 * another user safely (see run-as.ts): checked when the daemon starts, not when a command arrives,
 * so a misconfigured host fails at once instead of failing every command it is sent.
 */
export function assertRunAsPossible(config: AgentConfig): void {
  const users = [...config.actions.values()].flatMap((action) =>
    action.kind === 'exec' && action.exec.runAs
      ? [`${action.service}/${action.declaration.name} as ${action.exec.runAs.user}`]
      : [],
  );
  if (users.length === 0) return;
  const problem = runAsPrivilegeProblem();
  if (problem) {
    throw new ConfigError(
      `${config.file}: runAs cannot be honoured: ${problem}. Actions that declare it: ${users.join(', ')}. ` +
        'Run the agent as root with CAP_SETUID, CAP_SETGID and CAP_KILL, or remove runAs',
    );
  }
}
