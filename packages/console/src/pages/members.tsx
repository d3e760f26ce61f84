import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { FormDialog } from '../components/dialog-form';
import { RoleSelectField, useRoles } from '../components/fields';
import { ConfirmDialog, ErrorNote, Loaded, StatusBadge, useLoad, When } from '../components/ui';
import { useAccess, useSignedIn } from '../session';
import type { RoleView } from './roles';

export interface MemberView {
  id: string;
  email: string;
  displayName: string;
  status: 'active' | 'disabled';
  role: string;
  joinedAt: string;
  teams: Array<{ id: string; name: string }>;
}

const personOf = (member: { email: string; displayName?: string }) =>
  member.displayName ? `${member.displayName} (${member.email})` : member.email;

type Pending = { kind: 'role' | 'remove' | 'end-sessions'; member: MemberView };

function ChangeRoleDialog(props: {
  org: string;
  member: MemberView;
  roles: RoleView[];
  onChanged: () => void;
  onClose: () => void;
}) {
  const [role, setRole] = useState(props.member.role);
  return (
    <FormDialog
      title={`Change the role of ${personOf(props.member)}`}
      submitLabel="Change role"
      canSubmit={role !== props.member.role}
      onClose={props.onClose}
      onSubmit={async () => {
        await api('PATCH', orgPath(props.org, `/members/${encodeURIComponent(props.member.id)}`), { role });
        props.onChanged();
        props.onClose();
      }}
    >
      <RoleSelectField
        hint="You can only give a role whose permissions you hold yourself."
        roles={props.roles}
        value={role}
        onValue={setRole}
      />
    </FormDialog>
  );
}

export default function MembersPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const me = useSignedIn().user.id;
  const canManage = access.can('members:manage');
  const canEndSessions = access.can('members:end_sessions');
  const members = useLoad(() => api<{ members: MemberView[] }>('GET', orgPath(org, '/members')), [org]);
  const roles = useRoles(org);
  const [pending, setPending] = useState<Pending | undefined>();
  const [notice, setNotice] = useState<string | undefined>();
  const roleList = roles.data?.roles ?? [];
  const roleName = (role: string) => roleList.find((r) => r.id === role)?.name ?? role;
  const userPath = (member: MemberView) => orgPath(org, `/members/${encodeURIComponent(member.id)}`);

  return (
    <section>
      <h1>Members</h1>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <ErrorNote error={members.error ?? roles.error} />
      <Loaded load={members} what="members">
        {(data) => (
          <DataTable
            label="Members"
            columns={['Name', 'Email', 'Role', 'Teams', 'Status', 'Joined']}
            actions={canManage || canEndSessions}
            rows={data.members}
          >
            {(member) => (
              <tr key={member.id}>
                <td>{member.displayName || <span className="muted">none</span>}</td>
                <td>{member.email}</td>
                <td>{roleName(member.role)}</td>
                <td>
                  {member.teams.length > 0 ? (
                    member.teams.map((t) => t.name).join(', ')
                  ) : (
                    <span className="muted">none</span>
                  )}
                </td>
                <td>
                  <StatusBadge status={member.status} />
                </td>
                <td>
                  <When at={member.joinedAt} />
                </td>
                {(canManage || canEndSessions) && (
                  <td>
                    {/* Your own role cannot be changed, and ending your own sessions would sign you out. */}
                    {member.id === me ? (
                      <span className="muted">you</span>
                    ) : (
                      <div className="actions">
                        {canManage && roleList.length > 0 && (
                          <RowButton
                            target={`of ${member.email}`}
                            onClick={() => setPending({ kind: 'role', member })}
                          >
                            Change role
                          </RowButton>
                        )}
                        {canEndSessions && (
                          <RowButton
                            target={`of ${member.email}`}
                            onClick={() => setPending({ kind: 'end-sessions', member })}
                          >
                            End sessions
                          </RowButton>
                        )}
                        {canManage && (
                          <RowButton
                            danger
                            target={member.email}
                            onClick={() => setPending({ kind: 'remove', member })}
                          >
                            Remove
                          </RowButton>
                        )}
                      </div>
                    )}
                  </td>
                )}
              </tr>
            )}
          </DataTable>
        )}
      </Loaded>

      {pending?.kind === 'role' && (
        <ChangeRoleDialog
          org={org}
          member={pending.member}
          roles={roleList}
          onChanged={members.reload}
          onClose={() => setPending(undefined)}
        />
      )}
      {pending?.kind === 'remove' && (
        <ConfirmDialog
          title="Remove member"
          confirmLabel="Remove member"
          danger
          onClose={() => setPending(undefined)}
          onConfirm={async () => {
            await api('DELETE', userPath(pending.member));
            setNotice(`${personOf(pending.member)} was removed from the organization.`);
            members.reload();
          }}
        >
          <p>
            Remove <strong>{personOf(pending.member)}</strong> from the organization? They lose every role and
            team membership here at once.
          </p>
        </ConfirmDialog>
      )}
      {pending?.kind === 'end-sessions' && (
        <ConfirmDialog
          title="End sessions"
          confirmLabel="End all sessions"
          danger
          onClose={() => setPending(undefined)}
          onConfirm={async () => {
            const { sessionsEnded } = await api<{ sessionsEnded: number }>(
              'POST',
              `${userPath(pending.member)}/end-sessions`,
            );
            setNotice(
              `${sessionsEnded} session${sessionsEnded === 1 ? '' : 's'} of ${personOf(pending.member)} ended.`,
            );
            members.reload();
          }}
        >
          <p>
            End every session of <strong>{personOf(pending.member)}</strong>? They must sign in again on every
            device.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
