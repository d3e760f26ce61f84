import { type ReactNode, useState } from 'react';
import { api, orgPath } from '../api';
import { FormDialog } from '../components/dialog-form';
import { RoleSelectField, useMemberList, useRoles } from '../components/fields';
import {
  ConfirmDialog,
  CopyButton,
  ErrorNote,
  Field,
  InputField,
  Loaded,
  messageOf,
  useLoad,
  When,
} from '../components/ui';

/**
 * The organization's sign-in connections (SSO-1 OIDC, SSO-2 SAML, SSO-3 LDAP), the email domains
 * it has verified (a sign-in that starts from an address at one of them comes here), and whether SSO
 * is required (SSO-4, AUTH-8): on the Security page for those who manage security configuration.
 * Secrets (client secret, service account password) are sent once and never shown again; "Test"
 * asks the provider or directory now and says what is wrong in words.
 */

interface ConnectionFields {
  id: string;
  name: string;
  enabled: boolean;
  createdAt: string;
  updatedAt: string;
}

interface OidcConnection extends ConnectionFields {
  kind: 'oidc';
  config: { issuer: string; clientId: string; defaultRole: string; requiredAmr: string[] };
}

interface LdapConnection extends ConnectionFields {
  kind: 'ldap';
  config: {
    url: string;
    caPem: string | null;
    bindDn: string;
    userBaseDn: string;
    loginAttribute: string;
    groupBaseDn: string | null;
    defaultRole: string;
  };
}

interface SamlConnection extends ConnectionFields {
  kind: 'saml';
  config: {
    idpEntityId: string;
    idpSsoUrl: string;
    idpCertificates: string[];
    allowIdpInitiated: boolean;
    defaultRole: string;
  };
}

type ConnectionView = OidcConnection | LdapConnection | SamlConnection;

interface Enforcement {
  ssoRequired: boolean;
  breakGlassUserId: string | null;
}

interface DomainView {
  domain: string;
  verified: boolean;
  verifiedAt: string | null;
  txtName: string;
  txtValue: string;
}

type Adding = 'oidc' | 'ldap' | 'saml';

const KIND_NAMES: Record<ConnectionView['kind'], string> = {
  oidc: 'OpenID Connect',
  ldap: 'LDAP directory',
  saml: 'SAML 2.0',
};

