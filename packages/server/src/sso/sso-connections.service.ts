import { X509Certificate } from 'node:crypto';
import { newId } from '@bulwark/protocol';
import { assertCanGrant } from '../access/access.service.js';
import type { AccessStore } from '../access/access.store.js';
import { type Caller, callerEvent } from '../access/caller.js';
import type { Transact } from '../audit/audited-transaction.js';
import { AppError, NotFoundError } from '../errors.js';
import type { TeamsStore } from '../orgs/teams.store.js';
import { type DataKeyring, orgScope } from '../secrets/data-keyring.js';
import type { LdapDirectory } from './ldap.js';
import type { OidcRelyingParty } from './oidc.js';
import { parseIdpMetadata, type SamlServiceProvider, type SpAddresses } from './saml.js';
import { createSsoStore, type SsoConnectionRow, type SsoStore } from './sso.store.js';
import {
  type ConnectionConfig,
  type ConnectionConfigView,
  type ConnectionKind,
  configContext,
  type LdapConfig,
  type OidcConfig,
  type SamlConfig,
  viewOf,
} from './sso-config.js';

export interface SsoConnectionView {
  id: string;
  kind: ConnectionKind;
  name: string;
  enabled: boolean;
  config: ConnectionConfigView;
  createdAt: number;
  updatedAt: number;
}

/** A connection as the server uses it: its configuration opened. */
export type OpenedConnection =
  | OpenedOf<'oidc', OidcConfig>
  | OpenedOf<'ldap', LdapConfig>
  | OpenedOf<'saml', SamlConfig>;
export type OpenedSamlConnection = OpenedOf<'saml', SamlConfig>;
export type OpenedOidcConnection = OpenedOf<'oidc', OidcConfig>;
export type OpenedLdapConnection = OpenedOf<'ldap', LdapConfig>;

interface OpenedOf<K extends ConnectionKind, C extends ConnectionConfig> {
  kind: K;
  id: string;
  orgId: string;
  orgSlug?: string;
  name: string;
  enabled: boolean;
  /** Changes whenever the configuration does: the provider's cached metadata is keyed by it. */
  version: number;
  config: C;
}

/**
 * An organization's identity-provider connections (SSO-4): several per organization, their
 * configuration sealed at rest and the client secret never returned (write-only, like secrets).
 * Changing them takes `security_configuration:manage`; each change is audited in the same
 * transaction (AUD-7).
 */
type NewConnection =
  | { kind: 'oidc'; config: OidcConfig }
  | { kind: 'ldap'; config: LdapConfig }
  | { kind: 'saml'; config: SamlConfig };

/** A SAML connection as an administrator gives it: the IdP's metadata, or its three facts by hand. */
export type SamlConfigInput = Omit<SamlConfig, 'idpEntityId' | 'idpSsoUrl' | 'idpCertificates'> &
  Partial<Pick<SamlConfig, 'idpEntityId' | 'idpSsoUrl' | 'idpCertificates'>> & {
    metadataXml?: string | undefined;
  };

