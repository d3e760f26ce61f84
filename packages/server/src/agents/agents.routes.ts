import {
  AGENT_REGISTER_PATH,
  AgentName,
  HEALTH_STATUSES,
  Labels,
  RegisterRequest,
  RegisterResponse,
  RISKS,
} from '@bulwark/protocol';
import { z } from 'zod';
import type { AccessService } from '../access/access.service.js';
import { isAllowed } from '../access/authorize.js';
import { type Caller, callerOf } from '../access/caller.js';
import { parseSelector, selectorMatches } from '../access/label-selector.js';
import { sortOrderOf, sortValues, visiblePage } from '../db/keyset.js';
import type { AgentStatus } from '../db/schema.js';
import { ValidationError } from '../errors.js';
import { CursorText, cursorFrom, cursorText, SearchText } from '../http/list-query.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { AgentId, Description, iso, OrgSlug, RegistrationTokenId, Timestamp } from '../http/schemas.js';
import { type AgentsService, parseLabels, unavailableReason } from './agents.service.js';
import type { AgentListRow, AgentSortColumn } from './agents.store.js';
import type { AgentGateway } from './gateway.js';
import {
  DEFAULT_TOKEN_MINUTES,
  MAX_TOKEN_MINUTES,
  MAX_TOKEN_USES,
  type RegistrationTokensService,
} from './registration-tokens.service.js';
import type { ServicesService } from './services.service.js';
import type { ServiceListRow, ServiceSortColumn } from './services.store.js';

const RegistrationTokenView = z.object({
  id: z.string(),
  description: z.string(),
  labels: Labels,
  status: z.enum(['active', 'used', 'expired', 'revoked']),
  uses: z.number(),
  usesAllowed: z.number(),
  createdBy: z.string(),
  createdAt: Timestamp,
  expiresAt: Timestamp,
});

const AGENT_STATUSES = ['online', 'offline', 'disabled', 'revoked'] as const;
const AgentView = z.object({
  id: z.string(),
  name: z.string(),
  hostname: z.string(),
  labels: Labels,
  status: z.enum(AGENT_STATUSES),
  /** Why a disabled or revoked agent runs nothing; null while it may. */
  statusReason: z.string().nullable(),
  lastSeenAt: Timestamp.nullable(),
  createdAt: Timestamp,
});

/** One agent's page: what the list shows, and its live connection to this server when it has one. */
const AgentDetailView = AgentView.extend({
  connection: z.object({ connectedAt: Timestamp, address: z.string(), agentVersion: z.string() }).nullable(),
});

/** Sort keys of the agent list and the column each stands for (`created`: ids sort by creation). */
const AGENT_SORTS = { created: 'id', name: 'name', hostname: 'hostname' } as const satisfies Record<
  string,
  AgentSortColumn
>;
const AgentSort = z.enum(sortValues(['created', 'name', 'hostname'] as const));
const SERVICE_SORTS = {
  name: 'services.name',
  agent: 'agents.name',
  health: 'services.health_status',
  updated: 'services.updated_at',
} as const satisfies Record<string, ServiceSortColumn>;
const ServiceSort = z.enum(sortValues(['name', 'agent', 'health', 'updated'] as const));
/** Rows read per query when the caller's scope may hide some of them. */
const SCOPED_BATCH = 500;

const ServiceView = z.object({
  id: z.string(),
  name: z.string(),
  agent: z.object({ id: z.string(), name: z.string(), status: z.enum(AGENT_STATUSES) }),
  /** False when the agent is disabled or revoked: nothing can be run, `unavailableReason` says why. */
  available: z.boolean(),
  unavailableReason: z.string().nullable(),
  kind: z.string(),
  version: z.string(),
  health: z.object({ status: z.enum(HEALTH_STATUSES), message: z.string() }),
  config: z.array(z.object({ key: z.string(), configured: z.boolean(), value: z.string().optional() })),
  actions: z.array(
    z.object({
      name: z.string(),
      description: z.string(),
      params: z.record(z.string(), z.unknown()),
      risk: z.enum(RISKS),
      timeoutSeconds: z.number(),
      secrets: z.array(z.string()),
    }),
  ),
  updatedAt: Timestamp,
});

const PAGE_MAX = 200;

