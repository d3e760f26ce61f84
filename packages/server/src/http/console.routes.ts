import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { NotFoundError, ServiceUnavailableError } from '../errors.js';
import { type ConsoleFiles, chooseEncoding } from './console-files.js';
import { defineRoute, type RouteDefinition, rawResponse } from './route.js';

const ConsoleState = z
  .record(z.string().max(64), z.union([z.string().max(2048), z.array(z.string().max(2048)).max(20)]))
  .refine((query) => Object.keys(query).length <= 20, 'at most 20 query parameters');

/** Paths that belong to the API or the agents: never answered with the console's page. */
const NOT_CONSOLE = /^\/(api|agent|scim|metrics|healthz|readyz)(\/|$)/;
/** Built file names carry a hash of their content: a cached copy never goes stale. */
const IMMUTABLE = 'public, max-age=31536000, immutable';

/**
 * The web console, served same-origin (UI-1) under the same strict CSP as everything else: the
 * built files, and its page for every other GET so that a link into the console (a command's page,
 * say) opens it. The console holds no secret and reads nothing without the API's own checks.
 */
export function consoleRoutes(files: ConsoleFiles): RouteDefinition[] {
  function send(request: FastifyRequest, reply: FastifyReply, urlPath: string) {
    if (NOT_CONSOLE.test(urlPath)) throw new NotFoundError();
    if (!files.built)
      throw new ServiceUnavailableError(
        'console_not_built',
        'The console is not built here: run `npm run build`, then restart the server.',
      );
    const asset = files.get(urlPath);
    const file = asset ?? files.get('/index.html')!;
    // A missing asset is a 404, not the page: a stale page asking for an old chunk must fail clearly.
    if (!asset && urlPath.startsWith('/assets/')) throw new NotFoundError();
    const { encoding, body } = chooseEncoding(file, request.headers['accept-encoding']);
    reply.type(file.type).header('vary', 'accept-encoding');
    if (encoding) reply.header('content-encoding', encoding);
    if (asset && urlPath.startsWith('/assets/')) reply.header('cache-control', IMMUTABLE);
    return body;
  }

  const page = (url: string, operationId: string) =>
    defineRoute({
      method: 'GET',
      url,
      operationId,
      summary: 'The web console: its built files, and its page for any other path',
      tags: ['console'],
      access: { public: 'the console’s static files; every call it makes is checked by the API' },
      rateLimit: 'read',
      // The console's own state in its address (why a sign-in ended, a list's filters): the page is
      // the same whatever it holds, and the console reads it.
      query: ConsoleState,
      response: { 200: rawResponse('text/html', 'the console page, or one of its built files') },
      handler: ({ request, reply }) => send(request, reply, new URL(request.url, 'http://x').pathname),
    });

  return [page('/', 'getConsole'), page('/*', 'getConsoleFile')];
}
