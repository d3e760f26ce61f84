import { z } from 'zod';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { JWKS_MAX_AGE_SECONDS, type WorkloadIdentityService } from './workload-identity.service.js';

const Discovery = z.object({
  issuer: z.string(),
  jwks_uri: z.string(),
  response_types_supported: z.array(z.string()),
  subject_types_supported: z.array(z.string()),
  id_token_signing_alg_values_supported: z.array(z.string()),
  claims_supported: z.array(z.string()),
});
const Jwks = z.object({
  keys: z.array(
    z.object({
      kty: z.literal('RSA'),
      n: z.string(),
      e: z.string(),
      kid: z.string(),
      alg: z.string(),
      use: z.literal('sig'),
    }),
  ),
});

// Shared caches may keep these: they are the same for everyone. A rotated key is published at least
// this long before it signs (workload-identity.service.ts), so a cached JWKS never lacks the signer.
const CACHE = `public, max-age=${JWKS_MAX_AGE_SECONDS}`;

/** The issuer's public documents (SEC-4): 404 when no BULWARK_PUBLIC_URL makes this server an issuer. */
export function workloadIdentityRoutes(issuer: WorkloadIdentityService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/.well-known/openid-configuration',
      operationId: 'getOpenIdConfiguration',
      summary: 'OpenID Provider metadata of the workload-identity issuer',
      tags: ['workload-identity'],
      access: {
        public: 'relying parties (cloud token services) read it unauthenticated; it holds no secret',
      },
      rateLimit: 'read',
      response: { 200: Discovery },
      handler: ({ reply }) => {
        const document = issuer.discovery();
        reply.header('cache-control', CACHE);
        return document;
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/.well-known/jwks.json',
      operationId: 'getWorkloadIdentityJwks',
      summary: 'Public keys that verify workload-identity JWTs: the signing key, the next, and retiring ones',
      tags: ['workload-identity'],
      access: { public: 'relying parties fetch the public keys unauthenticated to verify tokens' },
      rateLimit: 'read',
      response: { 200: Jwks },
      handler: async ({ reply }) => {
        const jwks = await issuer.jwks();
        reply.header('cache-control', CACHE);
        return jwks;
      },
    }),
  ];
}
