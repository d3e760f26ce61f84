import { randomBytes, timingSafeEqual } from 'node:crypto';
import { newId, tokenHash } from '@bulwark/protocol';
import type { Kysely } from 'kysely';
import type { AccessStore } from '../access/access.store.js';
import { isBuiltInRole } from '../access/permissions.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditInput, AuditRequestContext } from '../audit/audit.types.js';
import type { DB } from '../db/schema.js';
import type { CredentialSeals } from '../identity/credential-seals.js';
import type { LoginLimiter } from '../identity/login-limiter.js';
import type { SessionsService } from '../identity/sessions.service.js';
import { createUsersStore, type UserRow, type UsersStore } from '../identity/users.store.js';
import type { MfaService } from '../mfa/mfa.service.js';
import { createOrgsStore } from '../orgs/orgs.store.js';
import { createTeamsStore } from '../orgs/teams.store.js';
import { createScimStore, type ScimStore } from '../scim/scim.store.js';
import type { DataKeyring } from '../secrets/data-keyring.js';
import { type LdapDirectory, LdapInvalidCredentialsError, ldapIssuer } from './ldap.js';
import { type OidcRelyingParty, SsoError } from './oidc.js';
import type { SamlServiceProvider, SpAddresses } from './saml.js';
import { createSsoStore, type SsoStore } from './sso.store.js';
import { groupsOf, identityIssuer, provedSecondFactor, roleFor, strengthProblem } from './sso-config.js';
import type {
  OpenedConnection,
  OpenedOidcConnection,
  OpenedSamlConnection,
  SsoConnectionsService,
} from './sso-connections.service.js';

/** How far a provider's clock may be behind ours when it says when it authenticated someone. */
const AUTH_TIME_SKEW_MS = 60_000;

/** How long a browser has between leaving for the provider and coming back. */
export const SSO_SIGN_IN_TTL_MS = 10 * 60_000;

const verifierContext = (stateHash: string) => `sso_sign_ins/${stateHash}`;

function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/** Where a redirect sign-in comes back: an OIDC connection's callback, or a SAML one's SP addresses. */
export interface SignInUrls {
  oidcCallback: string;
  saml: SpAddresses;
}

/** A redirect sign-in's connection: an OIDC or SAML one, enabled. */
function redirected(connection: OpenedConnection | undefined): OpenedOidcConnection | OpenedSamlConnection {
  if (!connection)
    throw new SsoError('sso_connection_unknown', 'There is no such sign-in connection, or it is disabled.');
  if (connection.kind === 'ldap')
    throw new SsoError(
      'sso_connection_kind',
      'This connection signs in with a user name and password at its directory, not through a redirect.',
    );
  return connection;
}

/** An OIDC callback's connection. */
function oidcOnly(connection: OpenedConnection | undefined): OpenedOidcConnection {
  const found = redirected(connection);
  if (found.kind !== 'oidc') throw new SsoError('sso_connection_kind', 'This is not an OIDC connection.');
  return found;
}

/** What the provider said went wrong, kept short and printable for the person and the log. */
const printable = (text: string | null) => (text ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 200);

/**
 * Sign-in through an organization's OIDC provider (SSO-1, SSO-4). A sign-in under way is bound to the
 * browser that started it (a cookie whose hash the record keeps), taken once, and short-lived. The
 * person is whoever the provider's (issuer, subject) is linked to; a first sign-in provisions them
 * just in time with the connection's role, never by matching an email address to an existing
 * account. Group-to-role mappings are applied again at every sign-in.
 */
