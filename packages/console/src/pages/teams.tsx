import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { FormDialog } from '../components/dialog-form';
import { NameAndDescriptionFields } from '../components/fields';
import { ConfirmDialog, ErrorNote, Field, Loaded, useLoad } from '../components/ui';
import { useAccess } from '../session';
import type { MemberView } from './members';

export interface TeamView {
  id: string;
  name: string;
  description: string;
  createdAt: string;
  members: Array<{ id: string; email: string }>;
}

type Pending =
  | { kind: 'create' }
  | { kind: 'edit' | 'delete' | 'add'; team: TeamView }
  | { kind: 'remove'; team: TeamView; member: { id: string; email: string } };

function TeamDialog(props: { org: string; team?: TeamView; onSaved: () => void; onClose: () => void }) {
  const [name, setName] = useState(props.team?.name ?? '');
  const [description, setDescription] = useState(props.team?.description ?? '');
  return (
    <FormDialog
      title={props.team ? `Edit team ${props.team.name}` : 'New team'}
      submitLabel={props.team ? 'Save team' : 'Create team'}
      onClose={props.onClose}
      onSubmit={async () => {
        if (props.team)
          await api('PATCH', orgPath(props.org, `/teams/${encodeURIComponent(props.team.id)}`), {
            name,
            description,
          });
        else await api('POST', orgPath(props.org, '/teams'), { name, description });
        props.onSaved();
        props.onClose();
      }}
    >
      <NameAndDescriptionFields
        name={name}
        description={description}
        onName={setName}
        onDescription={setDescription}
      />
    </FormDialog>
  );
}

function AddMemberDialog(props: {
  org: string;
  team: TeamView;
  candidates: MemberView[];
  onAdded: () => void;
  onClose: () => void;
}) {
  const [user, setUser] = useState(props.candidates[0]?.id ?? '');
  return (
    <FormDialog
      title={`Add a member to ${props.team.name}`}
      submitLabel="Add member"
      canSubmit={Boolean(user)}
      onClose={props.onClose}
      onSubmit={async () => {
        const path = `/teams/${encodeURIComponent(props.team.id)}/members/${encodeURIComponent(user)}`;
        await api('PUT', orgPath(props.org, path));
        props.onAdded();
        props.onClose();
      }}
    >
      {props.candidates.length === 0 ? (
        <p className="muted">Every member of the organization is already in this team.</p>
      ) : (
        <Field label="Member" hint="You must hold every permission the team's roles grant.">
          {(id, describedBy) => (
            <select
              id={id}
              aria-describedby={describedBy}
              value={user}
              onChange={(e) => setUser(e.target.value)}
            >
              {props.candidates.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.displayName ? `${m.displayName} (${m.email})` : m.email}
                </option>
              ))}
            </select>
          )}
        </Field>
      )}
    </FormDialog>
  );
}

export default function TeamsPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const canManage = access.can('teams:manage');
  // Adding someone means choosing among the organization's members, which needs members:read.
  const canAdd = canManage && access.can('members:read');
  const teams = useLoad(() => api<{ teams: TeamView[] }>('GET', orgPath(org, '/teams')), [org]);
  const members = useLoad(
    () =>
      canAdd
        ? api<{ members: MemberView[] }>('GET', orgPath(org, '/members'))
        : Promise.resolve({ members: [] as MemberView[] }),
    [org, canAdd],
  );
  const [pending, setPending] = useState<Pending | undefined>();
  const close = () => setPending(undefined);
  const teamPath = (team: TeamView) => orgPath(org, `/teams/${encodeURIComponent(team.id)}`);

  return (
    <section>
      <div className="toolbar">
        <h1>Teams</h1>
        {canManage && (
          <button type="button" className="primary" onClick={() => setPending({ kind: 'create' })}>
            New team
          </button>
        )}
      </div>
      <ErrorNote error={teams.error ?? members.error} />
      <Loaded load={teams} what="teams">
        {(data) => (
          <DataTable
            label="Teams"
            columns={['Team', 'Members']}
            actions={canManage}
            rows={data.teams}
            empty="No teams yet."
          >
            {(team) => (
              <tr key={team.id}>
                <td>
                  <strong>{team.name}</strong>
                  {team.description && <p className="muted">{team.description}</p>}
                </td>
                <td>
                  {team.members.length === 0 ? (
                    <span className="muted">none</span>
                  ) : (
                    <ul>
                      {team.members.map((member) => (
                        <li key={member.id}>
                          {member.email}{' '}
                          {canManage && (
                            <RowButton
                              target={`${member.email} from ${team.name}`}
                              onClick={() => setPending({ kind: 'remove', team, member })}
                            >
                              Remove
                            </RowButton>
                          )}
                        </li>
                      ))}
                    </ul>
                  )}
                </td>
                {canManage && (
                  <td>
                    <div className="actions">
                      {canAdd && members.data && (
                        <RowButton
                          target={`to ${team.name}`}
                          onClick={() => setPending({ kind: 'add', team })}
                        >
                          Add member
                        </RowButton>
                      )}
                      <RowButton target={team.name} onClick={() => setPending({ kind: 'edit', team })}>
                        Edit
                      </RowButton>
                      <RowButton
                        danger
                        target={team.name}
                        onClick={() => setPending({ kind: 'delete', team })}
                      >
                        Delete
                      </RowButton>
                    </div>
                  </td>
                )}
              </tr>
            )}
          </DataTable>
        )}
      </Loaded>

      {pending?.kind === 'create' && <TeamDialog org={org} onSaved={teams.reload} onClose={close} />}
      {pending?.kind === 'edit' && (
        <TeamDialog org={org} team={pending.team} onSaved={teams.reload} onClose={close} />
      )}
      {pending?.kind === 'add' && (
        <AddMemberDialog
          org={org}
          team={pending.team}
          candidates={(members.data?.members ?? []).filter(
            (m) => !pending.team.members.some((t) => t.id === m.id),
          )}
          onAdded={teams.reload}
          onClose={close}
        />
      )}
      {pending?.kind === 'delete' && (
        <ConfirmDialog
          title="Delete team"
          confirmLabel="Delete team"
          danger
          onClose={close}
          onConfirm={async () => {
            await api('DELETE', teamPath(pending.team));
            teams.reload();
          }}
        >
          <p>
            Delete the team <strong>{pending.team.name}</strong>? The role bindings made to it are deleted
            too, so its members lose what the team granted them.
          </p>
        </ConfirmDialog>
      )}
      {pending?.kind === 'remove' && (
        <ConfirmDialog
          title="Remove from team"
          confirmLabel="Remove from team"
          danger
          onClose={close}
          onConfirm={async () => {
            await api('DELETE', `${teamPath(pending.team)}/members/${encodeURIComponent(pending.member.id)}`);
            teams.reload();
          }}
        >
          <p>
            Remove <strong>{pending.member.email}</strong> from <strong>{pending.team.name}</strong>? They
            lose what the team's roles granted them.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
