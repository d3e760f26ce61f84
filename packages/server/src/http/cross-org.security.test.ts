import { type IdPrefix, newId } from '@bulwark/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { PERMISSION_NAMES } from '../access/permissions.js';
import { SCIM_PERMISSION } from '../identity/session-guard.js';
import { SCIM } from '../scim/scim-resources.js';
import { handshake, registerAgent, reportApp } from '../test-support/agents.js';
import { BACKENDS, MEMBER_PASSWORD, type OrgWorld, startOrgWorld } from '../test-support/org-world.js';
import { SessionClient } from '../test-support/session-client.js';
import { type RegisteredRoute, registeredRoutesOf } from './app.js';

/**
 * Cross-organization isolation over ids (ACC-1, QA-3), on SQLite and on PostgreSQL.
 *
 * Attack: the owner of one organization (acme), signed in or holding one of its API keys with every
 * permission, knows ids from another organization (beta) — from a shared screenshot, a log, a support
 * ticket, or because ids are sortable and guessable in time. They put those ids wherever a request
 * takes one, under their own organization where they hold every permission: in the path
 * (`/api/orgs/acme/teams/<beta's team>`), in the query (`?agent=`, `?actor=`, `?user=`) and in the
 * body (a command for beta's agent, a binding of beta's role or to beta's team, beta's member added
 * to an acme team, an action that asks for beta's secret). Each must be refused exactly as an id
 * that exists nowhere is refused — 404, or 422 where a body field is validated — never 403 (which
 * would confirm the id exists elsewhere) and never 2xx; a filter must find nothing; and beta must be
 * left exactly as it was.
 *
 * The routes come from the server's registered route list: a route added later that takes an id is
 * attacked here automatically, or makes this test fail until it says how to call it.
 */

type Ids = Partial<Record<IdPrefix, string>>;
type Use = 'lookup' | 'filter' | 'cursor';

/** Where an id goes in a request: a path parameter, a query parameter, or a field of the body. */
interface Slot {
  at: 'path' | 'query' | 'body';
  /** The parameter, or the field's path in the body (`subject.id`, `includes[]`). */
  field: string;
  /** The id kinds the slot takes; `any` for free-form id filters (every kind is tried). */
  prefixes: IdPrefix[] | 'any';
}

/** Every kind of id an organization's people and things have; a free-form id filter is tried with each. */
const ALL_PREFIXES: IdPrefix[] = [
  'sso',
  'usr',
  'tea',
  'rol',
  'rbd',
  'inv',
  'ses',
  'mfa',
  'agt',
  'rgt',
  'apk',
  'sec',
  'cmd',
  'blk',
  'ntf',
  'snk',
];

/**
 * A valid body for every route that takes one and an id anywhere: `$xyz` marks where an id of kind
 * `xyz` goes (the attacker's own by default; the other organization's in the attempt on that slot).
 * A route that takes an id and a body, with no entry here, fails the test: add one.
 */
/**
 * Path parameters that are names an organization chose (an email domain), not ids: another
 * organization's name under one's own slug is walked in route-walks.security.test.ts (404).
 */
const NAME_PARAMS = new Set(['domain']);

/** SCIM routes answer the organization's SCIM token only: it is their attacker's credential. */
const isScim = (route: RegisteredRoute) =>
  'permission' in route.declaration.access && route.declaration.access.permission === SCIM_PERMISSION;

