import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { type CataloguePermission, PERMISSION_NAMES } from '../access/permissions.js';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { DisplayText, Done, done, idOf, iso, OrgSlug, Timestamp } from '../http/schemas.js';
import { type ApiKeysService, DEFAULT_EXPIRY_DAYS, MAX_EXPIRY_DAYS } from './api-keys.service.js';
import type { ApiKeyRow } from './api-keys.store.js';

/**
 * The API keys of an organization (KEY-1): listed with `apikeys:read`, created and revoked with
 * `apikeys:manage` and a recent sign-in (MFA-5). The token is in the creation response only.
 */

const ApiKeyView = z.object({
  id: z.string(),
  name: z.string(),
  hint: z.string().describe('The first characters of the token, to tell keys apart'),
  createdBy: z.object({ id: z.string(), email: z.string() }),
  createdByKey: z.string().nullable(),
  permissions: z.array(z.string()),
  selector: z.string().nullable(),
  status: z.enum(['active', 'expired', 'revoked']),
  createdAt: Timestamp,
  expiresAt: Timestamp,
  lastUsedAt: Timestamp.nullable(),
  lastUsedIp: z.string().nullable(),
  revokedAt: Timestamp.nullable(),
  revokedReason: z.string().nullable(),
});

/** A key as people and the access review see it: everything but the token. */
export const apiKeyView = (row: ApiKeyRow & { email: string }, now: number) => ({
  id: row.id,
  name: row.name,
  hint: `${row.token_hint}…`,
  createdBy: { id: row.user_id, email: row.email },
  createdByKey: row.parent_key_id,
  permissions: JSON.parse(row.permissions) as string[],
  selector: row.selector,
  status: row.revoked_at !== null ? 'revoked' : row.expires_at <= now ? 'expired' : 'active',
  createdAt: iso(row.created_at),
  expiresAt: iso(row.expires_at),
  lastUsedAt: row.last_used_at === null ? null : iso(row.last_used_at),
  lastUsedIp: row.last_used_ip,
  revokedAt: row.revoked_at === null ? null : iso(row.revoked_at),
  revokedReason: row.revoked_reason,
});

export function apiKeysRoutes(apiKeys: ApiKeysService, clock: () => number): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/api-keys',
      operationId: 'listApiKeys',
      summary: "The organization's API keys: names, permissions, expiry and last use, never tokens",
      tags: ['api-keys'],
      access: { permission: 'apikeys:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ apiKeys: z.array(ApiKeyView) }) },
      handler: async ({ principal }) => {
        const now = clock();
        return { apiKeys: (await apiKeys.list(principal!.org!.id)).map((row) => apiKeyView(row, now)) };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/api-keys',
      operationId: 'createApiKey',
      summary: 'Create an API key holding some of your permissions; the token is shown in this response only',
      tags: ['api-keys'],
      access: { permission: 'apikeys:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({
        name: DisplayText(100),
        permissions: z
          .array(z.enum(PERMISSION_NAMES as [CataloguePermission, ...CataloguePermission[]]))
          .min(1)
          .max(PERMISSION_NAMES.length),
        selector: z.string().trim().min(1).max(512).optional(),
        expiresInDays: z.number().int().min(1).max(MAX_EXPIRY_DAYS).default(DEFAULT_EXPIRY_DAYS),
      }),
      response: {
        201: z.object({
          apiKey: ApiKeyView,
          token: z.string().describe('Send as `Authorization: Bearer <token>`; it is not shown again'),
        }),
      },
      handler: async ({ principal, request, body }) => {
        const { key, token } = await apiKeys.create(callerOf(principal, request), body);
        return { apiKey: apiKeyView(key, clock()), token };
      },
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/api-keys/:key',
      operationId: 'revokeApiKey',
      summary: 'Revoke an API key, and every key it created; it stops working at once',
      tags: ['api-keys'],
      access: { permission: 'apikeys:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, key: idOf('apk') }),
      response: { 200: Done.extend({ revoked: z.number().int() }) },
      handler: async ({ principal, request, params }) => ({
        ...done,
        revoked: await apiKeys.revoke(callerOf(principal, request), params.key),
      }),
    }),
  ];
}