export function createSsoSignInService(deps: {
  connections: SsoConnectionsService;
  store: SsoStore;
  users: UsersStore;
  access: Pick<AccessStore, 'customRoles'>;
  relyingParty: OidcRelyingParty;
  /** What this organization's SCIM knows of a person (scim/scim.store.ts). */
  provisioned: Pick<ScimStore, 'userRecord'>;
  directory: LdapDirectory;
  saml: SamlServiceProvider;
  limiter: Pick<LoginLimiter, 'check' | 'recordFailure' | 'recordSuccess'>;
  dataKeys: Pick<DataKeyring, 'seal' | 'open'>;
  seals: CredentialSeals;
  sessions: SessionsService;
  mfa: Pick<MfaService, 'isEnrolled'>;
  audit: AuditService;
  clock: () => number;
}) {
  const {
    connections,
    store,
    users,
    relyingParty,
    directory,
    saml,
    dataKeys,
    seals,
    sessions,
    audit,
    clock,
  } = deps;

  /** The user the provider's account is linked to, or why it cannot sign in. */
  async function linkedUser(issuer: string, subject: string): Promise<UserRow | undefined> {
    const identity = await store.identity(issuer, subject);
    if (!identity) return undefined;
    // A link the server did not make (written into the database) signs nobody in.
    if (!(await seals.holds('sso-identity', identity, { id: identity.id, userId: identity.user_id })))
      throw new SsoError('sso_identity_integrity', 'This account link is not valid; ask an administrator.');
    return users.findById(identity.user_id);
  }

  async function checkedRole(connection: OpenedConnection, groups: string[]): Promise<string> {
    const role = roleFor(connection.config, groups);
    if (!isBuiltInRole(role) && !(await deps.access.customRoles(connection.orgId)).has(role))
      throw new SsoError(
        'sso_role_gone',
        `The role "${role}" this connection gives no longer exists; an administrator must fix the connection.`,
      );
    return role;
  }

  /**
   * An account this organization's SCIM created for the person the provider now signs in, not yet
   * linked to this provider: the organization's own provider made it, so its first sign-in links it
   * (by the email both name). Any other account with the email is never linked (sso_account_exists).
   */
  async function provisionedHere(
    connection: OpenedConnection,
    issuer: string,
    claims: Record<string, unknown>,
  ): Promise<UserRow | undefined> {
    const email = typeof claims.email === 'string' ? claims.email.trim().toLowerCase() : '';
    if (!email || claims.email_verified === false) return undefined;
    const existing = await users.findByEmail(email);
    if (!existing || (await deps.provisioned.userRecord(connection.orgId, existing.id))?.owned !== 1)
      return undefined;
    const linked = await store.issuersOfUser(existing.id);
    return linked.some((identity) => identity.issuer === issuer) ? undefined : existing;
  }

  /** SSO-4: the teams mapped to groups follow the person's groups at this sign-in. */
  async function followGroups(
    trx: Kysely<DB>,
    events: AuditInput[],
    connection: OpenedConnection,
    person: { id: string; email: string },
    groups: string[],
    actor: AuditInput['actor'],
    context: AuditRequestContext,
  ) {
    const teams = createTeamsStore(trx);
    for (const mapping of connection.config.groupTeams ?? []) {
      const team = await teams.find(connection.orgId, mapping.team);
      if (!team) continue; // removed since: the mapping waits for an administrator
      const target = { type: 'team', id: team.id, display: team.name };
      const details = { userId: person.id, via: 'sso', group: mapping.group };
      if (groups.includes(mapping.group)) {
        if (await teams.addMember(connection.orgId, team.id, person.id, clock()))
          events.push({
            orgId: connection.orgId,
            actor,
            action: 'team.member_added',
            target,
            outcome: 'success',
            context,
            details,
          });
      } else if (await teams.removeMember(connection.orgId, team.id, person.id))
        events.push({
          orgId: connection.orgId,
          actor,
          action: 'team.member_removed',
          target,
          outcome: 'success',
          context,
          details,
        });
    }
  }

  async function provision(
    connection: OpenedConnection,
    proof: { issuer: string; subject: string; claims: Record<string, unknown>; groups: string[] },
    context: AuditRequestContext,
  ) {
    const { issuer, subject, claims } = proof;
    let user = await linkedUser(issuer, subject);
    const role = await checkedRole(connection, proof.groups);
    let newUser: UserRow | undefined;
    const linkTo = user ? undefined : await provisionedHere(connection, issuer, claims);
    user ??= linkTo;
    if (!user) {
      if (!connection.config.jitProvisioning)
        throw new SsoError(
          'sso_not_provisioned',
          'You have no account here yet; ask an administrator to invite you.',
        );
      const email = typeof claims.email === 'string' ? claims.email.trim().toLowerCase() : '';
      if (!email)
        throw new SsoError(
          'sso_no_email',
          'The identity provider sent no email address: grant the "email" scope and claim to this application.',
        );
      const domain = email.slice(email.lastIndexOf('@') + 1);
      const allowed = connection.config.allowedEmailDomains ?? [];
      if (allowed.length > 0 && !allowed.includes(domain))
        throw new SsoError(
          'sso_domain_not_allowed',
          `Accounts of ${domain} cannot join through this connection; ask an administrator to invite you.`,
        );
      if (claims.email_verified === false)
        throw new SsoError(
          'sso_email_unverified',
          'The identity provider says this email address is not verified.',
        );
      // Never linked by email alone: an account that exists is not taken over by whoever the provider vouches for.
      if (await users.findByEmail(email))
        throw new SsoError(
          'sso_account_exists',
          'An account with this email exists and is not linked to this identity provider; sign in with it, or ask an administrator.',
        );
      const now = clock();
      newUser = {
        id: newId('usr', now),
        email,
        display_name:
          typeof claims.name === 'string' && claims.name.trim()
            ? claims.name.trim().slice(0, 100)
            : email.split('@')[0]!,
        password_hash: null,
        status: 'active',
        password_change_required_at: null,
        password_changed_at: null,
        created_at: now,
        updated_at: now,
      };
      user = newUser;
    }
    if (user.status !== 'active') throw new SsoError('account_disabled', 'This account is disabled.');
    const signedIn = user;
    // Someone with a factor here proves it after the provider, unless the provider's token says a
    // second factor was proved there: the provider's password alone is not two factors.
    const secondFactorPending =
      !newUser && !provedSecondFactor(claims) && (await deps.mfa.isEnrolled(user.id));
    const actor = { type: 'user' as const, id: signedIn.id, display: signedIn.email };
    const connectionTarget = { type: 'sso_connection', id: connection.id, display: connection.name };

    const started = await audit.withEvents(async (trx, events: AuditInput[]) => {
      const now = clock();
      const orgs = createOrgsStore(trx);
      const tx = createSsoStore(trx);
      if (newUser) await createUsersStore(trx).insert(newUser);
      const linked = newUser ?? linkTo;
      if (linked) {
        const identity = {
          id: newId('sid', now),
          issuer,
          subject,
          user_id: linked.id,
          connection_id: connection.id,
          created_at: now,
          last_sign_in_at: now,
          seal: '',
        };
        identity.seal = await seals.inTransaction(trx).seal('sso-identity', identity);
        await tx.insertIdentity(identity);
        if (newUser)
          events.push({
            orgId: connection.orgId,
            actor,
            action: 'user.created',
            target: { type: 'user', id: newUser.id, display: newUser.email },
            outcome: 'success',
            context,
            details: { via: 'sso', connection: connection.id },
          });
        events.push({
          orgId: connection.orgId,
          actor,
          action: 'sso.identity_linked',
          target: connectionTarget,
          outcome: 'success',
          context,
          details: { issuer, subject, ...(linkTo ? { account: 'provisioned by SCIM' } : {}) },
        });
      }
      const member = await orgs.findMember(connection.orgId, signedIn.id);
      // Deprovisioned by the organization's SCIM: the provider's provisioning, not a sign-in, brings them back.
      if (!member && (await createScimStore(trx).userRecord(connection.orgId, signedIn.id)))
        throw new SsoError(
          'sso_not_provisioned',
          'Your access to this organization was removed by its identity provider; ask an administrator.',
        );
      if (!member) {
        if (!connection.config.jitProvisioning)
          throw new SsoError(
            'sso_not_provisioned',
            'You are not a member of this organization; ask an administrator to invite you.',
          );
        await orgs.insertMembership({
          org_id: connection.orgId,
          user_id: signedIn.id,
          role,
          created_at: now,
        });
        events.push({
          orgId: connection.orgId,
          actor,
          action: 'member.joined',
          target: { type: 'user', id: signedIn.id, display: signedIn.email },
          outcome: 'success',
          context,
          details: { role, via: 'sso', connection: connection.id },
        });
      } else if (connection.config.groupRoles.length > 0 && member.role !== role) {
        // The provider's groups decide the role at every sign-in, when the connection maps them.
        await orgs.setRole(connection.orgId, signedIn.id, role);
        events.push({
          orgId: connection.orgId,
          actor,
          action: 'member.role_changed',
          target: { type: 'user', id: signedIn.id, display: signedIn.email },
          outcome: 'success',
          context,
          details: { from: member.role, to: role, via: 'sso', connection: connection.id },
        });
      }
      await followGroups(trx, events, connection, signedIn, proof.groups, actor, context);
      const identity = await tx.identity(issuer, subject);
      if (identity) await tx.touchIdentity(identity.id, now);
      const session = await sessions.inTransaction(trx).start(signedIn.id, context, {
        secondFactorPending,
        ssoConnectionId: connection.id,
        secondFactorAtProvider: provedSecondFactor(proof.claims),
      });
      for (const ended of session.ended)
        events.push({
          actor,
          action: 'auth.session_revoked',
          target: { type: 'session', id: ended },
          outcome: 'success',
          context,
          details: { reason: 'session_limit', newSession: session.sessionId },
        });
      events.push({
        orgId: connection.orgId,
        actor,
        action: 'auth.login_succeeded',
        target: { type: 'session', id: session.sessionId },
        outcome: 'success',
        context,
        details: { via: 'sso', connection: connection.id, issuer },
      });
      return session;
    });
    return { token: started.token, userId: signedIn.id };
  }

  /**
   * MFA-5: the provider authenticated the person again, just now (its `auth_time` says so), and it is
   * the session's own user. The session is replaced by a new one (a new id at a privilege change) with
   * the old one's absolute end and a fresh proof.
   */
  async function stepUp(
    connection: OpenedConnection,
    proof: { issuer: string; subject: string; claims: Record<string, unknown> },
    target: { sessionId: string; startedAt: number },
    context: AuditRequestContext,
  ) {
    const authTime = proof.claims.auth_time;
    if (typeof authTime !== 'number' || authTime * 1000 < target.startedAt - AUTH_TIME_SKEW_MS)
      throw new SsoError(
        'sso_reauthentication_stale',
        'The identity provider did not ask for your credentials again; it must honour max_age=0 and prompt=login.',
      );
    const user = await linkedUser(proof.issuer, proof.subject);
    const session = user ? await sessions.openSessionOf(user.id, target.sessionId) : undefined;
    if (!user || !session || session.sso_connection_id !== connection.id)
      throw new SsoError(
        'sso_reauthentication_other_person',
        'The identity provider signed in someone other than the person of this session, or the session ended.',
      );
    const actor = { type: 'user' as const, id: user.id, display: user.email };
    const started = await audit.withEvents(async (trx, events: AuditInput[]) => {
      const tx = sessions.inTransaction(trx);
      if (!(await tx.end(session.id, 'replaced at re-authentication')))
        throw new SsoError(
          'sso_reauthentication_other_person',
          'This session ended meanwhile; sign in again.',
        );
      const replacement = await tx.start(user.id, context, {
        expiresAt: session.expires_at,
        ssoConnectionId: connection.id,
        secondFactorAtProvider: provedSecondFactor(proof.claims),
      });
      events.push({
        actor,
        action: 'auth.reauthenticated',
        target: { type: 'session', id: replacement.sessionId },
        outcome: 'success',
        context,
        details: { via: 'sso', connection: connection.id, replaced: session.id },
      });
      return replacement;
    });
    return { token: started.token, userId: user.id };
  }

  /**
   * A password tried at a directory, under the same limits as password sign-in (AUTH-6): refused
   * while the account or address is locked, slowed after a few failures; a wrong password counts,
   * and a lockout it starts is audited; every refusal is on record.
   */
  async function limitedAtDirectory<T>(
    connection: OpenedConnection,
    account: string,
    context: AuditRequestContext,
    attempt: () => Promise<T>,
  ): Promise<T> {
    const ip = context.ip ?? 'unknown';
    const { delayMs } = await deps.limiter.check(account, ip);
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    try {
      const result = await attempt();
      await deps.limiter.recordSuccess(account);
      return result;
    } catch (error) {
      if (error instanceof LdapInvalidCredentialsError) {
        const { lockouts } = await deps.limiter.recordFailure(account, ip);
        for (const lockout of lockouts)
          await audit.record({
            orgId: connection.orgId,
            actor: { type: 'anonymous', display: lockout.scope === 'account' ? account.slice(0, 200) : null },
            action: 'auth.locked_out',
            target: { type: 'sso_connection', id: connection.id, display: connection.name },
            outcome: 'denied',
            context,
            details: { scope: lockout.scope, retryAfterSeconds: lockout.retryAfterSeconds, via: 'ldap' },
          });
      }
      if (error instanceof SsoError || error instanceof LdapInvalidCredentialsError)
        await refused(connection, context, error.code, 'ldap');
      throw error;
    }
  }

  /** One refused sign-in, on record with its reason, before it is answered. */
  const refused = (
    connection: OpenedConnection | undefined,
    context: AuditRequestContext,
    reason: string,
    via: string,
  ) =>
    audit.record({
      orgId: connection?.orgId ?? null,
      actor: { type: 'anonymous', display: 'single sign-on' },
      action: 'auth.login_failed',
      target: connection ? { type: 'sso_connection', id: connection.id, display: connection.name } : null,
      outcome: 'failure',
      context,
      details: { reason, via },
    });

  return {
    /**
     * SSO-3: a sign-in with a user name and password checked by binding as that person at the
     * connection's directory. Guesses count against the same limits as password sign-in (AUTH-6),
     * per directory account and per address.
     */
    async signInAtDirectory(
      connectionId: string,
      credentials: { username: string; password: string },
      context: AuditRequestContext,
    ) {
      const connection = await connections.forSignIn(connectionId);
      if (connection?.kind !== 'ldap') {
        await refused(connection, context, 'sso_connection_unknown', 'ldap');
        throw new SsoError(
          'sso_connection_unknown',
          'There is no such directory connection, or it is disabled.',
        );
      }
      const account = `ldap:${connection.id}:${credentials.username.trim().toLowerCase()}`;
      return limitedAtDirectory(connection, account, context, async () => {
        const proof = await directory.authenticate(
          connection.config,
          credentials.username,
          credentials.password,
        );
        return provision(connection, { ...proof, issuer: identityIssuer(connection, proof.issuer) }, context);
      });
    },

    /**
     * MFA-5 for a session signed in through a directory: the person binds as themselves again with
     * their password; the session is replaced as after any step-up. Wrong passwords count like
     * sign-in failures.
     */
    async reauthenticateAtDirectory(
      session: { id: string; userId: string; ssoConnectionId: string | null },
      password: string,
      context: AuditRequestContext,
    ) {
      const connection = session.ssoConnectionId
        ? await connections.forSignIn(session.ssoConnectionId)
        : undefined;
      if (connection?.kind !== 'ldap')
        throw new SsoError('sso_connection_kind', 'This session was not signed in through a directory.');
      const issuer = identityIssuer(connection, ldapIssuer(connection.config));
      const identity = await store.identityOf(session.userId, issuer);
      if (
        !identity ||
        !(await seals.holds('sso-identity', identity, { id: identity.id, userId: identity.user_id }))
      )
        throw new SsoError(
          'sso_reauthentication_other_person',
          'This session has no valid link to the directory.',
        );
      const account = `ldap:${connection.id}:reauthenticate:${session.userId}`;
      const startedAt = clock();
      await limitedAtDirectory(connection, account, context, () =>
        directory.reauthenticate(connection.config, identity.subject, password),
      );
      return stepUp(
        connection,
        { issuer, subject: identity.subject, claims: { auth_time: Math.floor(clock() / 1000) } },
        { sessionId: session.id, startedAt },
        context,
      );
    },

    /**
     * Begins a sign-in: where to send the browser, and the value its cookie must carry back. With
     * `stepUpSessionId`, a step-up of that session (MFA-5): the provider is asked to authenticate the
     * person again (`max_age=0`, `prompt=login`), whatever session it holds.
     */
    async start(
      connectionId: string,
      options: { urls: SignInUrls; returnTo: string; stepUpSessionId?: string },
    ) {
      const connection = redirected(await connections.forSignIn(connectionId));
      const now = clock();
      await store.deleteExpiredSignIns(now);
      const stepUp = options.stepUpSessionId !== undefined;
      let begun: { url: string; state: string; nonce: string; verifier: string; redirectUri: string };
      if (connection.kind === 'oidc') {
        const started = await relyingParty.start(connection, options.urls.oidcCallback, stepUp);
        begun = { ...started, redirectUri: options.urls.oidcCallback };
      } else {
        // SAML: the RelayState plays the state's part; the AuthnRequest's ID, the nonce's.
        const state = randomBytes(32).toString('base64url');
        const started = await saml.start(connection.config, options.urls.saml, state, stepUp);
        begun = {
          url: started.url,
          state,
          nonce: started.requestId,
          verifier: '',
          redirectUri: options.urls.saml.acsUrl,
        };
      }
      const browserToken = randomBytes(32).toString('base64url');
      const stateHash = tokenHash(begun.state);
      await store.insertSignIn({
        state_hash: stateHash,
        connection_id: connection.id,
        org_id: connection.orgId,
        browser_hash: tokenHash(browserToken),
        nonce: begun.nonce,
        verifier_sealed: await dataKeys.seal('instance', begun.verifier, verifierContext(stateHash)),
        redirect_uri: begun.redirectUri,
        return_to: options.returnTo,
        step_up_session_id: options.stepUpSessionId ?? null,
        created_at: now,
        expires_at: now + SSO_SIGN_IN_TTL_MS,
      });
      return {
        location: begun.url,
        browserToken,
        expiresAt: now + SSO_SIGN_IN_TTL_MS,
        kind: connection.kind,
      };
    },

    /**
     * SSO-2: a SAML response posted to a connection's ACS address. It must answer the AuthnRequest of
     * a sign-in this browser started (its RelayState names the sign-in, its cookie proves the browser,
     * its InResponseTo the request), unless the connection accepts IdP-initiated responses; its
     * assertion is taken once (the replay cache).
     */
    async finishSaml(
      connectionId: string,
      posted: { samlResponse: string; relayState: string | undefined },
      browserToken: string | undefined,
      addresses: SpAddresses,
      context: AuditRequestContext,
    ) {
      let connection: OpenedConnection | undefined;
      try {
        connection = await connections.forSignIn(connectionId);
        if (connection?.kind !== 'saml')
          throw new SsoError(
            'sso_connection_unknown',
            'There is no such SAML connection, or it is disabled.',
          );
        const samlConnection = connection;
        const pending = posted.relayState ? await store.takeSignIn(tokenHash(posted.relayState)) : undefined;
        if (pending) {
          if (pending.expires_at <= clock())
            throw new SsoError('sso_state_unknown', 'This sign-in expired; start again.');
          if (!browserToken || !sameHash(tokenHash(browserToken), pending.browser_hash))
            throw new SsoError(
              'sso_browser_mismatch',
              'This sign-in was started in another browser; start again here.',
            );
          if (pending.connection_id !== connectionId)
            throw new SsoError(
              'sso_connection_mismatch',
              'This answer came back for another sign-in connection; start again.',
            );
        } else if (!samlConnection.config.allowIdpInitiated) {
          throw new SsoError(
            'saml_unsolicited',
            'This SAML response answers no sign-in started here (IdP-initiated, or replayed); start the sign-in from Bulwark.',
          );
        }
        const proof = await saml.finish(
          samlConnection.config,
          pending ? { ...addresses, acsUrl: pending.redirect_uri } : addresses,
          posted.samlResponse,
          pending?.nonce ?? null,
        );
        const now = clock();
        if (
          !(await store.takeAssertion(
            tokenHash(`${connectionId} ${proof.assertionId}`),
            samlConnection,
            proof.validUntil,
            now,
          ))
        )
          throw new SsoError(
            'saml_replayed',
            'This SAML assertion was used before; start the sign-in again.',
          );
        const issuer = identityIssuer(samlConnection, proof.issuer);
        const claims = {
          ...proof.claims,
          ...(proof.authnInstant === undefined ? {} : { auth_time: Math.floor(proof.authnInstant / 1000) }),
        };
        const { token, userId } = pending?.step_up_session_id
          ? await stepUp(
              samlConnection,
              { ...proof, issuer, claims },
              { sessionId: pending.step_up_session_id, startedAt: pending.created_at },
              context,
            )
          : await provision(samlConnection, { ...proof, issuer, claims }, context);
        return { token, userId, returnTo: pending?.return_to ?? '/' };
      } catch (error) {
        if (error instanceof SsoError) await refused(connection, context, error.code, 'saml');
        throw error;
      }
    },

    /**
     * Finishes a sign-in from the provider's callback: a new session for whoever the provider vouches
     * for. Every refusal is audited with its reason before it is thrown.
     */
    async finish(
      connectionId: string,
      callbackUrl: URL,
      browserToken: string | undefined,
      context: AuditRequestContext,
    ) {
      let connection: OpenedConnection | undefined;
      try {
        const state = callbackUrl.searchParams.get('state');
        if (!state)
          throw new SsoError(
            'sso_state_missing',
            'The identity provider sent no state; start the sign-in again.',
          );
        const stateHash = tokenHash(state);
        // Taken, not read: a state used once (or replayed) finds nothing the second time.
        const pending = await store.takeSignIn(stateHash);
        if (!pending || pending.expires_at <= clock())
          throw new SsoError(
            'sso_state_unknown',
            'This sign-in is unknown, already finished or expired; start again.',
          );
        if (!browserToken || !sameHash(tokenHash(browserToken), pending.browser_hash))
          throw new SsoError(
            'sso_browser_mismatch',
            'This sign-in was started in another browser; start again here.',
          );
        // An answer at another connection's address is not for this sign-in (the mix-up attack).
        if (pending.connection_id !== connectionId)
          throw new SsoError(
            'sso_connection_mismatch',
            'This answer came back for another sign-in connection; start again.',
          );
        const oidcConnection = oidcOnly(await connections.forSignIn(pending.connection_id));
        connection = oidcConnection;
        const error = callbackUrl.searchParams.get('error');
        if (error)
          throw new SsoError(
            'sso_provider_error',
            `The identity provider refused the sign-in: ${printable(error)} ${printable(callbackUrl.searchParams.get('error_description'))}`.trim(),
          );
        const verifier = (
          await dataKeys.open('instance', pending.verifier_sealed, verifierContext(stateHash))
        ).plaintext.toString('utf8');
        // The token request repeats the address the sign-in was started with, not the one this request came to.
        const current = new URL(pending.redirect_uri);
        current.search = callbackUrl.search;
        const proof = await relyingParty.finish(oidcConnection, current, {
          state,
          nonce: pending.nonce,
          verifier,
          redirectUri: pending.redirect_uri,
        });
        const weaker = strengthProblem(oidcConnection.config, proof.claims);
        if (weaker)
          throw new SsoError(
            'sso_strength_insufficient',
            `The sign-in at the identity provider is too weak: ${weaker}.`,
          );
        const { token, userId } = pending.step_up_session_id
          ? await stepUp(
              connection,
              proof,
              { sessionId: pending.step_up_session_id, startedAt: pending.created_at },
              context,
            )
          : await provision(
              connection,
              { ...proof, groups: groupsOf(proof.claims, oidcConnection.config.groupsClaim) },
              context,
            );
        return { token, userId, returnTo: pending.return_to };
      } catch (error) {
        if (error instanceof SsoError) await refused(connection, context, error.code, 'sso');
        throw error;
      }
    },
  };
}

export type SsoSignInService = ReturnType<typeof createSsoSignInService>;