const BODIES: Record<string, unknown[]> = {
  createRole: [{ name: 'cross-role', permissions: [], includes: ['$rol'] }],
  updateRole: [{ includes: ['$rol'] }],
  createRoleBinding: [
    { role: '$rol', subject: { type: 'user', id: '$usr' } },
    { role: 'viewer', subject: { type: 'team', id: '$tea' } },
  ],
  changeMemberRole: [{ role: '$rol' }],
  updateTeam: [{ description: 'changed across organizations' }],
  configureScim: [{ defaultRole: '$rol', groupRoles: [{ group: 'cross', role: '$rol' }] }],
  replaceScimUser: [{ userName: 'cross@example.test' }],
  patchScimUser: [
    { schemas: [SCIM.patch], Operations: [{ op: 'replace', path: 'displayName', value: 'x' }] },
  ],
  replaceScimGroup: [{ displayName: 'cross' }],
  patchScimGroup: [
    { schemas: [SCIM.patch], Operations: [{ op: 'replace', path: 'displayName', value: 'x' }] },
  ],
  createInvitation: [{ email: 'cross@example.test', role: '$rol' }],
  setSsoEnforcement: [{ ssoRequired: true, breakGlassUserId: '$usr' }],
  createSsoConnection: [
    {
      name: 'cross IdP',
      kind: 'oidc',
      config: {
        issuer: 'http://127.0.0.1:9',
        clientId: 'cross',
        clientSecret: 'cross-secret',
        defaultRole: '$rol',
        groupRoles: [{ group: 'cross', role: '$rol' }],
      },
    },
  ],
  updateAgent: [{ name: 'renamed-across' }],
  updateAuditSink: [{ name: 'renamed across organizations' }],
  createCommand: [{ agent: '$agt', service: 'app', action: 'ping' }],
  approveCommand: [{}],
  rejectCommand: [{ comment: 'rejected across organizations' }],
  approveBulkRun: [{}],
  rejectBulkRun: [{ comment: 'rejected across organizations' }],
  updateSecretValue: [{ value: 'overwritten-across-organizations' }],
  confirmTotpEnrolment: [{ code: '000000' }],
};

/** Query parameters for routes whose query takes an id; required non-id parameters included. */
const QUERIES: Record<string, Record<string, string>> = {
  explainAccess: { permission: 'audit:read', user: '$usr' },
  listServices: { agent: '$agt' },
  listCommands: { agent: '$agt', before: '$cmd', after: '$cmd', requester: '$usr' },
  listMembers: { role: '$rol' },
  listAgents: { after: '$agt' },
  listBulkRuns: { before: '$blk' },
  listAuditEvents: { actor: '$any', target: '$any' },
  exportAuditEvents: { actor: '$any', target: '$any' },
  createOrgStreamTicket: { command: '$cmd' },
  streamOrgEvents: { command: '$cmd' },
};

/**
 * What each non-path slot is, and the answer an id of the other organization must get. A path id is
 * always a lookup answered 404. A lookup in a body is 404 where the id names the thing acted on, 422
 * where it is a field validated against the organization's own (a role to grant). A filter answers
 * as for an id that exists nowhere: nothing found. A cursor is a position in the organization's own
 * list: the answer holds nothing of the other organization.
 */
const SLOT_RULES: Record<string, { use: Use; status: number }> = {
  'explainAccess query:user': { use: 'lookup', status: 404 },
  // The command a live stream focuses on: the command's own read check, 404 outside the organization.
  'createOrgStreamTicket query:command': { use: 'lookup', status: 404 },
  'streamOrgEvents query:command': { use: 'lookup', status: 404 },
  'configureScim body:defaultRole': { use: 'lookup', status: 422 },
  'configureScim body:groupRoles[].role': { use: 'lookup', status: 422 },
  'listServices query:agent': { use: 'filter', status: 200 },
  'listCommands query:agent': { use: 'filter', status: 200 },
  'listCommands query:before': { use: 'cursor', status: 200 },
  'listCommands query:after': { use: 'cursor', status: 200 },
  'listCommands query:requester': { use: 'filter', status: 200 },
  'listMembers query:role': { use: 'filter', status: 200 },
  'listAgents query:after': { use: 'cursor', status: 200 },
  'listBulkRuns query:before': { use: 'cursor', status: 200 },
  'listAuditEvents query:actor': { use: 'filter', status: 200 },
  'listAuditEvents query:target': { use: 'filter', status: 200 },
  'exportAuditEvents query:actor': { use: 'filter', status: 200 },
  'exportAuditEvents query:target': { use: 'filter', status: 200 },
  'createRole body:includes[]': { use: 'lookup', status: 422 },
  'updateRole body:includes[]': { use: 'lookup', status: 422 },
  'createRoleBinding body:role': { use: 'lookup', status: 422 },
  'createRoleBinding body:subject.id': { use: 'lookup', status: 404 },
  'changeMemberRole body:role': { use: 'lookup', status: 422 },
  'createInvitation body:role': { use: 'lookup', status: 422 },
  'createSsoConnection body:config.defaultRole': { use: 'lookup', status: 422 },
  'setSsoEnforcement body:breakGlassUserId': { use: 'lookup', status: 409 },
  'createSsoConnection body:config.groupRoles[].role': { use: 'lookup', status: 422 },
  'createCommand body:agent': { use: 'lookup', status: 404 },
};

