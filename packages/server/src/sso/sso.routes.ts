import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { callerOf } from '../access/caller.js';
import { AppError, NotFoundError } from '../errors.js';
import { auditContextOf } from '../http/request-context.js';
import { defineRoute, type RouteDefinition, rawResponse } from '../http/route.js';
import {
  DisplayText,
  Done,
  done,
  idOf,
  iso,
  OrgSlug,
  RoleRef,
  TeamId,
  Timestamp,
  UserId,
} from '../http/schemas.js';
import { SELF_PERMISSION, sessionOf, setSessionCookie } from '../identity/session-guard.js';
import { isLoopbackHost, SsoError } from './oidc.js';
import type { SsoConnectionsService, SsoConnectionView } from './sso-connections.service.js';
import type { DomainView as DomainViewOf, SsoDomainsService } from './sso-domains.service.js';
import type { SsoEnforcementService } from './sso-enforcement.service.js';
import type { SignInUrls, SsoSignInService } from './sso-sign-in.service.js';

/** The cookie that binds a sign-in under way to the browser that started it (login CSRF). */
export const SSO_BROWSER_COOKIE = '__Host-bulwark_sso';
/**
 * Where a provider sends the browser back: one address per connection, so that an answer can only
 * be taken for the connection it was asked of (a provider answering for another one's sign-in, the
 * OAuth mix-up attack, finds the wrong address).
 */
export const OIDC_CALLBACK_PREFIX = '/api/auth/sso/oidc/';
export const oidcCallbackPath = (connectionId: string) => `${OIDC_CALLBACK_PREFIX}${connectionId}/callback`;

const ConnectionId = idOf('sso');

const DomainName = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'is not a domain name');

const DomainView = z.object({
  domain: z.string(),
  verified: z.boolean(),
  verifiedAt: Timestamp.nullable(),
  txtName: z.string().describe('Publish a TXT record with this name…'),
  txtValue: z.string().describe('…and this value'),
});
const presentDomain = (view: DomainViewOf) => ({
  ...view,
  verifiedAt: view.verifiedAt === null ? null : iso(view.verifiedAt),
});

const Enforcement = z.object({
  ssoRequired: z.boolean(),
  breakGlassUserId: z
    .string()
    .nullable()
    .describe('The owner who may still sign in with a password and a second factor'),
});

/** A path of the console, never another site: the landing page after signing in. */
const ReturnTo = z
  .string()
  .max(512)
  .regex(/^\/(?![/\\])[\x21-\x5b\x5d-\x7e]*$/, 'is not a path of this site')
  .default('/');

const OidcConfigInput = z.strictObject({
  issuer: z
    .url({ protocol: /^https?$/ })
    .max(512)
    .describe(
      'The issuer URL; discovery reads <issuer>/.well-known/openid-configuration. HTTPS, or HTTP on this host',
    ),
  clientId: z.string().trim().min(1).max(512),
  clientSecret: z.string().min(1).max(2048).describe('Write-only: never returned'),
  scopes: z
    .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,64}$/, 'is not a scope'))
    .max(20)
    .default(['email', 'profile']),
  defaultRole: RoleRef,
  jitProvisioning: z.boolean().default(true),
  allowedEmailDomains: z
    .array(
      z
        .string()
        .trim()
        .toLowerCase()
        .regex(/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'is not a domain name'),
    )
    .max(50)
    .default([])
    .describe(
      'The email domains a first sign-in may come from; empty: any (set it for multi-tenant providers)',
    ),
  groupsClaim: z.string().trim().min(1).max(128).default('groups'),
  groupRoles: z
    .array(z.strictObject({ group: z.string().min(1).max(256), role: RoleRef }))
    .max(100)
    .default([]),
  acrValues: z
    .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/, 'is not an acr value'))
    .max(10)
    .default([])
    .describe("Asked of the provider; the ID token's acr must be one of them"),
  requiredAmr: z
    .array(z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, 'is not an amr value'))
    .max(10)
    .default([])
    .describe("Each must be in the ID token's amr (RFC 8176), e.g. mfa"),
  groupTeams: z
    .array(z.strictObject({ group: z.string().min(1).max(256), team: TeamId }))
    .max(100)
    .default([])
    .describe("Teams that follow the provider's groups at every sign-in"),
  apiAudience: z
    .string()
    .trim()
    .min(1)
    .max(512)
    .nullable()
    .default(null)
    .describe(
      "Accept the provider's access tokens with this audience as their linked members (SSO-6); never the client ID",
    ),
  introspectTokens: z
    .boolean()
    .default(false)
    .describe('The tokens are opaque: ask the provider (RFC 7662 introspection) instead of checking a JWT'),
});

