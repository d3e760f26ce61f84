import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { ConfirmDialog, ErrorNote, Loaded, useLoad } from '../components/ui';
import { useAccess } from '../session';
import { ScimSettings } from './scim-settings';
import { SsoSettings } from './sso-settings';

/**
 * The organization's security policy (MFA-4): whether every member needs a second factor. On by
 * default; relaxing it is a deliberate, confirmed step (and the server asks for a recent sign-in).
 * Managers also find single sign-on and SCIM provisioning here.
 */

interface Policy {
  mfaRequired: boolean;
  warning: string | null;
}

export default function SecurityPage() {
  const { org = '' } = useParams();
  const canManage = useAccess().can('security_configuration:manage');
  const policy = useLoad(() => api<Policy>('GET', orgPath(org, '/security-policy')), [org]);
  const [changing, setChanging] = useState<boolean | undefined>();
  const save = async (mfaRequired: boolean) => {
    await api<Policy>('PUT', orgPath(org, '/security-policy'), { mfaRequired });
    policy.reload();
  };

  return (
    <section>
      <h1>Security</h1>
      <ErrorNote error={policy.error} />
      <Loaded load={policy} what="the security policy">
        {(data) => (
          <section aria-labelledby="mfa-policy-heading">
            <h2 id="mfa-policy-heading">Two-factor authentication</h2>
            {data.mfaRequired ? (
              <p>
                <strong>Required.</strong> Every member needs an authenticator app or a passkey; someone
                without one can only add it before working here.
              </p>
            ) : (
              <p className="notice error" role="alert">
                <strong>Not required.</strong> {data.warning}
              </p>
            )}
            {canManage && (
              <button
                type="button"
                className={data.mfaRequired ? 'danger' : 'primary'}
                onClick={() => setChanging(!data.mfaRequired)}
              >
                {data.mfaRequired
                  ? 'Stop requiring two-factor authentication'
                  : 'Require two-factor authentication'}
              </button>
            )}
          </section>
        )}
      </Loaded>
      {canManage && <SsoSettings org={org} />}
      {canManage && <ScimSettings org={org} />}
      {changing !== undefined && (
        <ConfirmDialog
          title={changing ? 'Require two-factor authentication' : 'Stop requiring two-factor authentication'}
          confirmLabel={changing ? 'Require it' : 'Stop requiring it'}
          danger={!changing}
          onClose={() => setChanging(undefined)}
          onConfirm={() => save(changing)}
        >
          <p>
            {changing
              ? 'Members without a second factor will be asked to add one before anything else here.'
              : 'Members will be able to work with a password alone: a stolen password is then enough to act in this organization. The change is recorded in the audit log.'}
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
