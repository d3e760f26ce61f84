import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, Pager, RowButton, SearchBox, useListParams } from '../components/data-table';
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
  // Search, filters, sort and page live in the URL: a link shows the same list, a reload keeps it.
  const list = useListParams({ q: '', role: '', status: '', sort: 'email' });
  const members = useLoad(
    () =>
      api<{ members: MemberView[]; next: string | null }>(
        'GET',
        orgPath(org, `/members?${list.query({ limit: '50' })}`),
      ),
    [org, list.key],
  );
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
      <div className="toolbar">
        <SearchBox label="Search members" value={list.get('q')} onSearch={(q) => list.set({ q })} />
        <div className="field">
          <label htmlFor="member-role-filter">Role</label>
          <select
            id="member-role-filter"
            value={list.get('role')}
            onChange={(event) => list.set({ role: event.target.value })}
          >
            <option value="">any</option>
            {roleList.map((role) => (
              <option key={role.id} value={role.id}>
                {role.name}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="member-status-filter">Status</label>
          <select
            id="member-status-filter"
            value={list.get('status')}
            onChange={(event) => list.set({ status: event.target.value })}
          >
            <option value="">any</option>
            <option value="active">active</option>
            <option value="disabled">disabled</option>
          </select>
        </div>
      </div>
      <ErrorNote error={members.error ?? roles.error} />
      <Loaded load={members} what="members">
        {(data) => (
          <DataTable
            label="Members"
            columns={[
              { label: 'Name', sort: 'name' },
              { label: 'Email', sort: 'email' },
              { label: 'Role', sort: 'role' },
              'Teams',
              'Status',
              { label: 'Joined', sort: 'joined' },
            ]}
            sorting={list.sorting('email')}
            actions={canManage || canEndSessions}
            rows={data.members}
            empty="No members match."
          >
            {(member) => (
              <tr key={member.id}>
                <td title={member.id}>{member.displayName || <span className="muted">none</span>}</td>
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
      {members.data && <Pager label="Members" {...list.pager(members.data.next)} />}

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