/** An LDAP attribute's name (RFC 4512 descr). */
const AttributeName = z.string().regex(/^[A-Za-z][A-Za-z0-9-]{0,63}$/, 'is not an LDAP attribute name');
const Dn = z.string().trim().min(1).max(512);

const LdapConfigInput = z.strictObject({
  url: z
    .url({ protocol: /^ldaps?$/ })
    .max(512)
    .describe('ldaps://host:636, or ldap://host:389, which is always upgraded with StartTLS'),
  caPem: z
    .string()
    .max(20_000)
    .regex(/-----BEGIN CERTIFICATE-----/, 'is not a PEM certificate')
    .nullable()
    .default(null)
    .describe("The CA that signed the directory's certificate, when the system does not trust it"),
  bindDn: Dn.describe('The service account that looks people up'),
  bindPassword: z.string().min(1).max(1024).describe('Write-only: never returned'),
  userBaseDn: Dn,
  loginAttribute: AttributeName.default('uid').describe(
    'uid (OpenLDAP), sAMAccountName or userPrincipalName (AD)',
  ),
  emailAttribute: AttributeName.default('mail'),
  nameAttribute: AttributeName.default('cn'),
  groupBaseDn: Dn.nullable().default(null).describe('Where groups whose member is the person are found'),
  groupNameAttribute: AttributeName.default('cn'),
  defaultRole: RoleRef,
  jitProvisioning: z.boolean().default(true),
  allowedEmailDomains: OidcConfigInput.shape.allowedEmailDomains,
  groupRoles: OidcConfigInput.shape.groupRoles,
  groupTeams: OidcConfigInput.shape.groupTeams,
});

const Pem = z
  .string()
  .max(20_000)
  .regex(/-----BEGIN CERTIFICATE-----/, 'is not a PEM certificate');

const SamlConfigInput = z.strictObject({
  metadataXml: z
    .string()
    .max(500_000)
    .optional()
    .describe("The IdP's metadata XML: fills idpEntityId, idpSsoUrl and idpCertificates"),
  idpEntityId: z.string().trim().min(1).max(1024).optional(),
  idpSsoUrl: z
    .url({ protocol: /^https?$/ })
    .max(2048)
    .optional()
    .describe('HTTP-Redirect binding'),
  idpCertificates: z.array(Pem).min(1).max(5).optional().describe('Signing certificates, PEM'),
  nameIdFormat: z
    .string()
    .regex(/^urn:oasis:names:tc:SAML:[12]\.[01]:nameid-format:[A-Za-z]+$/, 'is not a NameID format')
    .default('urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'),
  emailAttribute: z.string().trim().min(1).max(256).default('email'),
  nameAttribute: z.string().trim().min(1).max(256).default('name'),
  groupsAttribute: z.string().trim().min(1).max(256).default('groups'),
  allowIdpInitiated: z
    .boolean()
    .default(false)
    .describe('Accept responses no sign-in here asked for (IdP-initiated); off: they are refused'),
  defaultRole: RoleRef,
  jitProvisioning: z.boolean().default(true),
  allowedEmailDomains: OidcConfigInput.shape.allowedEmailDomains,
  groupRoles: OidcConfigInput.shape.groupRoles,
  groupTeams: OidcConfigInput.shape.groupTeams,
});

