import { type ActionDeclaration, newId, type ServiceReport } from '@bulwark/protocol';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { Kysely } from 'kysely';
import { type AgentPrincipal, decide } from '../access/authorize.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import type { DB } from '../db/schema.js';
import { keyNamesASecret, valueLooksSecret } from '../secrets/secret-detection.js';
import type { AgentRow } from './agents.store.js';
import type { ServiceListQuery, ServiceRow, ServicesStore } from './services.store.js';

/**
 * Service reports (AGT-5). A report is what an agent says about the services beside it: kind,
 * version, health, configuration and the actions they offer. What is stored:
 * - configuration without secrets: an item marked secret, or whose key or value looks like one, is
 *   kept only as configured / not configured;
 * - actions whose parameters are a valid JSON Schema (draft 2020-12) of an object, with no remote
 *   references; a service with an invalid action is refused whole and the agent is told why;
 * - a service belongs to the agent that reported it: the same name from another agent is another
 *   service, never a takeover. Before a stored service changes, `decide` confirms it is the reporting
 *   agent's own; one that is not is refused as though it did not exist, and named to the caller
 *   (`foreign`) so the gateway records the misbehaviour.
 * Changes are audited; a report that changes nothing writes nothing.
 */

export interface StoredConfigItem {
  key: string;
  configured: boolean;
  /** Present only when the value is not, and does not look like, a secret. */
  value?: string;
}

export function sanitizeConfig(items: ServiceReport['config']): StoredConfigItem[] {
  return items.map((item) => {
    const configured = item.value !== undefined && item.value !== '';
    const secret =
      item.secret === true ||
      keyNamesASecret(item.key) ||
      (item.value !== undefined && valueLooksSecret(item.value));
    return secret || !configured
      ? { key: item.key, configured }
      : { key: item.key, configured, value: item.value };
  });
}

// Compiling a schema is how its validity is known (unresolvable or remote references, unknown
// keywords in strict mode). One instance, each schema removed again right after: one report's `$id`s
// never meet another's.
const ajv = new Ajv2020({ strict: true, allErrors: true });
// A fleet reports the same catalogues over and over: each distinct schema is judged once.
const verdicts = new Map<string, string | null>();
const VERDICTS_KEPT = 1000;

function schemaProblem(params: Record<string, unknown>): string | null {
  const key = JSON.stringify(params);
  const known = verdicts.get(key);
  if (known !== undefined) return known;
  let problem: string | null = null;
  if (params.type !== 'object') problem = 'params must be a JSON Schema of type "object"';
  else if (!ajv.validateSchema(params))
    problem = `params is not a valid JSON Schema: ${ajv.errorsText(ajv.errors)}`;
  else {
    try {
      ajv.compile(params);
    } catch (error) {
      problem = `params cannot be used: ${(error as Error).message}`;
    } finally {
      ajv.removeSchema(params);
      if (typeof params.$id === 'string') ajv.removeSchema(params.$id);
    }
  }
  if (verdicts.size >= VERDICTS_KEPT) verdicts.delete(verdicts.keys().next().value!);
  verdicts.set(key, problem);
  return problem;
}

export function actionProblems(actions: ActionDeclaration[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const action of actions) {
    if (seen.has(action.name)) problems.push(`action ${action.name} is declared twice`);
    seen.add(action.name);
    const problem = schemaProblem(action.params);
    if (problem) problems.push(`action ${action.name}: ${problem}`);
  }
  return problems;
}

type Stored = Pick<
  ServiceRow,
  'kind' | 'version' | 'health_status' | 'health_message' | 'config' | 'actions'
>;

function storedForm(report: ServiceReport): Stored {
  return {
    kind: report.kind,
    version: report.version,
    health_status: report.health.status,
    health_message: report.health.message,
    config: JSON.stringify(sanitizeConfig(report.config)),
    actions: JSON.stringify(report.actions),
  };
}