const PASSKEY_CREDENTIAL =
  "a WebAuthn credential id chosen by the authenticator: looked up among the signed-in user's own passkeys, and proved by the signature";
/**
 * Fields whose name looks like an id's but which hold none of ours, each with why it cannot reach
 * into another organization.
 */
const NOT_IDS: Record<string, string> = {
  // These lists have no creation order: their cursor is always an encoded (sort value, id) pair.
  'listServices query:after': 'an encoded cursor of the sorted list, never an id',
  'listMembers query:after': 'an encoded cursor of the sorted list, never an id',
  'reauthenticate body:passkey.id': PASSKEY_CREDENTIAL,
  'reauthenticate body:passkey.rawId': PASSKEY_CREDENTIAL,
  'verifySecondFactor body:passkey.id': PASSKEY_CREDENTIAL,
  'verifySecondFactor body:passkey.rawId': PASSKEY_CREDENTIAL,
  'addPasskey body:response.id': "a new passkey's credential id, from the authenticator's attestation",
  'addPasskey body:response.rawId': "a new passkey's credential id, from the authenticator's attestation",
  'createSsoConnection body:config.clientId':
    'the client id the identity provider issued to Bulwark: a name at the provider',
};

// --- Reading the route declarations ------------------------------------------------------------

type Def = { type: string; [key: string]: unknown };
const defOf = (schema: unknown) => (schema as { _zod: { def: Def } })._zod.def;

/** Field names that, whatever their schema says, carry an id: such a field must be given a slot. */
const ID_NAME =
  /^(id|\w+Id|agent|team|user|member|role|roles|includes|secret|secrets|command|binding|invitation|session|factor|actor|target|subject|before|after)$/;

/** Whether a field is text (its wrappers and pipes aside): only text carries our ids. */
function isText(schema: z.ZodType): boolean {
  const def = defOf(schema);
  if (def.type === 'string') return true;
  const inner = (def.innerType ?? def.in ?? def.element) as z.ZodType | undefined;
  return def.type !== 'object' && inner !== undefined && isText(inner);
}

/**
 * The id-carrying fields of a schema: strings described as an identifier (`idOf`), a role reference,
 * or an `… id` filter, and any field whose name says it holds an id.
 */
function idFields(
  schema: z.ZodType | undefined,
  path = '',
): Array<{ field: string; prefix: IdPrefix | 'any' | null }> {
  if (!schema) return [];
  const def = defOf(schema);
  switch (def.type) {
    case 'object':
      return Object.entries(def.shape as Record<string, z.ZodType>).flatMap(([key, child]) => {
        const field = path ? `${path}.${key}` : key;
        const found = idFields(child, field);
        if (found.length === 0 && ID_NAME.test(key) && isText(child)) return [{ field, prefix: null }];
        return found;
      });
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return idFields(def.innerType as z.ZodType, path);
    case 'pipe':
      return idFields(def.in as z.ZodType, path);
    case 'array':
      return idFields(def.element as z.ZodType, `${path}[]`);
    case 'string': {
      const description = (schema as { description?: string }).description ?? '';
      const prefix = /^([a-z]{3})_ identifier$/.exec(description)?.[1];
      if (prefix) return [{ field: path, prefix: prefix as IdPrefix }];
      if (/custom role id/.test(description)) return [{ field: path, prefix: 'rol' }];
      if (/ id$/i.test(description)) return [{ field: path, prefix: 'any' }];
      return [];
    }
    default:
      return [];
  }
}

/** Every `$xyz` placeholder of a body or query template, with its path. */
function placeholders(value: unknown, path = ''): Array<{ field: string; prefix: IdPrefix | 'any' }> {
  if (typeof value === 'string' && value.startsWith('$'))
    return [{ field: path, prefix: value.slice(1) as IdPrefix | 'any' }];
  if (Array.isArray(value)) return value.flatMap((item) => placeholders(item, `${path}[]`));
  if (value && typeof value === 'object')
    return Object.entries(value).flatMap(([key, child]) =>
      placeholders(child, path ? `${path}.${key}` : key),
    );
  return [];
}