export function SsoSettings({ org }: { org: string }) {
  const connections = useLoad(
    () => api<{ connections: ConnectionView[] }>('GET', orgPath(org, '/sso/connections')),
    [org],
  );
  const enforcement = useLoad(() => api<Enforcement>('GET', orgPath(org, '/sso/enforcement')), [org]);
  const [adding, setAdding] = useState<Adding | undefined>();
  const [removing, setRemoving] = useState<ConnectionView | undefined>();
  const [tested, setTested] = useState<Record<string, string>>({});
  const [testError, setTestError] = useState<unknown>();

  const test = async (connection: ConnectionView) => {
    setTestError(undefined);
    try {
      const result = await api<{ ok: boolean; problem?: string }>(
        'POST',
        orgPath(org, `/sso/connections/${connection.id}/test`),
      );
      const who = connection.kind === 'ldap' ? 'the directory' : 'the provider';
      setTested((all) => ({
        ...all,
        [connection.id]: result.ok ? `Works: ${who} answered as it should.` : (result.problem ?? 'Failed.'),
      }));
    } catch (failure) {
      setTestError(failure);
    }
  };
  const added = () => {
    setAdding(undefined);
    connections.reload();
  };

  return (
    <section aria-labelledby="sso-settings-heading">
      <h2 id="sso-settings-heading">Single sign-on</h2>
      <p>
        Connect your identity provider (OpenID Connect or SAML 2.0) or your LDAP / Active Directory directory.
        Each OpenID Connect or SAML connection has its own addresses, shown below once it is connected:
        register them at the provider.
      </p>
      <ErrorNote error={connections.error ?? testError} />
      <Loaded load={connections} what="the connections">
        {(data) => (
          <>
            {data.connections.length === 0 && <p>No identity provider or directory is connected.</p>}
            <ul className="plain">
              {data.connections.map((connection) => (
                <li key={connection.id}>
                  <strong>{connection.name}</strong> ({KIND_NAMES[connection.kind]}), new members join as{' '}
                  {connection.config.defaultRole}
                  <button type="button" onClick={() => void test(connection)}>
                    Test {connection.name}
                  </button>
                  <button type="button" className="danger" onClick={() => setRemoving(connection)}>
                    Remove {connection.name}
                  </button>
                  <ConnectionDetails connection={connection} />
                  {tested[connection.id] && <p role="status">{tested[connection.id]}</p>}
                </li>
              ))}
            </ul>
          </>
        )}
      </Loaded>
      <div className="actions">
        <button type="button" className="primary" onClick={() => setAdding('oidc')}>
          Connect an identity provider (OpenID Connect)
        </button>
        <button type="button" onClick={() => setAdding('saml')}>
          Connect a SAML identity provider
        </button>
        <button type="button" onClick={() => setAdding('ldap')}>
          Connect a directory (LDAP)
        </button>
      </div>
      <EmailDomains org={org} />
      <section aria-labelledby="sso-enforcement-heading">
        <h3 id="sso-enforcement-heading">Require SSO</h3>
        <Loaded load={enforcement} what="whether SSO is required">
          {(state) => <EnforcementControl org={org} state={state} onChanged={enforcement.reload} />}
        </Loaded>
      </section>
      {adding === 'oidc' && (
        <AddOidcConnection org={org} onClose={() => setAdding(undefined)} onAdded={added} />
      )}
      {adding === 'ldap' && (
        <AddLdapConnection org={org} onClose={() => setAdding(undefined)} onAdded={added} />
      )}
      {adding === 'saml' && (
        <AddSamlConnection org={org} onClose={() => setAdding(undefined)} onAdded={added} />
      )}
      {removing && (
        <ConfirmDialog
          title={`Remove ${removing.name}`}
          confirmLabel="Remove it"
          danger
          onClose={() => setRemoving(undefined)}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/sso/connections/${removing.id}`));
            setRemoving(undefined);
            connections.reload();
          }}
        >
          <p>People who sign in through it will no longer be able to. Their accounts stay.</p>
        </ConfirmDialog>
      )}
    </section>
  );
}

/** An address to give the provider, with a button to copy it. */
function Address(props: { label: string; value: string; of: string }) {
  return (
    <p>
      {props.label}: <code>{props.value}</code>{' '}
      <CopyButton text={props.value} label={`Copy the ${props.label} of ${props.of}`} />
    </p>
  );
}

function Summary({ rows }: { rows: Array<[string, ReactNode]> }) {
  return (
    <dl className="summary">
      {rows.map(([term, value]) => (
        <div key={term}>
          <dt>{term}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

/** What each kind of connection is set up with, and what to register at the provider. */
function ConnectionDetails({ connection }: { connection: ConnectionView }) {
  const origin = window.location.origin;
  switch (connection.kind) {
    case 'oidc':
      return (
        <>
          <Summary
            rows={[
              ['Issuer', connection.config.issuer],
              ['Client ID', connection.config.clientId],
              [
                'Second factor at the provider',
                connection.config.requiredAmr.includes('mfa') ? 'required' : 'not required',
              ],
            ]}
          />
          <Address
            label="redirect URI"
            value={`${origin}/api/auth/sso/oidc/${connection.id}/callback`}
            of={connection.name}
          />
        </>
      );
    case 'ldap':
      return (
        <>
          <Summary
            rows={[
              ['Directory', connection.config.url],
              ['Service account', connection.config.bindDn],
              ['People under', connection.config.userBaseDn],
              ['User name attribute', connection.config.loginAttribute],
              ['Groups under', connection.config.groupBaseDn ?? 'no groups read'],
              [
                'Certificate authority',
                connection.config.caPem ? 'its own (given here)' : "the system's trusted authorities",
              ],
            ]}
          />
          <p className="muted">
            Nothing to register: people type their directory user name and password here.
          </p>
        </>
      );
    case 'saml':
      return (
        <>
          <Summary
            rows={[
              ['IdP entity ID', connection.config.idpEntityId],
              ['IdP sign-in URL', connection.config.idpSsoUrl],
              ['IdP signing certificates', String(connection.config.idpCertificates.length)],
              [
                'Sign-ins started at the IdP',
                connection.config.allowIdpInitiated ? 'accepted' : 'refused (only sign-ins started here)',
              ],
            ]}
          />
          <Address
            label="SP entity ID"
            value={`${origin}/api/auth/sso/saml/${connection.id}/metadata`}
            of={connection.name}
          />
          <Address
            label="ACS URL"
            value={`${origin}/api/auth/sso/saml/${connection.id}/acs`}
            of={connection.name}
          />
        </>
      );
  }
}

interface AddProps {
  org: string;
  onClose: () => void;
  onAdded: () => void;
}

/** The role of someone who signs in for the first time through a connection. */
function DefaultRoleField(props: { org: string; value: string; onValue: (role: string) => void }) {
  const roles = useRoles(props.org);
  return (
    <Loaded load={roles} what="the roles">
      {(data) => (
        <RoleSelectField
          hint="The role of someone who signs in for the first time"
          roles={data.roles}
          value={props.value}
          onValue={props.onValue}
        />
      )}
    </Loaded>
  );
}

function CheckboxField(props: {
  label: string;
  hint?: string;
  checked: boolean;
  onChecked: (on: boolean) => void;
}) {
  return (
    <Field label={props.label} hint={props.hint}>
      {(id, describedBy) => (
        <input
          id={id}
          type="checkbox"
          aria-describedby={describedBy}
          checked={props.checked}
          onChange={(event) => props.onChecked(event.target.checked)}
        />
      )}
    </Field>
  );
}

function TextAreaField(props: {
  label: string;
  hint?: string;
  rows: number;
  value: string;
  onValue: (value: string) => void;
  required?: boolean;
}) {
  return (
    <Field label={props.label} hint={props.hint}>
      {(id, describedBy) => (
        <textarea
          id={id}
          aria-describedby={describedBy}
          rows={props.rows}
          spellCheck={false}
          value={props.value}
          required={props.required}
          onChange={(event) => props.onValue(event.target.value)}
        />
      )}
    </Field>
  );
}

const NAME_HINT = 'What the sign-in page shows: Sign in with …';

function AddOidcConnection(props: AddProps) {
  const [name, setName] = useState('');
  const [issuer, setIssuer] = useState('');
  const [clientId, setClientId] = useState('');
  const [clientSecret, setClientSecret] = useState('');
  const [defaultRole, setDefaultRole] = useState('viewer');
  const [requireMfa, setRequireMfa] = useState(false);
  return (
    <FormDialog
      title="Connect an identity provider (OpenID Connect)"
      submitLabel="Connect"
      onClose={props.onClose}
      onSubmit={async () => {
        await api('POST', orgPath(props.org, '/sso/connections'), {
          name,
          kind: 'oidc',
          config: { issuer, clientId, clientSecret, defaultRole, requiredAmr: requireMfa ? ['mfa'] : [] },
        });
        props.onAdded();
      }}
    >
      <InputField label="Name" hint={NAME_HINT} value={name} onValue={setName} required />
      <InputField
        label="Issuer URL"
        hint="For example https://acme.okta.com"
        type="url"
        value={issuer}
        onValue={setIssuer}
        required
      />
      <InputField label="Client ID" value={clientId} onValue={setClientId} required />
      <InputField
        label="Client secret"
        hint="Sealed and never shown again"
        type="password"
        autoComplete="off"
        value={clientSecret}
        onValue={setClientSecret}
        required
      />
      <DefaultRoleField org={props.org} value={defaultRole} onValue={setDefaultRole} />
      <CheckboxField
        label="Require a second factor at the provider"
        hint="The provider must report amr mfa"
        checked={requireMfa}
        onChecked={setRequireMfa}
      />
    </FormDialog>
  );
}

function AddLdapConnection(props: AddProps) {
  const [name, setName] = useState('');
  const [url, setUrl] = useState('');
  const [caPem, setCaPem] = useState('');
  const [bindDn, setBindDn] = useState('');
  const [bindPassword, setBindPassword] = useState('');
  const [userBaseDn, setUserBaseDn] = useState('');
  const [loginAttribute, setLoginAttribute] = useState('uid');
  const [emailAttribute, setEmailAttribute] = useState('mail');
  const [nameAttribute, setNameAttribute] = useState('cn');
  const [groupBaseDn, setGroupBaseDn] = useState('');
  const [groupNameAttribute, setGroupNameAttribute] = useState('cn');
  const [defaultRole, setDefaultRole] = useState('viewer');
  return (
    <FormDialog
      title="Connect a directory (LDAP)"
      submitLabel="Connect"
      onClose={props.onClose}
      onSubmit={async () => {
        await api('POST', orgPath(props.org, '/sso/connections'), {
          name,
          kind: 'ldap',
          config: {
            url: url.trim(),
            caPem: caPem.trim() || null,
            bindDn,
            bindPassword,
            userBaseDn,
            loginAttribute: loginAttribute.trim(),
            emailAttribute: emailAttribute.trim(),
            nameAttribute: nameAttribute.trim(),
            groupBaseDn: groupBaseDn.trim() || null,
            groupNameAttribute: groupNameAttribute.trim(),
            defaultRole,
          },
        });
        props.onAdded();
      }}
    >
      <InputField label="Name" hint={NAME_HINT} value={name} onValue={setName} required />
      <InputField
        label="Directory URL"
        hint="ldaps://ldap.example.com:636, or ldap://…:389, which is always upgraded with StartTLS"
        value={url}
        onValue={setUrl}
        required
      />
      <TextAreaField
        label="Certificate authority (PEM)"
        hint="Only when the directory's certificate is signed by an authority this server does not trust"
        rows={4}
        value={caPem}
        onValue={setCaPem}
      />
      <InputField
        label="Service account DN"
        hint="The account that looks people up, for example cn=bulwark,ou=services,dc=example,dc=com"
        autoComplete="off"
        value={bindDn}
        onValue={setBindDn}
        required
      />
      <InputField
        label="Service account password"
        hint="Sealed and never shown again"
        type="password"
        autoComplete="off"
        value={bindPassword}
        onValue={setBindPassword}
        required
      />
      <InputField
        label="People base DN"
        hint="Where people are found, for example ou=people,dc=example,dc=com"
        value={userBaseDn}
        onValue={setUserBaseDn}
        required
      />
      <DefaultRoleField org={props.org} value={defaultRole} onValue={setDefaultRole} />
      <details>
        <summary>Attributes and groups</summary>
        <InputField
          label="User name attribute"
          hint="uid (OpenLDAP), sAMAccountName or userPrincipalName (Active Directory)"
          value={loginAttribute}
          onValue={setLoginAttribute}
          required
        />
        <InputField label="Email attribute" value={emailAttribute} onValue={setEmailAttribute} required />
        <InputField
          label="Display name attribute"
          value={nameAttribute}
          onValue={setNameAttribute}
          required
        />
        <InputField
          label="Groups base DN"
          hint="Where the groups a person is a member of are found; empty: groups are not read"
          value={groupBaseDn}
          onValue={setGroupBaseDn}
        />
        <InputField
          label="Group name attribute"
          value={groupNameAttribute}
          onValue={setGroupNameAttribute}
          required
        />
      </details>
    </FormDialog>
  );
}

function AddSamlConnection(props: AddProps) {
  const [name, setName] = useState('');
  const [metadataXml, setMetadataXml] = useState('');
  const [defaultRole, setDefaultRole] = useState('viewer');
  const [allowIdpInitiated, setAllowIdpInitiated] = useState(false);
  const [emailAttribute, setEmailAttribute] = useState('email');
  const [nameAttribute, setNameAttribute] = useState('name');
  const [groupsAttribute, setGroupsAttribute] = useState('groups');
  return (
    <FormDialog
      title="Connect a SAML identity provider"
      submitLabel="Connect"
      onClose={props.onClose}
      onSubmit={async () => {
        await api('POST', orgPath(props.org, '/sso/connections'), {
          name,
          kind: 'saml',
          config: {
            metadataXml,
            defaultRole,
            allowIdpInitiated,
            emailAttribute: emailAttribute.trim(),
            nameAttribute: nameAttribute.trim(),
            groupsAttribute: groupsAttribute.trim(),
          },
        });
        props.onAdded();
      }}
    >
      <p>
        Once it is connected, register the SP entity ID and ACS URL shown beside it at your identity provider.
      </p>
      <InputField label="Name" hint={NAME_HINT} value={name} onValue={setName} required />
      <TextAreaField
        label="IdP metadata XML"
        hint="Paste the metadata your identity provider publishes: its entity ID, sign-in URL and signing certificates"
        rows={8}
        value={metadataXml}
        onValue={setMetadataXml}
        required
      />
      <DefaultRoleField org={props.org} value={defaultRole} onValue={setDefaultRole} />
      <CheckboxField
        label="Accept sign-ins started at the identity provider"
        hint="IdP-initiated: a response nobody asked for here. Off, only sign-ins started from this sign-in page are accepted, which stops a stolen or forwarded response being used"
        checked={allowIdpInitiated}
        onChecked={setAllowIdpInitiated}
      />
      <details>
        <summary>Attributes</summary>
        <InputField label="Email attribute" value={emailAttribute} onValue={setEmailAttribute} required />
        <InputField
          label="Display name attribute"
          value={nameAttribute}
          onValue={setNameAttribute}
          required
        />
        <InputField label="Groups attribute" value={groupsAttribute} onValue={setGroupsAttribute} required />
      </details>
    </FormDialog>
  );
}

/**
 * The email domains the organization claims. A domain counts once its TXT record is found in DNS;
 * then a sign-in that starts from an address at it is sent to this organization's connections.
 */
function EmailDomains({ org }: { org: string }) {
  const domains = useLoad(() => api<{ domains: DomainView[] }>('GET', orgPath(org, '/sso/domains')), [org]);
  const [domain, setDomain] = useState('');
  const [adding, setAdding] = useState(false);
  const [addError, setAddError] = useState<unknown>();
  const [results, setResults] = useState<Record<string, { ok: boolean; text: string }>>({});
  const [verifying, setVerifying] = useState<string | undefined>();
  const [removing, setRemoving] = useState<string | undefined>();

  const add = async () => {
    setAdding(true);
    setAddError(undefined);
    try {
      await api<DomainView>('POST', orgPath(org, '/sso/domains'), { domain: domain.trim() });
      setDomain('');
      domains.reload();
    } catch (failure) {
      setAddError(failure);
    } finally {
      setAdding(false);
    }
  };
  const verify = async (name: string) => {
    setVerifying(name);
    setResults(({ [name]: _, ...others }) => others);
    try {
      await api<DomainView>('POST', orgPath(org, `/sso/domains/${encodeURIComponent(name)}/verify`));
      setResults((all) => ({
        ...all,
        [name]: {
          ok: true,
          text: `Verified: sign-ins that start from an address at ${name} now come to this organization.`,
        },
      }));
      domains.reload();
    } catch (failure) {
      setResults((all) => ({ ...all, [name]: { ok: false, text: messageOf(failure) } }));
    } finally {
      setVerifying(undefined);
    }
  };

  return (
    <section aria-labelledby="sso-domains-heading">
      <h3 id="sso-domains-heading">Verified email domains</h3>
      <p>
        Claim your email domains so that people who type their work email address on the sign-in page are
        offered this organization's sign-in. Publish the TXT record shown in your domain's DNS, then verify.
      </p>
      <ErrorNote error={domains.error} />
      <Loaded load={domains} what="the domains">
        {(data) => (
          <>
            {data.domains.length === 0 && <p>No domain is claimed.</p>}
            <ul className="plain">
              {data.domains.map((entry) => (
                <li key={entry.domain}>
                  <strong>{entry.domain}</strong>{' '}
                  {entry.verified ? (
                    <>
                      verified <When at={entry.verifiedAt} />
                    </>
                  ) : (
                    'not verified yet'
                  )}
                  {!entry.verified && (
                    <button
                      type="button"
                      className="primary"
                      disabled={verifying === entry.domain}
                      onClick={() => void verify(entry.domain)}
                    >
                      Verify {entry.domain}
                    </button>
                  )}
                  <button type="button" className="danger" onClick={() => setRemoving(entry.domain)}>
                    Remove {entry.domain}
                  </button>
                  {!entry.verified && (
                    <>
                      <p>Publish this TXT record in the DNS of {entry.domain}:</p>
                      <Address label="TXT record name" value={entry.txtName} of={entry.domain} />
                      <Address label="TXT record value" value={entry.txtValue} of={entry.domain} />
                    </>
                  )}
                  {results[entry.domain] && (
                    <p
                      role={results[entry.domain]?.ok ? 'status' : 'alert'}
                      className={results[entry.domain]?.ok ? 'notice ok' : 'notice error'}
                    >
                      {results[entry.domain]?.text}
                    </p>
                  )}
                </li>
              ))}
            </ul>
          </>
        )}
      </Loaded>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void add();
        }}
      >
        <InputField
          label="Email domain"
          hint="For example example.com"
          autoComplete="off"
          value={domain}
          onValue={setDomain}
          required
        />
        <ErrorNote error={addError} />
        <button type="submit" disabled={adding}>
          Add domain
        </button>
      </form>
      {removing && (
        <ConfirmDialog
          title={`Remove ${removing}`}
          confirmLabel="Remove it"
          danger
          onClose={() => setRemoving(undefined)}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/sso/domains/${encodeURIComponent(removing)}`));
            setRemoving(undefined);
            setResults(({ [removing]: _, ...others }) => others);
            domains.reload();
          }}
        >
          <p>
            Sign-ins that start from an address at {removing} will no longer be sent to this organization. Its
            members and their accounts stay.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}