export function agentsRoutes(deps: {
  agents: AgentsService;
  services: ServicesService;
  tokens: RegistrationTokensService;
  access: AccessService;
  gateway: AgentGateway;
  /** What else ends with an agent's revocation (its commands in flight). */
  onRevoked?: (caller: Caller, agentId: string) => Promise<unknown>;
}): RouteDefinition[] {
  const { agents, tokens, services, access, gateway, onRevoked } = deps;
  const OrgAgent = z.strictObject({ org: OrgSlug, agent: AgentId });

  const liveStatus = (status: AgentListRow['status'], heartbeat: number | undefined) =>
    status !== 'active' ? status : heartbeat !== undefined ? ('online' as const) : ('offline' as const);

  const agentView = (row: AgentListRow, heartbeat = gateway.lastHeartbeat(row.id)) => {
    const lastSeen = heartbeat ?? row.last_seen_at;
    return {
      id: row.id,
      name: row.name,
      hostname: row.hostname,
      labels: parseLabels(row.labels),
      status: liveStatus(row.status, heartbeat),
      statusReason: unavailableReason(row.status),
      lastSeenAt: lastSeen === null ? null : iso(lastSeen),
      createdAt: iso(row.created_at),
    };
  };

  const serviceView = (row: ServiceListRow) => ({
    id: row.id,
    name: row.name,
    agent: {
      id: row.agent_id,
      name: row.agent_name,
      status: liveStatus(row.agent_status, gateway.lastHeartbeat(row.agent_id)),
    },
    available: row.agent_status === 'active',
    unavailableReason: unavailableReason(row.agent_status),
    kind: row.kind,
    version: row.version,
    health: { status: row.health_status, message: row.health_message },
    config: JSON.parse(row.config) as unknown[],
    actions: JSON.parse(row.actions) as unknown[],
    updatedAt: iso(row.updated_at),
  });

  const lifecycle = (verb: 'disable' | 'enable' | 'revoke', summary: string) =>
    defineRoute({
      method: 'POST',
      url: `/api/orgs/:org/agents/:agent/${verb}`,
      operationId: `${verb}Agent`,
      summary,
      tags: ['agents'],
      access:
        verb === 'revoke'
          ? { permission: 'agents:manage', privileged: true }
          : { permission: 'agents:manage' },
      rateLimit: 'write',
      params: OrgAgent,
      response: { 200: AgentView },
      handler: async ({ principal, request, params }) => {
        const caller = callerOf(principal, request);
        const row = await agents.get(caller.org.id, params.agent);
        await access.authorize(caller, 'agents:manage', { kind: 'agent', labels: parseLabels(row.labels) });
        const updated = await agents[verb](caller, params.agent);
        if (verb !== 'enable')
          gateway.disconnect(params.agent, verb === 'revoke' ? 'agent_revoked' : 'agent_disabled');
        if (verb === 'revoke') await onRevoked?.(caller, params.agent);
        return agentView(updated);
      },
    });

  return [
    defineRoute({
      method: 'POST',
      url: AGENT_REGISTER_PATH,
      operationId: 'registerAgent',
      summary:
        'An agent registers with a registration token and its public keys; answers its id and the server key to pin',
      tags: ['agents'],
      access: {
        public: 'the registration token in the body is the credential; refusals are uniform and audited',
      },
      rateLimit: 'auth',
      body: RegisterRequest,
      response: { 201: RegisterResponse },
      handler: ({ body, request }) => agents.register(body, auditContextOf(request)),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/agent-registration-tokens',
      operationId: 'listRegistrationTokens',
      summary: 'Registration tokens of the organization (never the tokens themselves)',
      tags: ['agents'],
      access: { permission: 'agents:register' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ tokens: z.array(RegistrationTokenView) }) },
      handler: async ({ principal }) => ({
        tokens: (await tokens.list(principal!.org!.id)).map((row) => ({
          id: row.id,
          description: row.description,
          labels: parseLabels(row.labels),
          status: row.status,
          uses: row.uses,
          usesAllowed: row.uses_allowed,
          createdBy: row.created_by,
          createdAt: iso(row.created_at),
          expiresAt: iso(row.expires_at),
        })),
      }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/agent-registration-tokens',
      operationId: 'createRegistrationToken',
      summary: `Create a registration token, shown once; ${DEFAULT_TOKEN_MINUTES} minutes and one use unless asked otherwise`,
      tags: ['agents'],
      access: { permission: 'agents:register' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({
        description: Description.default(''),
        labels: Labels.default({}),
        expiresInMinutes: z.number().int().min(1).max(MAX_TOKEN_MINUTES).default(DEFAULT_TOKEN_MINUTES),
        uses: z.number().int().min(1).max(MAX_TOKEN_USES).default(1),
      }),
      response: {
        201: z.object({ id: z.string(), token: z.string(), expiresAt: Timestamp, labels: Labels }),
      },
      handler: async ({ principal, request, body }) => {
        const caller = callerOf(principal, request);
        // Preset labels place every agent registered with the token in a scope: only someone who
        // manages agents with those labels may choose them (agents:register alone does not).
        if (Object.keys(body.labels).length > 0)
          await access.authorize(caller, 'agents:manage', { kind: 'agent', labels: body.labels });
        const { row, token } = await tokens.create(caller, body);
        return { id: row.id, token, expiresAt: iso(row.expires_at), labels: parseLabels(row.labels) };
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/agent-registration-tokens/:token',
      operationId: 'revokeRegistrationToken',
      summary: 'Revoke a registration token: no further registrations; agents already registered stay',
      tags: ['agents'],
      access: { permission: 'agents:register' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, token: RegistrationTokenId }),
      response: { 200: z.object({ status: z.literal('done') }) },
      handler: async ({ principal, request, params }) => {
        await tokens.revoke(callerOf(principal, request), params.token);
        return { status: 'done' as const };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/agents',
      operationId: 'listAgents',
      summary:
        'Agents you may see, with status and last seen; searched, filtered by status or label selector, sorted, paged with a cursor',
      tags: ['agents'],
      access: { permission: 'agents:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({
        q: SearchText.optional().describe('Found in the name, hostname or id'),
        status: z.enum(AGENT_STATUSES).optional(),
        selector: z.string().max(1000).optional(),
        sort: AgentSort.default('created'),
        after: CursorText.optional(),
        limit: z.coerce.number().int().min(1).max(PAGE_MAX).default(50),
      }),
      response: { 200: z.object({ agents: z.array(AgentView), next: z.string().nullable() }) },
      reuseAnswers: true,
      handler: async ({ principal, query, reusableWhile }) => {
        const org = principal!.org!;
        const selector = query.selector === undefined ? undefined : parseSelector(query.selector);
        if (selector && 'problem' in selector)
          throw new ValidationError([{ path: 'query.selector', message: selector.problem }]);
        const sortKey = query.sort.replace(/^-/, '') as keyof typeof AGENT_SORTS;
        const order = { column: AGENT_SORTS[sortKey], direction: sortOrderOf(query.sort).direction };
        // Granted on the whole organization, agents:read covers every agent: no decision per row.
        const everyAgent = isAllowed(org.access, 'agents:read', { kind: 'org' });
        // Online and offline are both `active` in the database; which one is known to the gateway.
        const live = query.status === 'online' || query.status === 'offline' ? query.status : undefined;
        const statuses: AgentStatus[] | undefined =
          query.status === undefined
            ? undefined
            : live || query.status === 'online' || query.status === 'offline'
              ? ['active']
              : [query.status];
        const keep = (row: AgentListRow) => {
          const labels = parseLabels(row.labels);
          if (selector && !selectorMatches(selector, labels)) return false;
          if (!everyAgent && !isAllowed(org.access, 'agents:read', { kind: 'agent', labels })) return false;
          return !live || liveStatus(row.status, gateway.lastHeartbeat(row.id)) === live;
        };
        const { rows: visible, next } = await visiblePage({
          read: (from, batch) =>
            agents.list(org.id, {
              ...(query.q ? { text: query.q } : {}),
              ...(statuses ? { statuses } : {}),
              order,
              ...(from ? { from } : {}),
              limit: batch,
            }),
          cursorOf: (row) => ({ value: row[order.column], id: row.id }),
          keep,
          limit: query.limit,
          from: cursorFrom(query.sort, query.after, 'agt'),
          batch: everyAgent && !selector && !live ? query.limit + 1 : Math.max(query.limit + 1, SCOPED_BATCH),
        });
        // Status and last seen come from the agents' live connections, not only from the database.
        const heartbeats = visible.map((row) => gateway.lastHeartbeat(row.id));
        // Filtered on being online, the answer also hangs on agents it left out: never given again.
        reusableWhile(
          () => !live && visible.every((row, i) => gateway.lastHeartbeat(row.id) === heartbeats[i]),
        );
        return {
          agents: visible.map((row, i) => agentView(row, heartbeats[i])),
          next: next ? cursorText(query.sort, next) : null,
        };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/agents/:agent',
      operationId: 'getAgent',
      summary:
        'One agent with status, last seen, and its live connection (since when, from where, agent version)',
      tags: ['agents'],
      access: { permission: 'agents:read' },
      rateLimit: 'read',
      params: OrgAgent,
      response: { 200: AgentDetailView },
      handler: async ({ principal, request, params }) => {
        const caller = callerOf(principal, request);
        const row = await agents.get(caller.org.id, params.agent);
        await access.authorize(caller, 'agents:read', { kind: 'agent', labels: parseLabels(row.labels) });
        const connection = gateway.connectionAnywhere(row.id);
        return {
          ...agentView(row),
          connection: connection
            ? {
                connectedAt: iso(connection.connectedAt),
                address: connection.address,
                agentVersion: connection.agentVersion,
              }
            : null,
        };
      },
    }),

    defineRoute({
      method: 'PATCH',
      url: '/api/orgs/:org/agents/:agent',
      operationId: 'updateAgent',
      summary: 'Rename an agent or replace its labels (within your own label scope, before and after)',
      tags: ['agents'],
      access: { permission: 'agents:manage' },
      rateLimit: 'write',
      params: OrgAgent,
      body: z.strictObject({ name: AgentName.optional(), labels: Labels.optional() }),
      response: { 200: AgentView },
      handler: async ({ principal, request, params, body }) => {
        const caller = callerOf(principal, request);
        const row = await agents.get(caller.org.id, params.agent);
        await access.authorize(caller, 'agents:manage', { kind: 'agent', labels: parseLabels(row.labels) });
        // Relabelling must not move an agent out of, or into, a scope the caller does not manage.
        if (body.labels)
          await access.authorize(caller, 'agents:manage', { kind: 'agent', labels: body.labels });
        return agentView(await agents.update(caller, params.agent, body));
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/services',
      operationId: 'listServices',
      summary:
        'Services reported by the agents you may see, with health, configuration (never secret values), actions and whether their agent can run them; searched, filtered, sorted, paged with a cursor',
      tags: ['agents'],
      access: { permission: 'services:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      query: z.strictObject({
        agent: AgentId.optional(),
        q: SearchText.optional().describe("Found in the service's name or kind, or its agent's name"),
        health: z.enum(HEALTH_STATUSES).optional(),
        sort: ServiceSort.default('name'),
        after: CursorText.optional(),
        limit: z.coerce.number().int().min(1).max(PAGE_MAX).default(100),
      }),
      response: { 200: z.object({ services: z.array(ServiceView), next: z.string().nullable() }) },
      handler: async ({ principal, query }) => {
        const org = principal!.org!;
        const everyAgent = isAllowed(org.access, 'services:read', { kind: 'org' });
        const sortKey = query.sort.replace(/^-/, '') as keyof typeof SERVICE_SORTS;
        const order = { column: SERVICE_SORTS[sortKey], direction: sortOrderOf(query.sort).direction };
        const sortValueOf: Record<ServiceSortColumn, (row: ServiceListRow) => string | number> = {
          'services.name': (row) => row.name,
          'agents.name': (row) => row.agent_name,
          'services.health_status': (row) => row.health_status,
          'services.updated_at': (row) => row.updated_at,
        };
        const { rows, next } = await visiblePage({
          read: (from, batch) =>
            services.list(org.id, {
              ...(query.agent ? { agentId: query.agent } : {}),
              ...(query.q ? { text: query.q } : {}),
              ...(query.health ? { health: query.health } : {}),
              order,
              ...(from ? { from } : {}),
              limit: batch,
            }),
          cursorOf: (row) => ({ value: sortValueOf[order.column](row), id: row.id }),
          keep: (row) =>
            everyAgent ||
            isAllowed(org.access, 'services:read', { kind: 'agent', labels: parseLabels(row.agent_labels) }),
          limit: query.limit,
          from: cursorFrom(query.sort, query.after, 'svc'),
          batch: everyAgent ? query.limit + 1 : Math.max(query.limit + 1, SCOPED_BATCH),
        });
        return {
          services: rows.map(serviceView),
          next: next ? cursorText(query.sort, next) : null,
        };
      },
    }),

    lifecycle(
      'disable',
      'Disable an agent: its connection ends and new ones are refused until it is enabled',
    ),
    lifecycle('enable', 'Enable a disabled agent'),
    lifecycle('revoke', 'Revoke an agent for good: its connection ends and it can never connect again'),
  ];
}
