import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { DisplayText, Done, done, idOf, iso, OrgSlug, Timestamp } from '../http/schemas.js';
import { PersonalDataSchema, SinkInputSchema, SinkNameSchema } from './sinks.input.js';
import { orgSinkOwner, type SinksService, type SinkView } from './sinks.service.js';

const SinkId = idOf('snk');

const ConfigView = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('webhook'), url: z.string(), personalData: PersonalDataSchema }),
  z.object({
    kind: z.literal('syslog'),
    personalData: PersonalDataSchema,
    host: z.string(),
    port: z.number(),
    caPem: z.string(),
    serverName: z.string().nullable(),
    facility: z.number(),
    appHostname: z.string().nullable(),
  }),
  z.object({
    kind: z.literal('file'),
    file: z.string().describe('In BULWARK_AUDIT_SINK_DIR'),
    personalData: PersonalDataSchema,
  }),
  z.object({
    kind: z.literal('otlp'),
    url: z.string(),
    headerNames: z.array(z.string()),
    personalData: PersonalDataSchema,
  }),
]);

const SinkViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  kind: z.enum(['webhook', 'syslog', 'file', 'otlp']),
  enabled: z.boolean(),
  config: ConfigView,
  delivery: z.object({
    deliveredSeq: z.number().describe('The last event of the chain the sink has taken'),
    checkpointSeq: z.number(),
    failures: z.number().describe('Failed attempts in a row'),
    lastError: z.string().nullable(),
    nextAttemptAt: Timestamp.nullable(),
    lastDeliveredAt: Timestamp.nullable(),
  }),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});

const WithSecret = z.object({
  sink: SinkViewSchema,
  signingSecret: z
    .string()
    .optional()
    .describe('The webhook signing secret: shown this once, never again (rotate to get a new one)'),
});

const present = (sink: SinkView) => ({
  ...sink,
  delivery: {
    ...sink.delivery,
    nextAttemptAt: sink.delivery.nextAttemptAt === null ? null : iso(sink.delivery.nextAttemptAt),
    lastDeliveredAt: sink.delivery.lastDeliveredAt === null ? null : iso(sink.delivery.lastDeliveredAt),
  },
  createdAt: iso(sink.createdAt),
  updatedAt: iso(sink.updatedAt),
});

/**
 * `/api/orgs/:org/audit/sinks` (AUD-6). Security configuration: who may point the audit stream
 * somewhere may also stop it, so the same permission as SSO and SCIM, and privileged for changes.
 */
export function sinksRoutes(sinks: SinksService): RouteDefinition[] {
  const Params = z.strictObject({ org: OrgSlug, sink: SinkId });
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/audit/sinks',
      operationId: 'listAuditSinks',
      summary: "The organization's audit sinks and how far each has delivered, without credentials",
      tags: ['audit'],
      access: { permission: 'security_configuration:manage' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ sinks: z.array(SinkViewSchema) }) },
      handler: async ({ principal }) => ({ sinks: (await sinks.list(principal!.org!.id)).map(present) }),
    }),
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/audit/sinks',
      operationId: 'createAuditSink',
      summary:
        "Stream the organization's audit chain (events and signed checkpoints) to a webhook, syslog over TLS, a file or an OTLP collector",
      tags: ['audit'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({
        name: SinkNameSchema,
        config: SinkInputSchema,
        from: z
          .enum(['start', 'now'])
          .default('start')
          .describe('Deliver the chain from its first event, or only what happens from now on'),
        personalData: PersonalDataSchema.default(false),
      }),
      response: { 201: WithSecret },
      handler: async ({ principal, request, body }) => {
        const created = await sinks.create(orgSinkOwner(callerOf(principal, request)), body);
        return { ...created, sink: present(created.sink) };
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/audit/sinks/:sink',
      operationId: 'getAuditSink',
      summary: 'One audit sink and its delivery state',
      tags: ['audit'],
      access: { permission: 'security_configuration:manage' },
      rateLimit: 'read',
      params: Params,
      response: { 200: SinkViewSchema },
      handler: async ({ principal, params }) => present(await sinks.get(principal!.org!.id, params.sink)),
    }),
    defineRoute({
      method: 'PATCH',
      url: '/api/orgs/:org/audit/sinks/:sink',
      operationId: 'updateAuditSink',
      summary:
        'Rename, disable or enable an audit sink, rotate a webhook’s signing secret, or turn personal data in its lines on or off',
      tags: ['audit'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: Params,
      body: z.strictObject({
        name: SinkNameSchema.optional(),
        enabled: z.boolean().optional(),
        rotateSigningSecret: z.literal(true).optional(),
        personalData: PersonalDataSchema.optional(),
      }),
      response: { 200: WithSecret },
      handler: async ({ principal, request, params, body }) => {
        const updated = await sinks.update(orgSinkOwner(callerOf(principal, request)), params.sink, body);
        return { ...updated, sink: present(updated.sink) };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/audit/sinks/:sink',
      operationId: 'deleteAuditSink',
      summary: 'Stop streaming to this sink and forget it',
      tags: ['audit'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: Params,
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await sinks.remove(orgSinkOwner(callerOf(principal, request)), params.sink);
        return done;
      },
    }),
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/audit/sinks/:sink/test',
      operationId: 'testAuditSink',
      summary: 'Send one test line to the sink now and say what went wrong',
      tags: ['audit'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: Params,
      response: { 200: z.object({ ok: z.boolean(), problem: z.string().optional() }) },
      handler: ({ principal, request, params }) =>
        sinks.test(orgSinkOwner(callerOf(principal, request)), params.sink),
    }),
  ];
}