/** The IdP's entity ID, SSO address and certificates, from its metadata where given; each checked. */
function resolvedSaml({ metadataXml, ...input }: SamlConfigInput): SamlConfig {
  const imported = metadataXml ? parseIdpMetadata(metadataXml) : undefined;
  const config = {
    ...input,
    idpEntityId: input.idpEntityId ?? imported?.entityId ?? '',
    idpSsoUrl: input.idpSsoUrl ?? imported?.ssoUrl ?? '',
    idpCertificates: input.idpCertificates ?? imported?.certificates ?? [],
  };
  if (!config.idpEntityId || !config.idpSsoUrl || config.idpCertificates.length === 0)
    throw new AppError(
      422,
      'saml_idp_incomplete',
      "Give the identity provider's metadata (metadataXml), or its entity ID, SSO URL and signing certificate.",
    );
  if (!/^https?:\/\//.test(config.idpSsoUrl))
    throw new AppError(422, 'saml_idp_incomplete', "The identity provider's SSO URL is not an http(s) URL.");
  for (const pem of config.idpCertificates) {
    try {
      new X509Certificate(pem);
    } catch {
      throw new AppError(
        422,
        'saml_certificate_invalid',
        'A signing certificate of the identity provider is not a PEM certificate.',
      );
    }
  }
  return config;
}

/** The audit log's account of what a new connection points at (never its secret). */
function whatItConnects(input: NewConnection): Record<string, string | boolean> {
  switch (input.kind) {
    case 'oidc':
      return { issuer: input.config.issuer, clientId: input.config.clientId };
    case 'ldap':
      return {
        url: input.config.url,
        serviceAccount: input.config.bindDn,
        userBaseDn: input.config.userBaseDn,
      };
    case 'saml':
      return {
        idpEntityId: input.config.idpEntityId,
        idpSsoUrl: input.config.idpSsoUrl,
        allowIdpInitiated: input.config.allowIdpInitiated,
      };
  }
}

/** What can be checked of a SAML IdP without a browser: that its certificates are certificates, in date. */
function testSaml(config: SamlConfig): { ok: boolean; problem?: string; issuer?: string } {
  const problems: string[] = [];
  for (const [index, pem] of config.idpCertificates.entries()) {
    try {
      const certificate = new X509Certificate(pem);
      if (Date.parse(certificate.validTo) < Date.now())
        problems.push(`signing certificate ${index + 1} expired on ${certificate.validTo}`);
    } catch {
      problems.push(`signing certificate ${index + 1} is not a certificate`);
    }
  }
  return problems.length === 0
    ? { ok: true, issuer: config.idpEntityId }
    : { ok: false, problem: `${problems.join('; ')}.`, issuer: config.idpEntityId };
}

export function createSsoConnectionsService(deps: {
  store: SsoStore;
  access: Pick<AccessStore, 'customRoles'>;
  teams: Pick<TeamsStore, 'list'>;
  dataKeys: Pick<DataKeyring, 'seal' | 'open'>;
  relyingParty: OidcRelyingParty;
  directory: LdapDirectory;
  saml: SamlServiceProvider;
  transact: Transact;
  clock: () => number;
}) {
  const { store, dataKeys, relyingParty, directory, saml, transact, clock } = deps;

  async function open(row: SsoConnectionRow & { org_slug?: string }): Promise<OpenedConnection> {
    const opened = await dataKeys.open(
      orgScope(row.org_id),
      row.config_sealed,
      configContext(row.org_id, row.id),
    );
    return {
      kind: row.kind,
      id: row.id,
      orgId: row.org_id,
      ...(row.org_slug ? { orgSlug: row.org_slug } : {}),
      name: row.name,
      enabled: row.enabled === 1,
      version: row.updated_at,
      config: JSON.parse(opened.plaintext.toString('utf8')),
    } as OpenedConnection;
  }

  const viewOfOpened = (connection: OpenedConnection, row: SsoConnectionRow): SsoConnectionView => ({
    id: connection.id,
    kind: connection.kind,
    name: connection.name,
    enabled: connection.enabled,
    config: viewOf(connection.config),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });

  return {
    open,

    async list(orgId: string): Promise<SsoConnectionView[]> {
      const rows = await store.connections(orgId);
      return Promise.all(rows.map(async (row) => viewOfOpened(await open(row), row)));
    },

    /** The connection a sign-in names, wherever it is; undefined when there is none or it is disabled. */
    async forSignIn(id: string): Promise<OpenedConnection | undefined> {
      const row = await store.connectionById(id);
      if (row?.enabled !== 1) return undefined;
      return open(row);
    },

    /** Which identity providers each of these people signs in through (for the access review). */
    async linkedIssuers(orgId: string, userIds: string[]): Promise<Map<string, string[]>> {
      const linked = new Map<string, string[]>();
      for (const row of await store.issuersOf(orgId, userIds))
        linked.set(row.user_id, [...(linked.get(row.user_id) ?? []), row.issuer]);
      return linked;
    },

    /** A SAML connection's SP metadata, to give its IdP; undefined for no such SAML connection. */
    async samlMetadata(id: string, addresses: SpAddresses): Promise<string | undefined> {
      const row = await store.connectionById(id);
      const connection = row && (await open(row));
      return connection?.kind === 'saml' ? saml.metadata(connection.config, addresses) : undefined;
    },

    /** What an organization's sign-in page offers: the names of its enabled connections. */
    offeredBy: (orgSlug: string) => store.enabledOf(orgSlug),

    async create(
      caller: Caller,
      given: { name: string } & (
        | Exclude<NewConnection, { kind: 'saml' }>
        | { kind: 'saml'; config: SamlConfigInput }
      ),
    ): Promise<SsoConnectionView> {
      const input: { name: string } & NewConnection =
        given.kind === 'saml' ? { ...given, config: resolvedSaml(given.config) } : given;
      // An ID token's audience is the client: accepting tokens for it would let ID tokens open the API.
      if (
        input.kind === 'oidc' &&
        input.config.apiAudience &&
        input.config.apiAudience === input.config.clientId
      )
        throw new AppError(
          422,
          'api_audience_is_client',
          "The API's audience must be its own (the API's identifier at the provider), not the client ID.",
        );
      const now = clock();
      const id = newId('sso', now);
      const teams = await deps.teams.list(caller.org.id);
      for (const mapping of input.config.groupTeams ?? [])
        if (!teams.some((team) => team.id === mapping.team))
          throw new AppError(
            422,
            'team_not_found',
            `No team ${mapping.team} in this organization for group "${mapping.group}".`,
          );
      for (const role of new Set([input.config.defaultRole, ...input.config.groupRoles.map((m) => m.role)]))
        assertCanGrant(caller, 'give at sign-in', role, await deps.access.customRoles(caller.org.id));
      const row: SsoConnectionRow = {
        id,
        org_id: caller.org.id,
        kind: input.kind,
        name: input.name,
        // Sealed before the transaction: the organization's data key may need reading, on a connection of its own.
        config_sealed: await dataKeys.seal(
          orgScope(caller.org.id),
          JSON.stringify(input.config),
          configContext(caller.org.id, id),
        ),
        enabled: 1,
        created_by: caller.userId,
        created_at: now,
        updated_at: now,
      };
      await transact(async (trx, events) => {
        const tx = createSsoStore(trx);
        if ((await tx.connections(caller.org.id)).some((existing) => existing.name === input.name))
          throw new AppError(
            409,
            'sso_connection_exists',
            'A connection with this name exists; choose another name.',
          );
        await tx.insertConnection(row);
        events.push(
          callerEvent(
            caller,
            'sso.connection_created',
            { type: 'sso_connection', id, display: input.name },
            {
              kind: input.kind,
              ...whatItConnects(input),
              defaultRole: input.config.defaultRole,
              jitProvisioning: input.config.jitProvisioning,
            },
          ),
        );
      });
      return viewOfOpened(await open(row), row);
    },

    async remove(caller: Caller, id: string): Promise<void> {
      await transact(async (trx, events) => {
        const tx = createSsoStore(trx);
        const row = await tx.connection(caller.org.id, id);
        if (!row) throw new NotFoundError('No such connection.');
        const others = (await tx.connections(caller.org.id)).filter((c) => c.id !== id && c.enabled === 1);
        if (caller.org.ssoRequired && others.length === 0)
          throw new AppError(
            409,
            'sso_connection_required',
            'This organization requires SSO and this is its last connection: stop requiring SSO first.',
          );
        if (!(await tx.deleteConnection(caller.org.id, id))) throw new NotFoundError('No such connection.');
        events.push(
          callerEvent(caller, 'sso.connection_deleted', { type: 'sso_connection', id, display: row.name }),
        );
      });
    },

    /**
     * Tries the connection as a sign-in would begin (discovery, metadata, the client's registration
     * as far as the provider shows it) and says what went wrong in words an IdP administrator knows.
     */
    async test(orgId: string, id: string): Promise<{ ok: boolean; problem?: string; issuer?: string }> {
      const row = await store.connection(orgId, id);
      if (!row) throw new NotFoundError('No such connection.');
      const connection = await open(row);
      if (connection.kind === 'ldap') return directory.test(connection.config);
      if (connection.kind === 'saml') return testSaml(connection.config);
      try {
        // Read afresh: a test is asked for after changing something at the provider.
        const configuration = await relyingParty.discover(connection.config);
        const metadata = configuration.serverMetadata();
        const problems: string[] = [];
        if (!metadata.authorization_endpoint) problems.push('the provider names no authorization endpoint');
        if (!metadata.token_endpoint) problems.push('the provider names no token endpoint');
        if (!metadata.jwks_uri) problems.push('the provider publishes no signing keys (jwks_uri)');
        const methods = metadata.code_challenge_methods_supported;
        if (methods && !methods.includes('S256'))
          problems.push('the provider does not support PKCE with S256');
        return problems.length === 0
          ? { ok: true, issuer: metadata.issuer }
          : { ok: false, problem: `${problems.join('; ')}.`, issuer: metadata.issuer };
      } catch (error) {
        return { ok: false, problem: (error as Error).message };
      }
    },
  };
}

export type SsoConnectionsService = ReturnType<typeof createSsoConnectionsService>;
