import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  AGENT_PROTOCOL_VERSION,
  MAX_AGENT_MESSAGE_BYTES,
  ReportMessage,
  ServiceReport,
} from '@bulwark/protocol';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { Fingerprint256, type TlsPin } from './net.js';
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
 * ```
 */

export class ConfigError extends Error {}

const ConfigSchema = z.strictObject({
  /** The state file written by `bulwark-agent register`. */
  stateFile: z.string().min(1).default(DEFAULT_STATE_FILE),
  /** TLS pinning for the connection; when absent, the pin recorded at registration applies. */
  tls: z
    .strictObject({ caFile: z.string().min(1).optional(), fingerprint256: Fingerprint256.optional() })
    .optional(),
  /** The services this agent looks after, reported after every connect (AGT-5). */
  services: z
    .array(ServiceReport)
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

export interface AgentConfig {
  /** The config file, absolute. */
  file: string;
  /** The state file, absolute. */
  stateFile: string;
  tls?: TlsPin;
  services: ServiceReport[];
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
  const config: AgentConfig = {
    file,
    stateFile: path.resolve(dir, parsed.data.stateFile),
    services: parsed.data.services,
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
