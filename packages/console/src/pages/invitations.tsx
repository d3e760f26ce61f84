import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import {
  ConfirmDialog,
  CopyButton,
  ErrorNote,
  Field,
  Loading,
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
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [created, setCreated] = useState<Created | undefined>();

  if (created) {
    // The server's path carries the token in the fragment: it never reaches a server log.
    const link = `${location.origin}${created.acceptPath}`;
    return (
      <Modal title="Invitation created" onClose={props.onClose}>
        <p className="notice">
          This link is shown only now: copy it and send it to {created.invitation.email}. It can be used once
          and expires <When at={created.invitation.expiresAt} />.
        </p>
        <Field label="Invitation link">{(id) => <input id={id} readOnly value={link} />}</Field>
        <div className="actions">
          <CopyButton text={link} label="Copy link" />
          <button type="button" className="primary" onClick={props.onClose}>
            Done
          </button>
        </div>
      </Modal>
    );
  }
  return (
    <Modal title="Invite someone" onClose={props.onClose}>
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          try {
            setCreated(await api<Created>('POST', orgPath(props.org, '/invitations'), { email, role }));
            props.onCreated();
          } catch (failure) {
            setError(failure);
          } finally {
            setBusy(false);
          }
        }}
      >
        <Field label="Email">
          {(id) => (
            <input
              id={id}
              type="email"
              autoComplete="off"
              maxLength={254}
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              required
            />
          )}
        </Field>
        {props.roles.length > 0 ? (
          <Field label="Role" hint="No stronger than your own role.">
            {(id, describedBy) => (
              <select
                id={id}
                aria-describedby={describedBy}
                value={role}
                onChange={(e) => setRole(e.target.value)}
              >
                {props.roles.map((r) => (
                  <option key={r.id} value={r.id}>
                    {r.builtIn ? r.name : `${r.name} (custom)`}
                  </option>
                ))}
              </select>
            )}
          </Field>
        ) : (
          // Without roles:read the list of roles is not ours to see; the name or id is still accepted.
          <Field label="Role" hint="A built-in role name (such as viewer) or a custom role id.">
            {(id, describedBy) => (
              <input
                id={id}
                aria-describedby={describedBy}
                value={role}
                onChange={(e) => setRole(e.target.value)}
                required
              />
            )}
          </Field>
        )}
        <ErrorNote error={error} />
        <div className="actions">
          <button type="button" onClick={props.onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            Create invitation
          </button>
        </div>
      </form>
    </Modal>
  );
}

export default function InvitationsPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const canList = access.can('members:read');
  const canInvite = access.can('members:invite');
  const canReadRoles = access.can('roles:read');
  const invitations = useLoad(
    () =>
      canList
        ? api<{ invitations: InvitationView[] }>('GET', orgPath(org, '/invitations'))
        : Promise.resolve(undefined),
    [org, canList],
  );
  const roles = useLoad(
    () =>
      canReadRoles
        ? api<{ roles: RoleView[] }>('GET', orgPath(org, '/roles'))
        : Promise.resolve({ roles: [] as RoleView[] }),
    [org, canReadRoles],
  );
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
      {canList && !invitations.data && !invitations.error && <Loading what="invitations" />}
      {invitations.data &&
        (invitations.data.invitations.length === 0 ? (
          <p className="muted">No open invitations.</p>
        ) : (
          <div className="table-wrap">
            <table aria-label="Invitations">
              <thead>
                <tr>
                  <th scope="col">Email</th>
                  <th scope="col">Role</th>
                  <th scope="col">Status</th>
                  <th scope="col">Expires</th>
                  {canInvite && <th scope="col">Actions</th>}
                </tr>
              </thead>
              <tbody>
                {invitations.data.invitations.map((invitation) => (
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
                          <button type="button" className="danger" onClick={() => setRevoking(invitation)}>
                            Revoke
                            <span className="visually-hidden"> the invitation for {invitation.email}</span>
                          </button>
                        )}
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ))}

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