/** The template with every placeholder filled: the attacked one with its id, the rest with the attacker's own. */
function fill(value: unknown, own: Ids, attacked?: { field: string; value: string }, path = ''): unknown {
  if (typeof value === 'string' && value.startsWith('$')) {
    if (attacked && attacked.field === path) return attacked.value;
    const id = own[value.slice(1) as IdPrefix];
    if (!id) throw new Error(`no id of kind ${value} of the attacker's own for ${path}`);
    return id;
  }
  if (Array.isArray(value)) return value.map((item) => fill(item, own, attacked, `${path}[]`));
  if (value && typeof value === 'object')
    return Object.fromEntries(
      Object.entries(value).map(([key, child]) => [
        key,
        fill(child, own, attacked, path ? `${path}.${key}` : key),
      ]),
    );
  return value;
}

interface Attempt {
  label: string;
  route: RegisteredRoute;
  slot: Slot;
  rule: { use: Use; status: number };
  /** The request, with `id` where the attacked slot is. */
  request(id: string, slug?: string): { method: string; url: string; body: unknown };
}

/** Every attempt the route list calls for, or the list of what the test does not know how to call. */
function attemptsFor(routes: RegisteredRoute[], own: Ids): { attempts: Attempt[]; unknown: string[] } {
  const attempts: Attempt[] = [];
  const unknown: string[] = [];
  for (const route of routes) {
    const { declaration } = route;
    // A public route acts for no organization (an SSO sign-in starts from a connection id anyone
    // may be shown): there is no other organization's data for it to reach.
    if ('public' in declaration.access) continue;
    const op = declaration.operationId;
    const pathParams = (route.url.match(/:([A-Za-z]+)/g) ?? [])
      .map((p) => p.slice(1))
      .filter((p) => p !== 'org' && !NAME_PARAMS.has(p));
    const paramPrefixes = new Map(idFields(declaration.params).map((f) => [f.field, f.prefix]));
    const query = QUERIES[op] ?? {};
    const bodyIds = idFields(declaration.body).filter(({ field }) => !NOT_IDS[`${op} body:${field}`]);
    const queryIds = idFields(declaration.query).filter(({ field }) => !NOT_IDS[`${op} query:${field}`]);
    const takesIds = pathParams.length > 0 || op in QUERIES || bodyIds.length > 0 || queryIds.length > 0;
    if (!takesIds) continue;
    const bodies = declaration.body ? BODIES[op] : [undefined];
    if (!bodies) {
      unknown.push(`${op}: a body template in BODIES (it takes ${bodyIds.map((f) => f.field).join(', ')})`);
      continue;
    }
    // Each id field the schemas declare must have a placeholder to attack.
    const bodySlots = new Set(bodies.flatMap((body) => placeholders(body).map((p) => p.field)));
    for (const { field } of bodyIds)
      if (!bodySlots.has(field))
        unknown.push(`${op}: body field ${field} takes an id; give it a $ slot in BODIES`);
    for (const { field } of queryIds)
      if (!(field in query)) unknown.push(`${op}: query parameter ${field} takes an id; add it to QUERIES`);
    for (const param of pathParams)
      if (!paramPrefixes.get(param) || paramPrefixes.get(param) === 'any')
        unknown.push(`${op}: path parameter :${param} has no id kind in its schema`);

    const build =
      (body: unknown, attacked?: Slot) =>
      (id: string, slug = 'acme') => {
        let url = route.url.replace(':org', slug);
        for (const param of pathParams) {
          const prefix = paramPrefixes.get(param) as IdPrefix;
          const value = attacked?.at === 'path' && attacked.field === param ? id : own[prefix];
          if (!value) throw new Error(`no id of kind ${prefix} of the attacker's own for :${param}`);
          url = url.replace(`:${param}`, value);
        }
        const search = new URLSearchParams();
        for (const [name, template] of Object.entries(query)) {
          if (template.startsWith('$') && !(attacked?.at === 'query' && attacked.field === name)) continue;
          search.set(name, template.startsWith('$') ? id : template);
        }
        const text = search.toString();
        return {
          method: route.method,
          url: text ? `${url}?${text}` : url,
          body:
            body === undefined
              ? undefined
              : fill(body, own, attacked?.at === 'body' ? { field: attacked.field, value: id } : undefined),
        };
      };

    const add = (slot: Slot, body: unknown) => {
      const key = `${op} ${slot.at}:${slot.field}`;
      const rule = slot.at === 'path' ? { use: 'lookup' as const, status: 404 } : SLOT_RULES[key];
      if (!rule) {
        unknown.push(`${key}: say in SLOT_RULES what it is and what it must answer`);
        return;
      }
      attempts.push({
        label: `${route.method} ${route.url} ${slot.at}:${slot.field}`,
        route,
        slot,
        rule,
        request: build(body, slot),
      });
    };
    for (const param of pathParams) {
      const prefix = paramPrefixes.get(param);
      if (prefix && prefix !== 'any') add({ at: 'path', field: param, prefixes: [prefix] }, bodies[0]);
    }
    for (const [name, template] of Object.entries(query))
      if (template.startsWith('$'))
        add(
          {
            at: 'query',
            field: name,
            prefixes: template === '$any' ? 'any' : [template.slice(1) as IdPrefix],
          },
          bodies[0],
        );
    for (const body of bodies)
      for (const { field, prefix } of placeholders(body))
        add({ at: 'body', field, prefixes: prefix === 'any' ? 'any' : [prefix] }, body);
  }
  for (const op of [...Object.keys(BODIES), ...Object.keys(QUERIES)])
    if (!routes.some((route) => route.declaration.operationId === op))
      unknown.push(`${op}: no such route any more`);
  return { attempts, unknown };
}

