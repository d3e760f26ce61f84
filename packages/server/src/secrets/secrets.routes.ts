import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { Description, Done, done, idOf, iso, OrgSlug, Timestamp } from '../http/schemas.js';
import type { SecretsService } from './secrets.service.js';
import type { SecretRow } from './secrets.store.js';

/**
 * The secrets API (SEC-3): metadata readable with `secrets:read`, values write-only with
 * `secrets:write` and a recent sign-in (MFA-5). No response schema here has a field for a value, so
 * no handler can return one by mistake (responses are re-parsed through their schema).
 */

/** What an action's declaration names and a process environment can carry. */
const SecretName = z
  .string()
  .regex(
    /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/,
    'letters, digits, _ . - (starting with a letter or _), at most 128',
  );
/** Up to 64 KiB: keys, certificates and tokens, not files. */
const SecretValue = z.string().min(1).max(65_536);
const SecretParams = z.strictObject({ org: OrgSlug, secret: idOf('sec') });

const SecretView = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string(),
  version: z.number().int().describe('The current version; every update adds one'),
  createdBy: z.string(),
  createdAt: Timestamp,
  updatedBy: z.string(),
  updatedAt: Timestamp,
});

const secretView = (row: SecretRow) => ({
  id: row.id,
  name: row.name,
  description: row.description,
  version: row.current_version,
  createdBy: row.created_by,
  createdAt: iso(row.created_at),
  updatedBy: row.updated_by,
  updatedAt: iso(row.updated_at),
});

export function secretsRoutes(secrets: SecretsService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/secrets',
      operationId: 'listSecrets',
      summary: "The organization's secrets: names, versions and who changed them, never values",
      tags: ['secrets'],
      access: { permission: 'secrets:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ secrets: z.array(SecretView) }) },
      handler: async ({ principal }) => ({
        secrets: (await secrets.list(principal!.org!.id)).map(secretView),
      }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/secrets',
      operationId: 'createSecret',
      summary: 'Store a secret (version 1); the value is sealed at once and never shown again',
      tags: ['secrets'],
      access: { permission: 'secrets:write', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({ name: SecretName, description: Description.default(''), value: SecretValue }),
      response: { 201: SecretView },
      handler: async ({ principal, request, body }) =>
        secretView(await secrets.create(callerOf(principal, request), body)),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/secrets/:secret/versions',
      operationId: 'updateSecretValue',
      summary: 'Store a new value as the next version',
      tags: ['secrets'],
      access: { permission: 'secrets:write', privileged: true },
      rateLimit: 'write',
      params: SecretParams,
      body: z.strictObject({ value: SecretValue }),
      response: { 200: SecretView },
      handler: async ({ principal, request, params, body }) =>
        secretView(await secrets.addVersion(callerOf(principal, request), params.secret, body.value)),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/secrets/:secret',
      operationId: 'deleteSecret',
      summary: 'Delete a secret and every version of its value',
      tags: ['secrets'],
      access: { permission: 'secrets:write', privileged: true },
      rateLimit: 'write',
      params: SecretParams,
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await secrets.delete(callerOf(principal, request), params.secret);
        return done;
      },
    }),
  ];
}
