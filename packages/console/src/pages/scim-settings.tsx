import { useState } from 'react';
import { api, orgPath } from '../api';
import { ShownOnceDialog } from '../components/dialog-form';
import { RoleSelectField, useRoles } from '../components/fields';
import { ConfirmDialog, CopyButton, ErrorNote, Loaded, useLoad, When } from '../components/ui';

/**
 * SCIM 2.0 provisioning (SSO-5), on the Security page for those who manage security configuration:
 * the identity provider creates, updates and removes members and teams with the organization's SCIM
 * token. Turning it on or rotating shows the new token once; rotating stops the old one at once.
 */

interface ScimSettingsView {
  enabled: boolean;
  baseUrl: string;
  tokenHint: string | null;
  defaultRole: string;
  groupRoles: Array<{ group: string; role: string }>;
  rotatedAt: string | null;
  lastUsedAt: string | null;
}

interface WithToken {
  settings: ScimSettingsView;
  token?: string;
}

export function ScimSettings({ org }: { org: string }) {
  const settings = useLoad(() => api<ScimSettingsView>('GET', orgPath(org, '/scim')), [org]);
  const roles = useRoles(org);
  // Undefined: the role the server holds, until the person picks another.
  const [defaultRole, setDefaultRole] = useState<string | undefined>();
  const [token, setToken] = useState<string | undefined>();
  const [confirming, setConfirming] = useState<'rotate' | 'off' | undefined>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [saved, setSaved] = useState(false);
  const current = settings.data;

  /** Turns SCIM on (the answer holds the first token) or saves its default role. */
  const configure = async () => {
    if (!current) return;
    setBusy(true);
    setError(undefined);
    setSaved(false);
    try {
      const result = await api<WithToken>('PUT', orgPath(org, '/scim'), {
        defaultRole: defaultRole ?? current.defaultRole,
        groupRoles: current.groupRoles,
      });
      if (result.token) setToken(result.token);
      else setSaved(true);
      settings.reload();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="scim-heading">
      <h2 id="scim-heading">SCIM provisioning</h2>
      <p>
        Your identity provider (Okta, Entra ID, …) can create, update and remove members and teams here with
        SCIM 2.0. Give it the base URL and the token below.
      </p>
      <ErrorNote error={settings.error ?? error} />
      <Loaded load={settings} what="the SCIM settings">
        {(data) => (
          <>
            <dl className="summary">
              <div>
                <dt>Status</dt>
                <dd>{data.enabled ? 'On' : 'Off'}</dd>
              </div>
              <div>
                <dt>Base URL</dt>
                <dd>
                  <code>{data.baseUrl}</code>{' '}
                  <CopyButton text={data.baseUrl} label="Copy the SCIM base URL" />
                </dd>
              </div>
              {data.enabled && (
                <>
                  <div>
                    <dt>Token</dt>
                    <dd>
                      <code>{data.tokenHint}…</code> (made <When at={data.rotatedAt} />)
                    </dd>
                  </div>
                  <div>
                    <dt>Last used</dt>
                    <dd>
                      <When at={data.lastUsedAt} />
                    </dd>
                  </div>
                </>
              )}
              {data.groupRoles.length > 0 && (
                <div>
                  <dt>Group roles</dt>
                  <dd>{data.groupRoles.map((mapping) => `${mapping.group} → ${mapping.role}`).join(', ')}</dd>
                </div>
              )}
            </dl>
            <Loaded load={roles} what="the roles">
              {(list) => (
                <RoleSelectField
                  hint="The role of someone the identity provider adds, unless one of their groups gives another"
                  roles={list.roles}
                  value={defaultRole ?? data.defaultRole}
                  onValue={(role) => {
                    setSaved(false);
                    setDefaultRole(role);
                  }}
                />
              )}
            </Loaded>
            {saved && <p role="status">Saved.</p>}
            <div className="actions">
              {data.enabled ? (
                <>
                  <button type="button" disabled={busy} onClick={() => void configure()}>
                    Save the default role
                  </button>
                  <button type="button" disabled={busy} onClick={() => setConfirming('rotate')}>
                    Rotate the SCIM token
                  </button>
                  <button
                    type="button"
                    className="danger"
                    disabled={busy}
                    onClick={() => setConfirming('off')}
                  >
                    Turn off SCIM
                  </button>
                </>
              ) : (
                <button type="button" className="primary" disabled={busy} onClick={() => void configure()}>
                  Turn on SCIM
                </button>
              )}
            </div>
          </>
        )}
      </Loaded>
      {confirming === 'rotate' && (
        <ConfirmDialog
          title="Rotate the SCIM token"
          confirmLabel="Rotate it"
          danger
          onClose={() => setConfirming(undefined)}
          onConfirm={async () => {
            const result = await api<WithToken>('POST', orgPath(org, '/scim/token'));
            setToken(result.token);
            settings.reload();
          }}
        >
          <p>
            The current token stops working at once: your identity provider cannot provision anyone until you
            give it the new one, which is shown only once.
          </p>
        </ConfirmDialog>
      )}
      {confirming === 'off' && (
        <ConfirmDialog
          title="Turn off SCIM"
          confirmLabel="Turn it off"
          danger
          onClose={() => setConfirming(undefined)}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, '/scim'));
            settings.reload();
          }}
        >
          <p>
            The token stops working at once and your identity provider can no longer change anything here. The
            members and teams it made stay as they are.
          </p>
        </ConfirmDialog>
      )}
      {token && (
        <ShownOnceDialog
          title="SCIM token"
          notice={
            <>
              This token is shown only now and will not be shown again: copy it into your identity provider's
              SCIM settings (as the bearer token / API token), with the base URL.
            </>
          }
          label="SCIM token"
          value={token}
          copyLabel="Copy the SCIM token"
          onClose={() => setToken(undefined)}
        />
      )}
    </section>
  );
}
