import { z } from 'zod';
import { defineRoute, isRawResponse, type RouteDefinition, rawResponse } from './route.js';

/**
 * OpenAPI 3.1 generated from the route declarations (the same zod schemas that validate requests and
 * filter responses), so the document cannot drift from what the server enforces. OpenAPI 3.1 uses
 * JSON Schema 2020-12, which is zod's native JSON Schema target.
 */

type JsonSchema = Record<string, unknown>;

const ErrorSchema = z.strictObject({
  error: z.strictObject({
    code: z.string().describe('Stable machine-readable code, e.g. validation_failed'),
    message: z.string(),
    requestId: z.string().describe('Also in the X-Request-Id header and the server logs'),
    fields: z.array(z.strictObject({ path: z.string(), message: z.string() })).optional(),
  }),
});

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as JsonSchema;
  return rest;
}

function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function parameters(schema: z.ZodType | undefined, location: 'path' | 'query'): JsonSchema[] {
  if (!schema) return [];
  const object = jsonSchema(schema, 'input');
  const properties = (object.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((object.required ?? []) as string[]);
  return Object.entries(properties).map(([name, property]) => ({
    name,
    in: location,
    required: location === 'path' || required.has(name),
    ...(typeof property.description === 'string' ? { description: property.description } : {}),
    schema: property,
  }));
}

const ERROR_STATUSES: Record<string, string> = {
  '400': 'Malformed request',
  '401': 'Authentication required',
  '403': 'Permission denied',
  '404': 'Not found (also for resources of other organizations)',
  '413': 'Body too large',
  '422': 'Validation failed; `fields` lists each problem',
  '429': 'Rate limited; see Retry-After',
  '500': 'Server error',
};

export function buildOpenApiDocument(routes: RouteDefinition[], info: { version: string }): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) {
    const responses: Record<string, JsonSchema> = {};
    for (const [status, spec] of Object.entries(route.response)) {
      responses[status] = isRawResponse(spec)
        ? { description: spec.description, content: { [spec.contentType]: {} } }
        : {
            description: spec.description ?? 'Success',
            content: { 'application/json': { schema: jsonSchema(spec, 'output') } },
          };
    }
    for (const [status, description] of Object.entries(ERROR_STATUSES)) {
      if (status === '401' || status === '403') {
        if (!('permission' in route.access)) continue;
      }
      responses[status] ??= {
        description,
        content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
      };
    }
    const operation: JsonSchema = {
      operationId: route.operationId,
      summary: route.summary,
      tags: route.tags ?? [],
      parameters: [...parameters(route.params, 'path'), ...parameters(route.query, 'query')],
      responses,
      ...('permission' in route.access
        ? { 'x-bulwark-permission': route.access.permission }
        : { 'x-bulwark-public': route.access.public, security: [] }),
      'x-bulwark-rate-limit': route.rateLimit,
    };
    if (route.body) {
      operation.requestBody = {
        required: true,
        content: { 'application/json': { schema: jsonSchema(route.body, 'input') } },
      };
    }
    const path = openApiPath(route.url);
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Bulwark API',
      version: info.version,
      description: 'Control plane for operating services through agents. Errors share one shape: `Error`.',
    },
    paths,
    components: { schemas: { Error: jsonSchema(ErrorSchema, 'output') } },
  };
}

/** GET /api/openapi.json: built once, from every other route plus itself. */
export function openApiRoute(routes: RouteDefinition[], version: string): RouteDefinition {
  let document: string | undefined;
  const self: RouteDefinition = defineRoute({
    method: 'GET',
    url: '/api/openapi.json',
    operationId: 'getOpenApiDocument',
    summary: 'The OpenAPI 3.1 description of this API',
    tags: ['meta'],
    access: { public: 'describes the API surface only; holds no data' },
    rateLimit: 'read',
    response: { 200: rawResponse('application/json', 'OpenAPI 3.1 document') },
    handler: (): string => {
      document ??= JSON.stringify(buildOpenApiDocument([...routes, self], { version }));
      return document;
    },
  });
  return self;
}
