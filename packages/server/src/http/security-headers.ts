import helmet from '@fastify/helmet';
import type { FastifyInstance } from 'fastify';

/**
 * NET-2 response headers on every response, errors and 404s included. The CSP allows no inline script
 * or style and no third-party origin; the console is built to fit it. HSTS only when this server (or
 * the trusted proxy in front of it) speaks TLS, since browsers ignore it over plain HTTP anyway.
 * CORS is deliberately absent: no cross-origin caller is served by default.
 */
export async function installSecurityHeaders(
  app: FastifyInstance,
  options: { hsts: boolean },
): Promise<void> {
  await app.register(helmet, {
    global: true,
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        'default-src': ["'self'"],
        'script-src': ["'self'"],
        'style-src': ["'self'"],
        'img-src': ["'self'", 'data:'],
        'font-src': ["'self'"],
        'connect-src': ["'self'"],
        'object-src': ["'none'"],
        'base-uri': ["'none'"],
        'form-action': ["'self'"],
        'frame-ancestors': ["'none'"],
      },
    },
    strictTransportSecurity: options.hsts ? { maxAge: 63_072_000, includeSubDomains: true } : false,
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginOpenerPolicy: { policy: 'same-origin' },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    crossOriginEmbedderPolicy: false,
    xFrameOptions: { action: 'deny' },
  });
  app.addHook('onRequest', async (_request, reply) => {
    // API answers carry credentials-derived data; no cache, shared or private, may keep them.
    reply.header('cache-control', 'no-store');
  });
}
