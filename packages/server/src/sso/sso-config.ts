/**
 * An OIDC connection's configuration (SSO-1, SSO-4), stored as one value sealed by the organization's
 * data key and bound to the connection: the client secret never leaves it, and the rest is returned
 * only without the secret.
 */
export interface OidcConfig {
  /** The provider's issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`. */
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** Requested beyond `openid`; `email` and `profile` by default. */
  scopes: string[];
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
  /** The ID token claim that lists the person's groups, for `groupRoles`. */
  groupsClaim: string;
  /** The first group the person is in decides their role, at every sign-in. */
  groupRoles: Array<{ group: string; role: string }>;
  /** Asked of the provider (`acr_values`); when set, the ID token's `acr` must be one of them. */
  acrValues: string[];
  /** Each must be in the ID token's `amr` (RFC 8176), e.g. `mfa`; checked at sign-in and step-up. */
  requiredAmr: string[];
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

/** What an administrator may see of a connection: everything but the secret. */
export type OidcConfigView = Omit<OidcConfig, 'clientSecret'>;

export const viewOf = ({ clientSecret: _secret, ...view }: OidcConfig): OidcConfigView => view;

/** Where a connection's sealed configuration is bound: it opens for this organization and connection only. */
export const configContext = (orgId: string, connectionId: string) =>
  `sso_connections/${orgId}/${connectionId}`;

/** The role a sign-in gives: the first mapped group the person is in, else the default. */
export function roleFor(config: OidcConfig, groups: readonly string[]): string {
  return config.groupRoles.find((mapping) => groups.includes(mapping.group))?.role ?? config.defaultRole;
}

/** The claim's groups as strings; anything else in it (a provider's odd shape) is ignored. */
export function groupsOf(claims: Record<string, unknown>, claim: string): string[] {
  const value = claims[claim];
  if (typeof value === 'string') return [value];
  return Array.isArray(value) ? value.filter((group): group is string => typeof group === 'string') : [];
}