function EnforcementControl(props: { org: string; state: Enforcement; onChanged: () => void }) {
  const { members, emailOf } = useMemberList(props.org);
  const owners = members.data?.members.filter((member) => member.role === 'owner') ?? [];
  const [breakGlass, setBreakGlass] = useState(props.state.breakGlassUserId ?? '');
  const [error, setError] = useState<unknown>();
  const change = async (ssoRequired: boolean) => {
    setError(undefined);
    try {
      await api('PUT', orgPath(props.org, '/sso/enforcement'), {
        ssoRequired,
        breakGlassUserId: ssoRequired ? breakGlass || null : null,
      });
      props.onChanged();
    } catch (failure) {
      setError(failure);
    }
  };
  if (props.state.ssoRequired)
    return (
      <div>
        <p>
          <strong>SSO required.</strong> Members sign in through the identity provider; the break-glass owner{' '}
          {props.state.breakGlassUserId ? emailOf(props.state.breakGlassUserId) : ''} can still sign in with a
          password and a second factor, and each such sign-in is recorded as critical.
        </p>
        <button type="button" className="danger" onClick={() => void change(false)}>
          Stop requiring SSO
        </button>
        <ErrorNote error={error} />
      </div>
    );
  return (
    <div>
      <Field label="Break-glass owner" hint="An owner with a second factor, for the day the provider is down">
        {(id, describedBy) => (
          <select
            id={id}
            aria-describedby={describedBy}
            value={breakGlass}
            onChange={(e) => setBreakGlass(e.target.value)}
          >
            <option value="">Choose an owner</option>
            {owners.map((owner) => (
              <option key={owner.id} value={owner.id}>
                {owner.email}
              </option>
            ))}
          </select>
        )}
      </Field>
      <button type="button" className="primary" onClick={() => void change(true)}>
        Require SSO
      </button>
      <ErrorNote error={error} />
    </div>
  );
}
