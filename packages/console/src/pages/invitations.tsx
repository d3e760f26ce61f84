import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { DialogForm, ShownOnceDialog } from '../components/dialog-form';
import { RoleSelectField, useRoles } from '../components/fields';
import {
  ConfirmDialog,
  ErrorNote,
  InputField,
  Loaded,
  Modal,
  StatusBadge,
  useLoad,
  When,
} from '../components/ui';
import { useAccess } from '../session';
import type { RoleView } from './roles';

interface InvitationView {
  id: string;
  email: string;
  role: string;
  status: 'pending' | 'expired' | 'accepted' | 'revoked';
  invitedBy: string;
  createdAt: string;
  expiresAt: string;
}

interface Created {
  invitation: InvitationView;
  acceptPath: string;
}

function InviteDialog(props: { org: string; roles: RoleView[]; onCreated: () => void; onClose: () => void }) {
  const [email, setEmail] = useState('');
  const [role, setRole] = useState(
    props.roles.find((r) => r.id === 'viewer')?.id ?? props.roles[0]?.id ?? '',
  );
  const [created, setCreated] = useState<Created | undefined>();

  if (created) {
    // The server's path carries the token in the fragment: it never reaches a server log.
    const link = `${location.origin}${created.acceptPath}`;
    return (
      <ShownOnceDialog
        title="Invitation created"
        notice={
          <>
            This link is shown only now: copy it and send it to {created.invitation.email}. It can be used
            once and expires <When at={created.invitation.expiresAt} />.
          </>
        }
        label="Invitation link"
        value={link}
        copyLabel="Copy link"
        onClose={props.onClose}
      />
    );
  }
  return (
    <Modal title="Invite someone" onClose={props.onClose}>
      <DialogForm
        submitLabel="Create invitation"
        onCancel={props.onClose}
        onSubmit={async () => {
          setCreated(await api<Created>('POST', orgPath(props.org, '/invitations'), { email, role }));
          props.onCreated();
        }}
      >
        <InputField
          label="Email"
          type="email"
          autoComplete="off"
          maxLength={254}
          value={email}
          onValue={setEmail}
          required
        />
        {props.roles.length > 0 ? (
          <RoleSelectField
            hint="No stronger than your own role."
            roles={props.roles}
            value={role}
            onValue={setRole}
          />
        ) : (
          // Without roles:read the list of roles is not ours to see; the name or id is still accepted.
          <InputField
            label="Role"
            hint="A built-in role name (such as viewer) or a custom role id."
            value={role}
            onValue={setRole}
            required
          />
        )}
      </DialogForm>
    </Modal>
  );
}

export default function InvitationsPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const canList = access.can('members:read');
  const canInvite = access.can('members:invite');
  const invitations = useLoad(
    () =>
      canList
        ? api<{ invitations: InvitationView[] }>('GET', orgPath(org, '/invitations'))
        : Promise.resolve(undefined),
    [org, canList],
  );
  const roles = useRoles(org);
  const [inviting, setInviting] = useState(false);
  const [revoking, setRevoking] = useState<InvitationView | undefined>();
  const roleName = (role: string) => roles.data?.roles.find((r) => r.id === role)?.name ?? role;

  return (
    <section>
      <div className="toolbar">
        <h1>Invitations</h1>
        {canInvite && roles.data && (
          <button type="button" className="primary" onClick={() => setInviting(true)}>
            Invite someone
          </button>
        )}
      </div>
      <ErrorNote error={invitations.error ?? roles.error} />
      {!canList && <p className="muted">You may invite people, but not list the invitations.</p>}
      {canList && (
        <Loaded load={invitations} what="invitations">
          {(data) => (
            <DataTable
              label="Invitations"
              columns={['Email', 'Role', 'Status', 'Expires']}
              actions={canInvite}
              rows={data.invitations}
              empty="No open invitations."
            >
              {(invitation) => (
                <tr key={invitation.id}>
                  <td>{invitation.email}</td>
                  <td>{roleName(invitation.role)}</td>
                  <td>
                    <StatusBadge status={invitation.status} />
                  </td>
                  <td>
                    <When at={invitation.expiresAt} />
                  </td>
                  {canInvite && (
                    <td>
                      {invitation.status === 'pending' && (
                        <RowButton
                          danger
                          target={`the invitation for ${invitation.email}`}
                          onClick={() => setRevoking(invitation)}
                        >
                          Revoke
                        </RowButton>
                      )}
                    </td>
                  )}
                </tr>
              )}
            </DataTable>
          )}
        </Loaded>
      )}

      {inviting && roles.data && (
        <InviteDialog
          org={org}
          roles={roles.data.roles}
          onCreated={invitations.reload}
          onClose={() => setInviting(false)}
        />
      )}
      {revoking && (
        <ConfirmDialog
          title="Revoke invitation"
          confirmLabel="Revoke invitation"
          danger
          onClose={() => setRevoking(undefined)}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/invitations/${encodeURIComponent(revoking.id)}`));
            invitations.reload();
          }}
        >
          <p>
            Revoke the invitation for <strong>{revoking.email}</strong>? Its link stops working at once.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