// --- The two organizations ---------------------------------------------------------------------

const ping = {
  name: 'ping',
  description: 'ping',
  params: { type: 'object', additionalProperties: false },
  risk: 'low',
  timeoutSeconds: 10,
  secrets: [],
};
const deploy = { ...ping, name: 'deploy', description: 'deploy', risk: 'high' };
const needs = (name: string, secret: string) => ({ ...ping, name, description: name, secrets: [secret] });

async function connectAndReport(base: string, token: string, name: string, actions: unknown[]) {
  const agent = await registerAgent(base, token, name);
  const connection = await handshake(base, agent.agentId, agent.keys);
  expect(connection.answer.type).toBe('welcome');
  expect((await reportApp(connection, actions)).type).toBe('report_result');
  connection.socket.close();
  await connection.closed;
  return agent.agentId;
}

/** One of everything with an id in an organization, made through the API by its owner. */
async function populate(owner: SessionClient, slug: string, prefix: string) {
  const created = async <T>(method: string, url: string, body?: unknown) => {
    const answer = await owner.json<T>(method, url, body);
    expect(answer.status, `${method} ${url}: ${JSON.stringify(answer.body)}`).toBeLessThan(300);
    return answer.body;
  };
  const invited = await created<{ token: string }>('POST', `/api/orgs/${slug}/invitations`, {
    email: `${prefix}-member@example.test`,
    role: 'viewer',
  });
  const member = new SessionClient(owner.base);
  const joined = await member.json<{ user: { id: string } }>('POST', '/api/invitations/accept', {
    token: invited.token,
    displayName: `${prefix} member`,
    password: MEMBER_PASSWORD,
  });
  expect(joined.status).toBe(200);
  // SCIM on, and the team made through it: a SCIM group is one more way to reach a team by id.
  const scim = await created<{ token: string }>('PUT', `/api/orgs/${slug}/scim`, { defaultRole: 'viewer' });
  const scimClient = new SessionClient(owner.base, { authorization: `Bearer ${scim.token}` });
  const team = (
    await scimClient.json<{ id: string }>('POST', `/scim/v2/${slug}/Groups`, {
      displayName: `${prefix}-team`,
    })
  ).body;
  await created('PUT', `/api/orgs/${slug}/teams/${team.id}/members/${joined.body.user.id}`);
  const role = await created<{ id: string }>('POST', `/api/orgs/${slug}/roles`, {
    name: `${prefix}-role`,
    permissions: ['audit:read'],
  });
  const binding = await created<{ id: string }>('POST', `/api/orgs/${slug}/role-bindings`, {
    role: role.id,
    subject: { type: 'team', id: team.id },
  });
  await created('POST', `/api/orgs/${slug}/invitations`, {
    email: `${prefix}-pending@example.test`,
    role: role.id,
  });
  const invitations = await created<{ invitations: Array<{ id: string }> }>(
    'GET',
    `/api/orgs/${slug}/invitations`,
  );
  const sessions = await member.json<{ sessions: Array<{ id: string }> }>('GET', '/api/auth/sessions');
  // The member's role changes: they are told, and the notice is one more id to reach.
  await created('PATCH', `/api/orgs/${slug}/members/${joined.body.user.id}`, { role: 'operator' });
  const notices = await member.json<{ notifications: Array<{ id: string }> }>('GET', '/api/notifications');
  const apiKey = await created<{ apiKey: { id: string }; token: string }>(
    'POST',
    `/api/orgs/${slug}/api-keys`,
    {
      name: `${prefix} key`,
      permissions: PERMISSION_NAMES,
    },
  );
  const secret = await created<{ id: string }>('POST', `/api/orgs/${slug}/secrets`, {
    name: `${prefix.toUpperCase()}_TOKEN`,
    value: `${prefix}-secret-value-never-crosses`,
  });
  const registration = await created<{ id: string; token: string }>(
    'POST',
    `/api/orgs/${slug}/agent-registration-tokens`,
    { uses: 3, labels: { cross: prefix } },
  );
  const agent = await connectAndReport(owner.base, registration.token, `${prefix}-agent`, [
    ping,
    deploy,
    needs('uses-their-secret', 'BETA_TOKEN'),
    needs('uses-no-secret', 'NOWHERE_TOKEN'),
  ]);
  // Awaiting approval: approving, rejecting or cancelling it across organizations would show.
  const command = await created<{ id: string; status: string }>('POST', `/api/orgs/${slug}/commands`, {
    agent,
    service: 'app',
    action: 'deploy',
    confirm: true,
  });
  expect(command.status).toBe('awaiting_approval');
  // A bulk run over the agent, awaiting approval too: deciding on it across organizations would show.
  const bulkRun = await created<{ id: string; status: string }>('POST', `/api/orgs/${slug}/bulk-runs`, {
    selector: `cross=${prefix}`,
    service: 'app',
    action: 'deploy',
    confirm: true,
  });
  expect(bulkRun.status).toBe('awaiting_approval');
  const factor = await created<{ factorId: string }>('POST', '/api/auth/mfa/totp', {
    name: `${prefix} phone`,
  });
  // A provider that is never asked (nothing listens there): the connection exists to be reached by id.
  const connection = await created<{ id: string }>('POST', `/api/orgs/${slug}/sso/connections`, {
    name: `${prefix} IdP`,
    kind: 'oidc',
    config: {
      issuer: 'http://127.0.0.1:9',
      clientId: prefix,
      clientSecret: `${prefix}-secret`,
      defaultRole: 'viewer',
    },
  });
  // An audit sink that is never reached (nothing listens there): it exists to be reached by id.
  const sink = await created<{ sink: { id: string } }>('POST', `/api/orgs/${slug}/audit/sinks`, {
    name: `${prefix} SIEM`,
    config: { kind: 'webhook', url: 'https://127.0.0.1:9/audit' },
    from: 'now',
  });
  await created('PATCH', `/api/orgs/${slug}/audit/sinks/${sink.sink.id}`, { enabled: false });
  const ids: Ids = {
    snk: sink.sink.id,
    sso: connection.id,
    usr: joined.body.user.id,
    tea: team.id,
    rol: role.id,
    rbd: binding.id,
    inv: invitations.invitations[0]!.id,
    ses: sessions.body.sessions[0]!.id,
    mfa: factor.factorId,
    agt: agent,
    rgt: registration.id,
    apk: apiKey.apiKey.id,
    sec: secret.id,
    cmd: command.id,
    blk: bulkRun.id,
    ntf: notices.body.notifications[0]?.id ?? '',
  };
  for (const kind of ALL_PREFIXES) expect(ids[kind], kind).toBeTruthy();
  return { ids, member, keyToken: apiKey.token, scimClient };
}

