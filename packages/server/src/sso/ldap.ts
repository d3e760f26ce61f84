import {
  AndFilter,
  Client,
  type Entry,
  EqualityFilter,
  InvalidCredentialsError,
  PresenceFilter,
} from 'ldapts';
import { AppError } from '../errors.js';
import type { BackingTls } from '../net/backing-tls.js';
import { SsoError } from './oidc.js';
import type { LdapConfig } from './sso-config.js';

/**
 * LDAP and Active Directory sign-in (SSO-3), on ldapts. Nothing is sent before TLS is up with the
 * directory's certificate verified (`ldaps://`, or StartTLS on `ldap://`, NET-4). The service account
 * finds the person by their sign-in name with a filter built as a structure, never as text, so a name
 * like `*)(uid=*` is a name, not a filter (LDAP injection); the person is then proved by binding as
 * themselves with their password, which Bulwark never stores. An empty password is refused before
 * the directory is asked: many directories take a name with an empty password as an anonymous bind
 * that "succeeds" (RFC 4513 §5.1.2).
 */

/** What a directory vouches for: a stable id, the person's address and name, their groups. */
export interface LdapProof {
  issuer: string;
  subject: string;
  claims: { email?: string; name?: string };
  groups: string[];
}

/** The person or the password is wrong: one answer for both, so names cannot be probed. */
export class LdapInvalidCredentialsError extends AppError {
  constructor() {
    super(401, 'invalid_credentials', 'The user name or password is not correct.');
  }
}

const first = (value: Entry[string] | undefined): string | undefined => {
  const one = Array.isArray(value) ? value[0] : value;
  if (one === undefined) return undefined;
  return Buffer.isBuffer(one) ? one.toString('hex') : String(one);
};

/**
 * The identity's issuer: the directory (its host and port; an ldap: URL has no `origin`) and the
 * part of it people live in. Two directories never share one, whatever their base DNs.
 */
export function ldapIssuer(config: LdapConfig): string {
  const url = new URL(config.url);
  return `${url.protocol}//${url.host}/${config.userBaseDn}`;
}

/** What went wrong talking to the directory, in words its administrator can act on. */
function explain(error: unknown, timeoutSeconds: number, step: string): SsoError {
  if (error instanceof SsoError) return error;
  const { code, message } = error as { code?: unknown; message?: unknown };
  const text = String(message ?? error);
  if (/timeout/i.test(text))
    return new SsoError('ldap_timeout', `The directory did not answer within ${timeoutSeconds} s (${step}).`);
  if (typeof code === 'string' && /^(ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ECONNRESET|ETIMEDOUT)$/.test(code))
    return new SsoError('ldap_unreachable', `The directory could not be reached (${code}).`);
  if (/certificate|self[- ]signed|altname|verify/i.test(text))
    return new SsoError(
      'ldap_certificate',
      `The directory's certificate was refused: ${text}. Give the CA that signed it, and use the name the certificate is for.`,
    );
  return new SsoError('ldap_error', `The directory refused ${step}: ${text.slice(0, 200)}`);
}

