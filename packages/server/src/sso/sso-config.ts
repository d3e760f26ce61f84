/** What every kind of connection decides about the people it signs in (SSO-4). */
export interface ProvisioningConfig {
  /** The role a person signing in for the first time gets, unless a group maps to another. */
  defaultRole: string;
  /** Whether a person the provider vouches for becomes a member at first sign-in (just in time). */
  jitProvisioning: boolean;
  /**
   * The email domains a first sign-in may come from; empty: any. Set it for a provider that signs in
   * people of many organizations (Google, a multi-tenant Entra ID application): otherwise anyone with
   * an account there could join.
   */
  allowedEmailDomains: string[];
  /** The first group the person is in decides their role, at every sign-in. */
  groupRoles: Array<{ group: string; role: string }>;
  /**
   * Teams that follow groups: at every sign-in the person is put in each mapped team whose group
   * they are in, and taken out of each whose group they are not. Teams not mapped are left alone.
   */
  groupTeams?: Array<{ group: string; team: string }>;
}

/**
 * An OIDC connection's configuration (SSO-1, SSO-4), stored as one value sealed by the organization's
 * data key and bound to the connection: the client secret never leaves it, and the rest is returned
 * only without the secret.
 */
export interface OidcConfig extends ProvisioningConfig {
  /** The provider's issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`. */
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** Requested beyond `openid`; `email` and `profile` by default. */
  scopes: string[];
  /** The ID token claim that lists the person's groups, for `groupRoles`. */
  groupsClaim: string;
  /** Asked of the provider (`acr_values`); when set, the ID token's `acr` must be one of them. */
  acrValues: string[];
  /** Each must be in the ID token's `amr` (RFC 8176), e.g. `mfa`; checked at sign-in and step-up. */
  requiredAmr: string[];
  /**
   * SSO-6: the audience of access tokens from this provider that the API accepts as its linked
   * people (null: none). Never the client ID, or the provider's ID tokens would pass.
   */
  apiAudience?: string | null;
  /** Whether those tokens are opaque and checked at the provider's introspection endpoint (RFC 7662). */
  introspectTokens?: boolean;
}

/** Why the provider's proof is weaker than the connection asks, or undefined when it is not. */
export function strengthProblem(config: OidcConfig, claims: Record<string, unknown>): string | undefined {
  const acr = typeof claims.acr === 'string' ? claims.acr : undefined;
  if (config.acrValues.length > 0 && (!acr || !config.acrValues.includes(acr)))
    return `the sign-in's authentication context (acr) is ${acr ?? 'missing'}, and this connection requires one of ${config.acrValues.join(', ')}`;
  const amr = Array.isArray(claims.amr) ? claims.amr.filter((m): m is string => typeof m === 'string') : [];
  const missing = config.requiredAmr.filter((method) => !amr.includes(method));
  if (missing.length > 0)
    return `the sign-in's authentication methods (amr) lack ${missing.join(', ')}, which this connection requires`;
  return undefined;
}

/** RFC 8176: the person proved more than one factor at the provider. */
export const provedSecondFactor = (claims: Record<string, unknown>) =>
  Array.isArray(claims.amr) && claims.amr.includes('mfa');

/**
 * An LDAP or Active Directory connection's configuration (SSO-3), sealed like an OIDC one: the
 * service account's password never leaves it. Always over TLS with the certificate verified: an
 * `ldaps://` URL, or an `ldap://` one that is upgraded with StartTLS before anything is sent.
 */
export interface LdapConfig extends ProvisioningConfig {
  url: string;
  /** PEM of the CA that signed the directory's certificate, when it is not one the system trusts. */
  caPem: string | null;
  /** The service account that looks people up; people sign in by binding as themselves. */
  bindDn: string;
  bindPassword: string;
  /** Where people are looked up, and the attribute they sign in with (uid, sAMAccountName, mail). */
  userBaseDn: string;
  loginAttribute: string;
  emailAttribute: string;
  nameAttribute: string;
  /** Where groups are looked up (entries whose `member` is the person); null: no groups. */
  groupBaseDn: string | null;
  groupNameAttribute: string;
}

/**
 * A SAML 2.0 identity provider (SSO-2), as its metadata describes it. Nothing here is secret (the SP
 * signs nothing); it is sealed like the others so that it cannot be pointed at another IdP without
 * the master key.
 */
export interface SamlConfig extends ProvisioningConfig {
  idpEntityId: string;
  /** The IdP's SSO endpoint for the HTTP-Redirect binding. */
  idpSsoUrl: string;
  /** PEM certificates whose keys may sign assertions (several during an IdP's key rollover). */
  idpCertificates: string[];
  /** The NameID format asked for; the NameID is the identity's subject. */
  nameIdFormat: string;
  /** Attribute names in the assertion. */
  emailAttribute: string;
  nameAttribute: string;
  groupsAttribute: string;
  /** Whether a response nobody asked for (IdP-initiated) is accepted; off unless set. */
  allowIdpInitiated: boolean;
}

export type ConnectionKind = 'oidc' | 'ldap' | 'saml';
export type ConnectionConfig = OidcConfig | LdapConfig | SamlConfig;

/** What an administrator may see of a connection: everything but its secret. */
export type OidcConfigView = Omit<OidcConfig, 'clientSecret'>;
export type LdapConfigView = Omit<LdapConfig, 'bindPassword'>;
export type ConnectionConfigView = OidcConfigView | LdapConfigView | SamlConfig;

export function viewOf(config: ConnectionConfig): ConnectionConfigView {
  if ('idpEntityId' in config) return config;
  if ('bindPassword' in config) {
    const { bindPassword: _secret, ...view } = config;
    return view;
  }
  const { clientSecret: _secret, ...view } = config;
  return view;
}

/**
 * The issuer an identity is linked under. An OIDC issuer is proved by the provider (its discovery
 * document and signing keys live at that URL); a SAML entity ID or an LDAP address is only what an
 * organization's administrator typed, with keys or a directory of their choosing, so it is kept to
 * that organization: another organization naming the same IdP can never sign in its people.
 */
export function identityIssuer(connection: { kind: ConnectionKind; orgId: string }, issuer: string): string {
  return connection.kind === 'oidc' ? issuer : `${connection.kind}:${connection.orgId}:${issuer}`;
}

/** Where a connection's sealed configuration is bound: it opens for this organization and connection only. */
export const configContext = (orgId: string, connectionId: string) =>
  `sso_connections/${orgId}/${connectionId}`;

/** The role a sign-in gives: the first mapped group the person is in, else the default. */
export function roleFor(config: ProvisioningConfig, groups: readonly string[]): string {
  return config.groupRoles.find((mapping) => groups.includes(mapping.group))?.role ?? config.defaultRole;
}

/** The claim's groups as strings; anything else in it (a provider's odd shape) is ignored. */
export function groupsOf(claims: Record<string, unknown>, claim: string): string[] {
  const value = claims[claim];
  if (typeof value === 'string') return [value];
  return Array.isArray(value) ? value.filter((group): group is string => typeof group === 'string') : [];
}
