import { useState } from 'react';
import { api, orgPath } from '../api';
import { FormDialog } from '../components/dialog-form';
import { RoleSelectField, useMemberList, useRoles } from '../components/fields';
import { ConfirmDialog, CopyButton, ErrorNote, Field, InputField, Loaded, useLoad } from '../components/ui';

/**
 * The organization's identity-provider connections and whether SSO is required (SSO-4, AUTH-8), on
 * the Security page for those who manage security configuration. The client secret is sent once and
 * never shown again; "Test" asks the provider now and says what is wrong in words.
 */

interface ConnectionView {
  id: string;
  name: string;
  enabled: boolean;
  config: { issuer: string; clientId: string; defaultRole: string; requiredAmr: string[] };
}

interface Enforcement {
  ssoRequired: boolean;
  breakGlassUserId: string | null;
}

export function SsoSettings({ org }: { org: string }) {
  const connections = useLoad(
    () => api<{ connections: ConnectionView[] }>('GET', orgPath(org, '/sso/connections')),
    [org],
  );
  const enforcement = useLoad(() => api<Enforcement>('GET', orgPath(org, '/sso/enforcement')), [org]);
  const [adding, setAdding] = useState(false);
  const [removing, setRemoving] = useState<ConnectionView | undefined>();
  const [tested, setTested] = useState<Record<string, string>>({});
  const [testError, setTestError] = useState<unknown>();
  const callbackOf = (connection: ConnectionView) =>
    `${window.location.origin}/api/auth/sso/oidc/${connection.id}/callback`;

  const test = async (connection: ConnectionView) => {
    setTestError(undefined);
    try {
      const result = await api<{ ok: boolean; problem?: string }>(
        'POST',
        orgPath(org, `/sso/connections/${connection.id}/test`),
      );
      setTested((all) => ({
        ...all,
        [connection.id]: result.ok
          ? 'Works: the provider answered as it should.'
          : (result.problem ?? 'Failed.'),
      }));
    } catch (failure) {
      setTestError(failure);
    }
  };

  return (
    <section aria-labelledby="sso-settings-heading">
      <h2 id="sso-settings-heading">Single sign-on</h2>
      <p>
        Register Bulwark at your identity provider as a web application. Each connection has its own redirect
        URI, shown below once it is connected: add it at the provider.
      </p>
      <ErrorNote error={connections.error ?? testError} />
      <Loaded load={connections} what="the connections">
        {(data) => (
          <>
            {data.connections.length === 0 && <p>No identity provider is connected.</p>}
            <ul className="plain">
              {data.connections.map((connection) => (
                <li key={connection.id}>
                  <strong>{connection.name}</strong> — {connection.config.issuer} (client{' '}
                  {connection.config.clientId}), new members join as {connection.config.defaultRole}
                  {connection.config.requiredAmr.includes('mfa') &&
                    ', a second factor at the provider required'}
                  <button type="button" onClick={() => void test(connection)}>
                    Test {connection.name}
                  </button>
                  <button type="button" className="danger" onClick={() => setRemoving(connection)}>
                    Remove {connection.name}
                  </button>
                  <p>
                    Redirect URI: <code>{callbackOf(connection)}</code>{' '}
                    <CopyButton
                      text={callbackOf(connection)}
                      label={`Copy the redirect URI of ${connection.name}`}
                    />
                  </p>
                  {tested[connection.id] && <p role="status">{tested[connection.id]}</p>}
                </li>
              ))}
            </ul>
          </>
        )}
      </Loaded>
      <button type="button" className="primary" onClick={() => setAdding(true)}>
        Connect an identity provider
      </button>
      <Loaded load={enforcement} what="whether SSO is required">
        {(state) => <EnforcementControl org={org} state={state} onChanged={enforcement.reload} />}
      </Loaded>
      {adding && (
        <AddConnection
          org={org}
          onClose={() => setAdding(false)}
          onAdded={() => {
            setAdding(false);
            connections.reload();
          }}
        />
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

function AddConnection(props: { org: string; onClose: () => void; onAdded: () => void }) {
  const roles = useRoles(props.org);
  const [name, setName] = useState('');
  const [issuer, setIssuer] = useState('');
  const [clientId, setClientId] = useState('');
  const [clientSecret, setClientSecret] = useState('');
  const [defaultRole, setDefaultRole] = useState('viewer');
  const [requireMfa, setRequireMfa] = useState(false);
  return (
    <FormDialog
      title="Connect an identity provider"
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
      <InputField
        label="Name"
        hint="What the sign-in page shows: Sign in with …"
        value={name}
        onValue={setName}
        required
      />
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
      <Loaded load={roles} what="the roles">
        {(data) => (
          <RoleSelectField
            hint="The role of someone who signs in for the first time"
            roles={data.roles}
            value={defaultRole}
            onValue={setDefaultRole}
          />
        )}
      </Loaded>
      <Field label="Require a second factor at the provider" hint="The provider must report amr mfa">
        {(id, describedBy) => (
          <input
            id={id}
            type="checkbox"
            aria-describedby={describedBy}
            checked={requireMfa}
            onChange={(event) => setRequireMfa(event.target.checked)}
          />
        )}
      </Field>
    </FormDialog>
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