export function createLdapDirectory(options: { timeoutSeconds: number; tls?: BackingTls }) {
  const { timeoutSeconds } = options;
  const ms = timeoutSeconds * 1000;

  /** A connection with TLS up and the certificate verified, before anything else is sent. */
  async function connect(config: LdapConfig): Promise<Client> {
    const url = new URL(config.url);
    // The connection's own CA first, else the backing-services CA (NET-4); verified unless the
    // operator named `ldap` in BULWARK_TLS_INSECURE_SKIP_VERIFY.
    const sharedCa = options.tls?.caPem('ldap');
    const ca = config.caPem ?? sharedCa;
    const tlsOptions = {
      ...(ca ? { ca: [ca] } : {}),
      rejectUnauthorized: options.tls?.verifies('ldap') ?? true,
      minVersion: 'TLSv1.2' as const,
    };
    const client = new Client({
      url: config.url,
      timeout: ms,
      connectTimeout: ms,
      ...(url.protocol === 'ldaps:' ? { tlsOptions } : {}),
    });
    try {
      if (url.protocol === 'ldap:') await client.startTLS(tlsOptions);
      return client;
    } catch (error) {
      await client.unbind().catch(() => undefined);
      throw explain(error, timeoutSeconds, 'TLS');
    }
  }

  async function asServiceAccount(config: LdapConfig): Promise<Client> {
    const client = await connect(config);
    try {
      await client.bind(config.bindDn, config.bindPassword);
      return client;
    } catch (error) {
      await client.unbind().catch(() => undefined);
      if (error instanceof InvalidCredentialsError)
        throw new SsoError(
          'ldap_service_account_refused',
          "The directory refused the service account's DN or password; an administrator must fix the connection.",
        );
      throw explain(error, timeoutSeconds, "the service account's bind");
    }
  }

  async function groupsOf(client: Client, config: LdapConfig, dn: string): Promise<string[]> {
    if (!config.groupBaseDn) return [];
    const { searchEntries } = await client.search(config.groupBaseDn, {
      scope: 'sub',
      filter: new EqualityFilter({ attribute: 'member', value: dn }),
      attributes: [config.groupNameAttribute],
      sizeLimit: 500,
    });
    return searchEntries
      .map((entry) => first(entry[config.groupNameAttribute]))
      .filter((g): g is string => !!g);
  }

  return {
    /** The person a name and password prove, or `LdapInvalidCredentialsError`. */
    async authenticate(config: LdapConfig, username: string, password: string): Promise<LdapProof> {
      if (password.length === 0 || username.trim().length === 0) throw new LdapInvalidCredentialsError();
      const service = await asServiceAccount(config);
      try {
        const { searchEntries } = await service
          .search(config.userBaseDn, {
            scope: 'sub',
            // A structure sent as such, not a string the directory parses: nothing in the name is syntax.
            filter: new AndFilter({
              filters: [
                new EqualityFilter({ attribute: config.loginAttribute, value: username.trim() }),
                new PresenceFilter({ attribute: 'objectClass' }),
              ],
            }),
            attributes: [config.emailAttribute, config.nameAttribute, 'entryUUID', 'objectGUID'],
            sizeLimit: 2,
          })
          .catch((error: unknown) => {
            throw explain(error, timeoutSeconds, 'the search for the person');
          });
        // None, or a name that is not one person's: nobody signs in with it.
        if (searchEntries.length !== 1) throw new LdapInvalidCredentialsError();
        const entry = searchEntries[0]!;
        const person = await connect(config);
        try {
          await person.bind(entry.dn, password);
        } catch (error) {
          if (error instanceof InvalidCredentialsError) throw new LdapInvalidCredentialsError();
          throw explain(error, timeoutSeconds, "the person's bind");
        } finally {
          await person.unbind().catch(() => undefined);
        }
        const groups = await groupsOf(service, config, entry.dn).catch((error: unknown) => {
          throw explain(error, timeoutSeconds, 'the search for groups');
        });
        const email = first(entry[config.emailAttribute]);
        const name = first(entry[config.nameAttribute]);
        return {
          issuer: ldapIssuer(config),
          // The directory's own stable id (OpenLDAP entryUUID, AD objectGUID): a renamed person stays linked.
          subject: first(entry.entryUUID) ?? first(entry.objectGUID) ?? entry.dn,
          claims: { ...(email ? { email } : {}), ...(name ? { name } : {}) },
          groups,
        };
      } finally {
        await service.unbind().catch(() => undefined);
      }
    },

    /**
     * MFA-5 for a directory session: the person the identity names (its entryUUID, objectGUID or DN)
     * proves their password again by binding as themselves.
     */
    async reauthenticate(config: LdapConfig, subject: string, password: string): Promise<void> {
      if (password.length === 0) throw new LdapInvalidCredentialsError();
      const service = await asServiceAccount(config);
      let dn: string | undefined;
      try {
        const filter = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(subject)
          ? new EqualityFilter({ attribute: 'entryUUID', value: subject })
          : /^[0-9a-f]{32}$/i.test(subject)
            ? new EqualityFilter({ attribute: 'objectGUID', value: Buffer.from(subject, 'hex') })
            : undefined;
        const { searchEntries } = await service
          .search(filter ? config.userBaseDn : subject, {
            scope: filter ? 'sub' : 'base',
            ...(filter ? { filter } : {}),
            attributes: ['objectClass'],
            sizeLimit: 2,
          })
          .catch((error: unknown) => {
            throw explain(error, timeoutSeconds, 'the search for the person');
          });
        if (searchEntries.length !== 1) throw new LdapInvalidCredentialsError();
        dn = searchEntries[0]!.dn;
      } finally {
        await service.unbind().catch(() => undefined);
      }
      const person = await connect(config);
      try {
        await person.bind(dn, password);
      } catch (error) {
        if (error instanceof InvalidCredentialsError) throw new LdapInvalidCredentialsError();
        throw explain(error, timeoutSeconds, "the person's bind");
      } finally {
        await person.unbind().catch(() => undefined);
      }
    },

    /** Tries the connection as a sign-in would: TLS, the service account, the people's base. */
    async test(config: LdapConfig): Promise<{ ok: boolean; problem?: string; issuer?: string }> {
      try {
        const service = await asServiceAccount(config);
        try {
          await service
            .search(config.userBaseDn, { scope: 'base', attributes: ['objectClass'] })
            .catch((error: unknown) => {
              throw explain(error, timeoutSeconds, `a read of ${config.userBaseDn}`);
            });
          return { ok: true, issuer: ldapIssuer(config) };
        } finally {
          await service.unbind().catch(() => undefined);
        }
      } catch (error) {
        return { ok: false, problem: (error as Error).message };
      }
    },
  };
}

export type LdapDirectory = ReturnType<typeof createLdapDirectory>;