const FIELDS: Array<[keyof Stored, string]> = [
  ['kind', 'kind'],
  ['version', 'version'],
  ['health_status', 'health'],
  ['health_message', 'health'],
  ['config', 'config'],
  ['actions', 'actions'],
];

export function createServicesService(deps: {
  services: ServicesStore;
  audit: AuditService;
  clock: () => number;
}) {
  const { services, audit, clock } = deps;

  return {
    /**
     * Stores an agent's report; answers which services were accepted and why others were refused,
     * and which reported names were found to be another agent's (`foreign`, not for the agent's ears).
     */
    async applyReport(
      agent: Pick<AgentRow, 'id' | 'org_id' | 'name'>,
      reports: ServiceReport[],
      context: AuditRequestContext,
    ) {
      const existing = new Map((await services.ofAgent(agent.id)).map((row) => [row.name, row]));
      const self: AgentPrincipal = { kind: 'agent', orgId: agent.org_id, agentId: agent.id };
      const accepted: string[] = [];
      const refused: Array<{ service: string; problems: string[] }> = [];
      const foreign: string[] = [];
      const events: AuditInput[] = [];
      const writes: Array<(tx: Kysely<DB>) => Promise<void>> = [];
      const actor = { type: 'agent' as const, id: agent.id, display: agent.name };
      const names = new Set<string>();
      for (const report of reports) {
        if (names.has(report.name)) {
          refused.push({ service: report.name, problems: ['the service is reported twice'] });
          continue;
        }
        names.add(report.name);
        const stored = storedForm(report);
        const previous = existing.get(report.name);
        if (
          previous &&
          !decide(self, 'services:report', {
            kind: 'service',
            orgId: previous.org_id,
            agentId: previous.agent_id,
          }).allowed
        ) {
          // Told nothing about whose it is: the same answer as a report the agent may not make.
          refused.push({ service: report.name, problems: ['this service cannot be reported'] });
          foreign.push(report.name);
          continue;
        }
        const changed = previous
          ? [...new Set(FIELDS.filter(([f]) => previous[f] !== stored[f]).map(([, n]) => n))]
          : [];
        if (previous && changed.length === 0) {
          accepted.push(report.name);
          continue;
        }
        // Only a new or changed action catalogue is compiled: a fleet reconnecting with the same reports costs no compilation.
        const problems = previous?.actions === stored.actions ? [] : actionProblems(report.actions);
        if (problems.length > 0) {
          refused.push({ service: report.name, problems });
          events.push({
            orgId: agent.org_id,
            actor,
            action: 'service.report_refused',
            target: { type: 'service', id: previous?.id ?? report.name, display: report.name },
            outcome: 'failure',
            context,
            details: { problems },
          });
          continue;
        }
        const now = clock();
        const id = previous?.id ?? newId('svc', now);
        writes.push(
          previous
            ? (tx) => services.replace({ ...previous, ...stored, updated_at: now }, tx)
            : (tx) =>
                services.insert(
                  {
                    id,
                    org_id: agent.org_id,
                    agent_id: agent.id,
                    name: report.name,
                    ...stored,
                    created_at: now,
                    updated_at: now,
                  },
                  tx,
                ),
        );
        accepted.push(report.name);
        events.push({
          orgId: agent.org_id,
          actor,
          action: 'service.reported',
          target: { type: 'service', id, display: report.name },
          outcome: 'success',
          context,
          details: previous
            ? { changed, health: stored.health_status, version: stored.version }
            : { created: true, kind: stored.kind, health: stored.health_status, version: stored.version },
        });
      }
      // The services and the record of them commit together (AUD-7); an unchanged report writes nothing.
      if (writes.length > 0 || events.length > 0)
        await audit.withEvents(async (tx, recorded) => {
          for (const write of writes) await write(tx);
          recorded.push(...events);
        });
      return { accepted, refused, foreign };
    },

    list: (orgId: string, query: ServiceListQuery) => services.list(orgId, query),
  };
}

export type ServicesService = ReturnType<typeof createServicesService>;