const ConnectionFields = {
  id: z.string(),
  name: z.string(),
  enabled: z.boolean(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
};
const ConnectionView = z.discriminatedUnion('kind', [
  z.object({
    ...ConnectionFields,
    kind: z.literal('oidc'),
    config: OidcConfigInput.omit({ clientSecret: true }).extend({ issuer: z.string() }),
  }),
  z.object({
    ...ConnectionFields,
    kind: z.literal('ldap'),
    config: LdapConfigInput.omit({ bindPassword: true }).extend({ url: z.string() }),
  }),
  z.object({
    ...ConnectionFields,
    kind: z.literal('saml'),
    config: SamlConfigInput.omit({ metadataXml: true }).extend({
      idpEntityId: z.string(),
      idpSsoUrl: z.string(),
      idpCertificates: z.array(z.string()),
    }),
  }),
]);

const present = (view: SsoConnectionView) => ({
  ...view,
  createdAt: iso(view.createdAt),
  updatedAt: iso(view.updatedAt),
});

/** The SAML SP's addresses of a connection: its entity ID (where its metadata is) and its ACS. */
export const SAML_PREFIX = '/api/auth/sso/saml/';
export const samlMetadataPath = (connectionId: string) => `${SAML_PREFIX}${connectionId}/metadata`;
export const samlAcsPath = (connectionId: string) => `${SAML_PREFIX}${connectionId}/acs`;

/**
 * Where the provider sends the browser back. With BULWARK_PUBLIC_URL, under it; without it, only a
 * server reached on this very host (development, tests) can name itself, and any other is told what
 * to set: a guessed address would be registered at the provider and fail in confusing ways later.
 */
function signInUrlsFor(
  publicUrl: string | undefined,
  request: FastifyRequest,
  connectionId: string,
): SignInUrls {
  let origin: URL | undefined;
  if (publicUrl) origin = new URL(publicUrl);
  else {
    try {
      origin = new URL(`${request.protocol}://${request.host}`);
    } catch {
      origin = undefined; // a Host header that names no host
    }
    if (!origin || !isLoopbackHost(origin.hostname))
      throw new AppError(
        409,
        'public_url_required',
        'Single sign-on needs BULWARK_PUBLIC_URL: the address people open the console at.',
      );
  }
  return {
    oidcCallback: new URL(oidcCallbackPath(connectionId), origin).href,
    saml: {
      entityId: new URL(samlMetadataPath(connectionId), origin).href,
      acsUrl: new URL(samlAcsPath(connectionId), origin).href,
    },
  };
}

/** The cookie only the browser that starts a sign-in holds; the callback must bring it back. */
function bindToBrowser(
  reply: FastifyReply,
  begun: { browserToken: string; expiresAt: number; kind: 'oidc' | 'saml' },
) {
  reply.setCookie(SSO_BROWSER_COOKIE, begun.browserToken, {
    path: '/',
    httpOnly: true,
    secure: true,
    // OIDC: sent on the provider's top-level redirect back, not on anything another site embeds. A
    // SAML IdP posts a form across sites, which a Lax cookie would not follow; the cookie only
    // binds a sign-in, whose RelayState and AuthnRequest ID another site does not know.
    sameSite: begun.kind === 'saml' ? 'none' : 'lax',
    maxAge: Math.floor((begun.expiresAt - Date.now()) / 1000),
  });
  reply.header('cache-control', 'no-store');
}

function redirect(reply: FastifyReply, location: string) {
  reply.code(303).header('location', location).header('cache-control', 'no-store');
  return '';
}

export function ssoRoutes(deps: {
  connections: SsoConnectionsService;
  signIn: SsoSignInService;
  enforcement: SsoEnforcementService;
  domains: SsoDomainsService;
  publicUrl: string | undefined;
}): RouteDefinition[] {
  const { connections, signIn, enforcement, domains, publicUrl } = deps;
  const offered = async (slug: string) =>
    (await connections.offeredBy(slug)).map((connection) => ({
      id: connection.id,
      name: connection.name,
      kind: connection.kind,
      startUrl: `/api/auth/sso/${connection.id}/${connection.kind === 'ldap' ? 'ldap' : 'start'}`,
    }));
  const DomainParams = z.strictObject({ org: OrgSlug, domain: DomainName });
  return [
    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/sso/domains',
      operationId: 'listSsoDomains',
      summary: 'The email domains the organization claims, and the DNS record that verifies each',
      tags: ['sso'],
      access: { permission: 'security_configuration:manage' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ domains: z.array(DomainView) }) },
      handler: async ({ principal }) => ({
        domains: (await domains.list(principal!.org!.id)).map(presentDomain),
      }),
    }),
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/sso/domains',
      operationId: 'addSsoDomain',
      summary: 'Claim an email domain; it routes sign-in here once its TXT record is verified',
      tags: ['sso'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({ domain: DomainName }),
      response: { 201: DomainView },
      handler: async ({ principal, request, body }) =>
        presentDomain(await domains.add(callerOf(principal, request), body.domain)),
    }),
    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/sso/domains/:domain/verify',
      operationId: 'verifySsoDomain',
      summary: "Look the domain's TXT record up in DNS now; verified when it holds the challenge",
      tags: ['sso'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: DomainParams,
      response: { 200: DomainView },
      handler: async ({ principal, request, params }) =>
        presentDomain(await domains.verify(callerOf(principal, request), params.domain)),
    }),
    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/sso/domains/:domain',
      operationId: 'removeSsoDomain',
      summary: 'Give up a domain: sign-ins from it are no longer routed here',
      tags: ['sso'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: DomainParams,
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await domains.remove(callerOf(principal, request), params.domain);
        return done;
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/api/auth/sso/discover',
      operationId: 'discoverSsoSignIn',
      summary:
        "The identity providers of the organization that verified an email address's domain: where a sign-in starting from that address goes",
      tags: ['auth', 'sso'],
      access: {
        public:
          'the sign-in page asks before anyone is signed in; only verified domains answer, with names only',
      },
      rateLimit: 'auth',
      query: z.strictObject({
        email: z.string().trim().min(3).max(254).regex(/@/, 'is not an email address'),
      }),
      response: {
        200: z.object({
          connections: z.array(
            z.object({
              id: z.string(),
              name: z.string(),
              kind: z.enum(['oidc', 'ldap', 'saml']),
              startUrl: z.string(),
              org: z.string(),
            }),
          ),
        }),
      },
      handler: async ({ query }) => {
        const owner = await domains.ownerOf(query.email);
        return {
          connections: owner ? (await offered(owner.slug)).map((c) => ({ ...c, org: owner.slug })) : [],
        };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/sso/connections',
      operationId: 'listSsoConnections',
      summary: "The organization's identity-provider connections, without their secrets",
      tags: ['sso'],
      access: { permission: 'security_configuration:manage' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: z.object({ connections: z.array(ConnectionView) }) },
      handler: async ({ principal }) => ({
        connections: (await connections.list(principal!.org!.id)).map(present),
      }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/sso/connections',
      operationId: 'createSsoConnection',
      summary:
        'Connect an OIDC identity provider or an LDAP / Active Directory directory; its secret is sealed and never returned',
      tags: ['sso'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.discriminatedUnion('kind', [
        z.strictObject({ name: DisplayText(100), kind: z.literal('oidc'), config: OidcConfigInput }),
        z.strictObject({ name: DisplayText(100), kind: z.literal('ldap'), config: LdapConfigInput }),
        z.strictObject({ name: DisplayText(100), kind: z.literal('saml'), config: SamlConfigInput }),
      ]),
      response: { 201: ConnectionView },
      handler: async ({ principal, request, body }) =>
        present(await connections.create(callerOf(principal, request), body)),
    }),

    defineRoute({
      method: 'DELETE',
      url: '/api/orgs/:org/sso/connections/:connection',
      operationId: 'deleteSsoConnection',
      summary: 'Remove a connection; the accounts it linked can no longer sign in through it',
      tags: ['sso'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, connection: ConnectionId }),
      response: { 200: Done },
      handler: async ({ principal, request, params }) => {
        await connections.remove(callerOf(principal, request), params.connection);
        return done;
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/orgs/:org/sso/enforcement',
      operationId: 'getSsoEnforcement',
      summary: 'Whether members must sign in through the identity provider, and who the break-glass owner is',
      tags: ['sso'],
      access: { permission: 'org:read' },
      rateLimit: 'read',
      params: z.strictObject({ org: OrgSlug }),
      response: { 200: Enforcement },
      handler: ({ principal, request }) => enforcement.current(callerOf(principal, request)),
    }),

    defineRoute({
      method: 'PUT',
      url: '/api/orgs/:org/sso/enforcement',
      operationId: 'setSsoEnforcement',
      summary:
        'Require signing in through the identity provider (password sign-in then reaches nothing here but for the break-glass owner), or stop requiring it',
      tags: ['sso'],
      access: { permission: 'security_configuration:manage', privileged: true },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug }),
      body: z.strictObject({ ssoRequired: z.boolean(), breakGlassUserId: UserId.nullable() }),
      response: { 200: Enforcement },
      handler: ({ principal, request, body }) =>
        enforcement.set(
          callerOf(principal, request),
          body,
          principal?.session?.ssoOrgId === principal?.org?.id,
        ),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/orgs/:org/sso/connections/:connection/test',
      operationId: 'testSsoConnection',
      summary: "Try a connection's provider as a sign-in would begin, and say what went wrong",
      tags: ['sso'],
      access: { permission: 'security_configuration:manage' },
      rateLimit: 'write',
      params: z.strictObject({ org: OrgSlug, connection: ConnectionId }),
      response: {
        200: z.object({ ok: z.boolean(), problem: z.string().optional(), issuer: z.string().optional() }),
      },
      handler: ({ principal, params }) => connections.test(principal!.org!.id, params.connection),
    }),

    defineRoute({
      method: 'GET',
      url: '/api/auth/sso/orgs/:org',
      operationId: 'listSsoSignInOptions',
      summary: "The identity providers an organization's members can sign in with",
      tags: ['auth', 'sso'],
      access: { public: 'the sign-in page offers these before anyone is signed in; names only' },
      rateLimit: 'auth',
      params: z.strictObject({ org: OrgSlug }),
      response: {
        200: z.object({
          connections: z.array(
            z.object({
              id: z.string(),
              name: z.string(),
              kind: z.enum(['oidc', 'ldap', 'saml']),
              startUrl: z
                .string()
                .describe('OIDC: POST to begin the redirect; LDAP: POST the user name and password here'),
            }),
          ),
        }),
      },
      handler: async ({ params }) => ({ connections: await offered(params.org) }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/sso/:connection/start',
      operationId: 'startSsoSignIn',
      summary:
        'Begin signing in at the identity provider: answers where to send the browser, and binds the sign-in to this browser with a cookie',
      tags: ['auth', 'sso'],
      access: { public: 'signing in is how a caller gets credentials; the sign-in is bound to this browser' },
      rateLimit: 'auth',
      params: z.strictObject({ connection: ConnectionId }),
      query: z.strictObject({ returnTo: ReturnTo }),
      response: { 200: z.object({ location: z.string().describe("The provider's authorization URL") }) },
      handler: async ({ params, query, request, reply }) => {
        const begun = await signIn.start(params.connection, {
          urls: signInUrlsFor(publicUrl, request, params.connection),
          returnTo: query.returnTo,
        });
        bindToBrowser(reply, begun);
        return { location: begun.location };
      },
    }),

    defineRoute({
      method: 'GET',
      url: samlMetadataPath(':connection'),
      operationId: 'getSamlServiceProviderMetadata',
      summary: "A SAML connection's service-provider metadata (entity ID, ACS address) to give its IdP",
      tags: ['auth', 'sso'],
      access: { public: 'SP metadata is public by design: the IdP and its administrator read it' },
      rateLimit: 'read',
      params: z.strictObject({ connection: ConnectionId }),
      response: { 200: rawResponse('application/samlmetadata+xml', 'SAML 2.0 metadata') },
      handler: async ({ params, request, reply }) => {
        const xml = await connections.samlMetadata(
          params.connection,
          signInUrlsFor(publicUrl, request, params.connection).saml,
        );
        if (!xml) throw new NotFoundError('No such SAML connection.');
        reply.type('application/samlmetadata+xml; charset=utf-8');
        return xml;
      },
    }),

    defineRoute({
      method: 'POST',
      url: samlAcsPath(':connection'),
      operationId: 'finishSamlSignIn',
      summary:
        "The SAML IdP's posted response (HTTP-POST binding): starts a session and lands on the console",
      tags: ['auth', 'sso'],
      access: {
        public: "the response is checked against the sign-in this browser started, and the IdP's signature",
      },
      rateLimit: 'auth',
      formBody: true,
      params: z.strictObject({ connection: ConnectionId }),
      body: z.strictObject({
        SAMLResponse: z.string().min(1).max(1_000_000),
        RelayState: z.string().max(1024).optional(),
      }),
      response: {
        303: rawResponse('text/plain', 'Redirect to the console, signed in or with the reason why not'),
      },
      handler: async ({ params, body, request, reply }) => {
        const header = request.headers.cookie;
        const browserToken = header ? request.server.parseCookie(header)[SSO_BROWSER_COOKIE] : undefined;
        reply.clearCookie(SSO_BROWSER_COOKIE, { path: '/', httpOnly: true, secure: true, sameSite: 'none' });
        try {
          const finished = await signIn.finishSaml(
            params.connection,
            { samlResponse: body.SAMLResponse, relayState: body.RelayState },
            browserToken,
            signInUrlsFor(publicUrl, request, params.connection).saml,
            auditContextOf(request),
          );
          setSessionCookie(reply, finished.token);
          return redirect(reply, finished.returnTo);
        } catch (error) {
          if (error instanceof SsoError) {
            request.log.warn({ code: error.code, reason: error.message }, 'SAML sign-in refused');
            return redirect(reply, `/login?ssoError=${encodeURIComponent(error.code)}`);
          }
          throw error;
        }
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/sso/:connection/ldap',
      operationId: 'signInAtDirectory',
      summary:
        "Sign in with a user name and password checked by the organization's LDAP / Active Directory directory; starts a session (cookie)",
      tags: ['auth', 'sso'],
      access: {
        public:
          'signing in is how a caller gets credentials; failures are uniform and limited like password sign-in',
      },
      rateLimit: 'auth',
      params: z.strictObject({ connection: ConnectionId }),
      body: z.strictObject({
        username: z.string().trim().min(1).max(256),
        // Not required here: an empty password is refused by the sign-in itself, never sent to the directory.
        password: z.string().max(1024),
      }),
      response: { 200: z.object({ status: z.literal('signed_in') }) },
      handler: async ({ params, body, request, reply }) => {
        const { token } = await signIn.signInAtDirectory(params.connection, body, auditContextOf(request));
        setSessionCookie(reply, token);
        reply.header('cache-control', 'no-store');
        return { status: 'signed_in' as const };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/sso/reauthenticate/directory',
      operationId: 'reauthenticateAtDirectory',
      summary:
        'Step up a session signed in through an LDAP / Active Directory connection: the directory checks the password again',
      tags: ['auth', 'sso'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'auth',
      body: z.strictObject({ password: z.string().max(1024) }),
      response: { 200: z.object({ status: z.literal('reauthenticated') }) },
      handler: async ({ principal, body, request, reply }) => {
        const { token } = await signIn.reauthenticateAtDirectory(
          sessionOf(principal),
          body.password,
          auditContextOf(request),
        );
        setSessionCookie(reply, token);
        reply.header('cache-control', 'no-store');
        return { status: 'reauthenticated' as const };
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/auth/sso/reauthenticate',
      operationId: 'startSsoReauthentication',
      summary:
        'Step up a session signed in through SSO: the identity provider asks for the credentials again (max_age=0, prompt=login); answers where to send the browser',
      tags: ['auth', 'sso'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'auth',
      query: z.strictObject({ returnTo: ReturnTo }),
      response: { 200: z.object({ location: z.string().describe("The provider's authorization URL") }) },
      handler: async ({ principal, query, request, reply }) => {
        const session = sessionOf(principal);
        if (!session.ssoConnectionId)
          throw new AppError(
            409,
            'not_signed_in_with_sso',
            'This session was signed in with a password: re-authenticate with it (POST /api/auth/reauthenticate).',
          );
        const begun = await signIn.start(session.ssoConnectionId, {
          urls: signInUrlsFor(publicUrl, request, session.ssoConnectionId),
          returnTo: query.returnTo,
          stepUpSessionId: session.id,
        });
        bindToBrowser(reply, begun);
        return { location: begun.location };
      },
    }),

    defineRoute({
      method: 'GET',
      url: oidcCallbackPath(':connection'),
      operationId: 'finishOidcSignIn',
      summary: "The identity provider's redirect back: starts a session and lands on the console",
      tags: ['auth', 'sso'],
      access: { public: "the provider's answer is checked against the sign-in this browser started" },
      rateLimit: 'auth',
      params: z.strictObject({ connection: ConnectionId }),
      // What providers send back (RFC 6749, RFC 9207, OIDC session management, and Google's extras).
      query: z.strictObject({
        state: z.string().max(512).optional(),
        code: z.string().max(4096).optional(),
        iss: z.string().max(512).optional(),
        error: z.string().max(256).optional(),
        error_description: z.string().max(1024).optional(),
        error_uri: z.string().max(1024).optional(),
        session_state: z.string().max(512).optional(),
        scope: z.string().max(1024).optional(),
        authuser: z.string().max(16).optional(),
        hd: z.string().max(256).optional(),
        prompt: z.string().max(64).optional(),
      }),
      response: {
        303: rawResponse('text/plain', 'Redirect to the console, signed in or with the reason why not'),
      },
      handler: async ({ params, request, reply }) => {
        // Only its query is read: the address it must have is the one the sign-in was started with.
        const callbackUrl = new URL(request.url, 'http://callback.invalid');
        const header = request.headers.cookie;
        const browserToken = header ? request.server.parseCookie(header)[SSO_BROWSER_COOKIE] : undefined;
        reply.clearCookie(SSO_BROWSER_COOKIE, { path: '/', httpOnly: true, secure: true, sameSite: 'lax' });
        try {
          const finished = await signIn.finish(
            params.connection,
            callbackUrl,
            browserToken,
            auditContextOf(request),
          );
          setSessionCookie(reply, finished.token);
          return redirect(reply, finished.returnTo);
        } catch (error) {
          // The person lands on the sign-in page with the reason; the audit log has the detail.
          if (error instanceof SsoError) {
            request.log.warn({ code: error.code, reason: error.message }, 'single sign-on refused');
            return redirect(reply, `/login?ssoError=${encodeURIComponent(error.code)}`);
          }
          throw error;
        }
      },
    }),
  ];
}