/** An id of the same kind and time as `id` that exists nowhere: the control every answer is compared to. */
const nowhere = (id: string) => `${id.slice(0, id.indexOf('_') + 11)}${newId('cmd').slice(-16)}`;

/** An answer as it can be compared: the request id dropped, the id tried replaced by a mark. */
function comparable(status: number, text: string, id: string) {
  const masked = text.split(id).join('<id>');
  let body: unknown = masked;
  try {
    body = JSON.parse(masked);
  } catch {}
  const error = (body as { error?: { requestId?: string } } | undefined)?.error;
  if (error) delete error.requestId;
  // SCIM's error body keeps its request id at the top.
  if (body && typeof body === 'object' && 'schemas' in body)
    delete (body as { requestId?: string }).requestId;
  return { status, body };
}

async function ask(
  client: SessionClient,
  request: { method: string; url: string; body: unknown },
  id: string,
) {
  const response = await client.send(request.method, request.url, request.body);
  return comparable(response.status, await response.text(), id);
}

describe.each(BACKENDS)('cross-organization isolation over ids on %s (ACC-1, QA-3)', (backend) => {
  let world: OrgWorld;
  let acme: Awaited<ReturnType<typeof populate>>;
  let beta: Awaited<ReturnType<typeof populate>>;
  let boss: SessionClient;
  let acmeKey: SessionClient;

  /** Everything of beta its owner can read; times a server writes on its own (last seen) left out. */
  async function betaAsItIs(): Promise<string> {
    const reads = [
      '/api/orgs/beta/members',
      '/api/orgs/beta/teams',
      '/api/orgs/beta/roles',
      '/api/orgs/beta/role-bindings',
      '/api/orgs/beta/invitations',
      '/api/orgs/beta/api-keys',
      '/api/orgs/beta/secrets',
      '/api/orgs/beta/agent-registration-tokens',
      '/api/orgs/beta/agents',
      '/api/orgs/beta/services',
      '/api/orgs/beta/commands',
      `/api/orgs/beta/commands/${beta.ids.cmd}/output`,
      '/api/orgs/beta/security-policy',
      '/api/orgs/beta/command-policy',
      '/api/orgs/beta/audit/events?limit=500',
      '/api/auth/mfa',
    ];
    const answers: unknown[] = [];
    for (const url of reads) {
      const answer = await boss.json('GET', url);
      answers.push([url, answer.status, answer.body]);
    }
    return JSON.stringify(answers, (key, value) => (/^last(Seen|Used)/.test(key) ? undefined : value));
  }

  beforeAll(async () => {
    world = await startOrgWorld({ BULWARK_RATE_LIMIT_EXPORT_PER_MINUTE: '10000' }, backend);
    acme = await populate(world.owner.client, 'acme', 'acme');
    acmeKey = new SessionClient(world.server.url, { authorization: `Bearer ${acme.keyToken}` });

    // Beta: its own owner, made by the operator's CLI, who is no member of acme (and the acme owner
    // is no member of beta).
    const user = await world.admin('create-user', '--email', 'boss@beta.test');
    expect(user.code, user.stderr).toBe(0);
    const oneTime = /password:\s+(\S+)/.exec(user.stdout)![1]!;
    boss = new SessionClient(world.server.url);
    expect((await boss.login('boss@beta.test', oneTime)).status).toBe(200);
    const changed = await boss.json('POST', '/api/auth/password', {
      currentPassword: oneTime,
      newPassword: MEMBER_PASSWORD,
    });
    expect(changed.status).toBe(200);
    const org = await world.admin(
      'create-org',
      '--name',
      'Beta',
      '--owner',
      'boss@beta.test',
      '--mfa-optional',
    );
    expect(org.code, org.stderr).toBe(0);
    beta = await populate(boss, 'beta', 'beta');
    const acmeMembers = await world.owner.client.json<{ members: Array<{ email: string }> }>(
      'GET',
      '/api/orgs/acme/members',
    );
    expect(acmeMembers.body.members.map((m) => m.email)).not.toContain('boss@beta.test');
  }, 120_000);

  afterAll(async () => {
    await world?.close();
  });

  it("answers every route's id slots with the other organization's ids exactly as with ids that exist nowhere", async () => {
    const routes = registeredRoutesOf(world.server.server.app).filter((route) => route.method !== 'HEAD');
    /** Anything of beta in an answer: its ids (the one tried is masked already) and its names. */
    const leaksOf = (text: string) => [
      ...Object.values(beta.ids).filter((id) => text.includes(id)),
      ...(text.match(/beta-|beta\.test|beta (member|key|phone)/g) ?? []),
    ];
    const { attempts, unknown } = attemptsFor(routes, acme.ids);
    expect(unknown, 'routes this test does not know how to attack').toEqual([]);

    const noRoute = await ask(
      world.owner.client,
      { method: 'GET', url: '/api/no-such-route', body: undefined },
      '',
    );
    expect(noRoute.status).toBe(404);
    const before = await betaAsItIs();
    const principals: Array<[string, SessionClient]> = [
      ['session', world.owner.client],
      ['API key', acmeKey],
    ];
    const scimPrincipal = (): Array<[string, SessionClient]> => [['SCIM token', acme.scimClient]];
    const tried: string[] = [];
    for (const attempt of attempts) {
      const kinds = attempt.slot.prefixes === 'any' ? ALL_PREFIXES : attempt.slot.prefixes;
      for (const kind of kinds) {
        const theirs = beta.ids[kind]!;
        const control = nowhere(theirs);
        for (const [who, client] of isScim(attempt.route) ? scimPrincipal() : principals) {
          const what = `${who}: ${attempt.label} with beta's ${kind}`;
          const request = attempt.request(theirs);
          const answer = await ask(client, request, theirs);
          const expected = await ask(client, attempt.request(control), control);
          // A 404 from the route's own lookup, not from a request that never reached it.
          if (answer.status === 404) expect(answer.body, what).not.toEqual(noRoute.body);
          if (!attempt.route.url.startsWith('/api/orgs/') && who === 'API key') {
            // Routes of one's own account refuse an API key before they read the id: whatever the
            // refusal, it must be the same for any id.
            expect(answer.status, what).toBeGreaterThanOrEqual(400);
            expect(answer, what).toEqual(expected);
          } else {
            expect(answer.status, what).toBe(attempt.rule.status);
            // A cursor is a position in acme's own list, which differs with the id: only its status is
            // compared (and, below, that nothing of beta is in it).
            if (attempt.rule.use === 'cursor') expect(expected.status, what).toBe(answer.status);
            else expect(answer, what).toEqual(expected);
          }
          expect(leaksOf(JSON.stringify(answer.body)), what).toEqual([]);
          tried.push(what);
        }
      }
    }
    // The route list held what an id walk must cover, on both principals.
    expect(tried.length).toBeGreaterThan(100);
    for (const op of ['getAgent', 'addTeamMember', 'createCommand', 'createRoleBinding', 'revokeMySession'])
      expect(
        attempts.some((a) => a.route.declaration.operationId === op),
        op,
      ).toBe(true);

    // Beta's own slug, with beta's ids, answers as an organization that does not exist.
    for (const attempt of attempts.filter((a) => a.route.url.startsWith('/api/orgs/') || isScim(a.route))) {
      const kind = attempt.slot.prefixes === 'any' ? 'agt' : attempt.slot.prefixes[0]!;
      const theirs = beta.ids[kind]!;
      for (const [who, client] of isScim(attempt.route) ? scimPrincipal() : principals) {
        const answer = await ask(client, attempt.request(theirs, 'beta'), theirs);
        const expected = await ask(client, attempt.request(theirs, 'no-such-org'), theirs);
        expect(answer.status, `${who}: ${attempt.label} under /api/orgs/beta`).toBe(404);
        expect(answer, `${who}: ${attempt.label} under /api/orgs/beta`).toEqual(expected);
      }
    }

    expect(await betaAsItIs()).toBe(before);
    // Beta's member is still signed in, and beta's key still works.
    expect((await beta.member.json('GET', '/api/auth/session')).status).toBe(200);
    const betaKey = new SessionClient(world.server.url, { authorization: `Bearer ${beta.keyToken}` });
    expect((await betaKey.json('GET', '/api/orgs/beta/access/me')).status).toBe(200);
    // Hundreds of requests, each through both credentials: far more than the default on a loaded machine.
  }, 180_000);

  it("never grants an action the other organization's secret: it is missing, as a secret that exists nowhere", async () => {
    // acme's agent declared actions that ask for `BETA_TOKEN` (a secret only beta has) and for
    // `NOWHERE_TOKEN` (a secret nobody has).
    for (const [who, client] of [
      ['session', world.owner.client],
      ['API key', acmeKey],
    ] as const) {
      const create = (action: string) =>
        client.json<{ error: { code: string; message: string } }>('POST', '/api/orgs/acme/commands', {
          agent: acme.ids.agt,
          service: 'app',
          action,
        });
      const theirs = await create('uses-their-secret');
      const none = await create('uses-no-secret');
      expect(theirs.status, who).toBe(409);
      expect(theirs.body.error.code, who).toBe('secret_missing');
      expect(theirs.body.error.message.replace('BETA_TOKEN', '<name>'), who).toBe(
        none.body.error.message.replace('NOWHERE_TOKEN', '<name>'),
      );
    }
    const commands = await world.owner.client.json<{ commands: Array<{ action: string }> }>(
      'GET',
      '/api/orgs/acme/commands',
    );
    expect(commands.body.commands.map((c) => c.action)).not.toContain('uses-their-secret');
  });
});
