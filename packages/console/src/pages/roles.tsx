import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { FormDialog } from '../components/dialog-form';
import {
  NameAndDescriptionFields,
  type Permission,
  PermissionPicker,
  RoleSelectField,
  useMemberList,
  usePermissionCatalogue,
} from '../components/fields';
import { ConfirmDialog, ErrorNote, Field, InputField, Loaded, useLoad, When } from '../components/ui';
import { useAccess } from '../session';
import type { MemberView } from './members';
import type { TeamView } from './teams';

export interface RoleView {
  id: string;
  name: string;
  builtIn: boolean;
  description: string;
  permissions: string[];
  includes: string[];
  effectivePermissions: string[];
}

interface BindingView {
  id: string;
  role: string;
  subject: { type: 'user' | 'team'; id: string };
  selector: string | null;
  createdBy: string;
  createdAt: string;
}

type Pending =
  | { kind: 'new-role' | 'new-binding' }
  | { kind: 'edit-role' | 'delete-role'; role: RoleView }
  | { kind: 'delete-binding'; binding: BindingView };

function RoleDialog(props: {
  org: string;
  role?: RoleView;
  catalogue: Permission[];
  onSaved: () => void;
  onClose: () => void;
}) {
  const [name, setName] = useState(props.role?.name ?? '');
  const [description, setDescription] = useState(props.role?.description ?? '');
  const [chosen, setChosen] = useState<ReadonlySet<string>>(new Set(props.role?.permissions ?? []));
  return (
    <FormDialog
      title={props.role ? `Edit role ${props.role.name}` : 'New custom role'}
      submitLabel={props.role ? 'Save role' : 'Create role'}
      onClose={props.onClose}
      onSubmit={async () => {
        // Catalogue order keeps the request (and the audit record of it) stable.
        const permissions = props.catalogue.map((p) => p.name).filter((p) => chosen.has(p));
        if (props.role)
          await api('PATCH', orgPath(props.org, `/roles/${encodeURIComponent(props.role.id)}`), {
            name,
            description,
            permissions,
          });
        else await api('POST', orgPath(props.org, '/roles'), { name, description, permissions });
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
      <PermissionPicker
        legend="Permissions (only those you hold yourself can be granted)"
        catalogue={props.catalogue}
        chosen={chosen}
        onChosen={setChosen}
      />
    </FormDialog>
  );
}

function BindingDialog(props: {
  org: string;
  roles: RoleView[];
  members?: MemberView[];
  teams?: TeamView[];
  onSaved: () => void;
  onClose: () => void;
}) {
  const [role, setRole] = useState(props.roles[0]?.id ?? '');
  const [type, setType] = useState<'user' | 'team'>('user');
  const [subject, setSubject] = useState('');
  const [selector, setSelector] = useState('');
  const choices =
    type === 'user'
      ? props.members?.map((m) => ({ id: m.id, label: m.email }))
      : props.teams?.map((t) => ({ id: t.id, label: t.name }));
  return (
    <FormDialog
      title="New role binding"
      submitLabel="Create binding"
      canSubmit={Boolean(role && subject)}
      onClose={props.onClose}
      onSubmit={async () => {
        await api('POST', orgPath(props.org, '/role-bindings'), {
          role,
          subject: { type, id: subject },
          ...(selector.trim() ? { selector: selector.trim() } : {}),
        });
        props.onSaved();
        props.onClose();
      }}
    >
      <RoleSelectField roles={props.roles} value={role} onValue={setRole} />
      <Field label="Granted to">
        {(id) => (
          <select
            id={id}
            value={type}
            onChange={(e) => {
              setType(e.target.value === 'team' ? 'team' : 'user');
              setSubject('');
            }}
          >
            <option value="user">A member</option>
            <option value="team">A team</option>
          </select>
        )}
      </Field>
      <Field label={type === 'user' ? 'Member' : 'Team'}>
        {(id) =>
          choices ? (
            <select id={id} value={subject} onChange={(e) => setSubject(e.target.value)} required>
              <option value="">Choose…</option>
              {choices.map((c) => (
                <option key={c.id} value={c.id}>
                  {c.label}
                </option>
              ))}
            </select>
          ) : (
            // Without the read permission for the list, the id is typed in.
            <input
              id={id}
              maxLength={64}
              value={subject}
              onChange={(e) => setSubject(e.target.value)}
              required
            />
          )
        }
      </Field>
      <InputField
        label="Only on agents matching (optional)"
        hint="Empty for the whole organization. Only agent permissions can be scoped. Comma-separated terms, all must hold, for example env=prod,tier!=db,team in (payments,core),!canary"
        maxLength={1000}
        placeholder="env=prod"
        value={selector}
        onValue={setSelector}
      />
    </FormDialog>
  );
}

function PermissionList({ names, catalogue }: { names: string[]; catalogue: Permission[] }) {
  if (names.length === 0) return <span className="muted">none</span>;
  return (
    <details>
      <summary>
        {names.length} permission{names.length === 1 ? '' : 's'}
      </summary>
      <ul>
        {names.map((name) => (
          <li key={name}>
            <code>{name}</code>{' '}
            <span className="muted">{catalogue.find((p) => p.name === name)?.description}</span>
          </li>
        ))}
      </ul>
    </details>
  );
}

export default function RolesPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const canManage = access.can('roles:manage');
  const canReadTeams = access.can('teams:read');
  const catalogue = usePermissionCatalogue();
  const roles = useLoad(() => api<{ roles: RoleView[] }>('GET', orgPath(org, '/roles')), [org]);
  const bindings = useLoad(
    () => api<{ bindings: BindingView[] }>('GET', orgPath(org, '/role-bindings')),
    [org],
  );
  const { members, emailOf: userName } = useMemberList(org);
  const teams = useLoad(
    () =>
      canReadTeams ? api<{ teams: TeamView[] }>('GET', orgPath(org, '/teams')) : Promise.resolve(undefined),
    [org, canReadTeams],
  );
  const [pending, setPending] = useState<Pending | undefined>();
  const close = () => setPending(undefined);
  const permissions = catalogue.data?.permissions ?? [];
  const roleList = roles.data?.roles ?? [];
  const roleName = (id: string) => roleList.find((r) => r.id === id)?.name ?? id;
  const subjectName = (subject: BindingView['subject']) =>
    subject.type === 'user'
      ? `Member ${userName(subject.id)}`
      : `Team ${teams.data?.teams.find((t) => t.id === subject.id)?.name ?? subject.id}`;

  return (
    <section>
      <h1>Roles</h1>
      <ErrorNote error={catalogue.error ?? roles.error ?? members.error ?? teams.error} />

      <section aria-labelledby="roles-heading">
        <div className="toolbar">
          <h2 id="roles-heading">Roles</h2>
          {canManage && catalogue.data && (
            <button type="button" className="primary" onClick={() => setPending({ kind: 'new-role' })}>
              New custom role
            </button>
          )}
        </div>
        <Loaded load={roles} what="roles">
          {(data) => (
            <DataTable
              label="Roles"
              columns={['Role', 'Description', 'Permissions']}
              actions={canManage}
              rows={data.roles}
            >
              {(role) => (
                <tr key={role.id}>
                  <td>
                    {role.name} <span className="badge">{role.builtIn ? 'built-in' : 'custom'}</span>
                  </td>
                  <td>
                    {role.description || <span className="muted">none</span>}
                    {role.includes.length > 0 && (
                      <p className="muted">Includes {role.includes.map(roleName).join(', ')}</p>
                    )}
                  </td>
                  <td>
                    <PermissionList names={role.effectivePermissions} catalogue={permissions} />
                  </td>
                  {canManage && (
                    <td>
                      {!role.builtIn && (
                        <div className="actions">
                          {catalogue.data && (
                            <RowButton
                              target={role.name}
                              onClick={() => setPending({ kind: 'edit-role', role })}
                            >
                              Edit
                            </RowButton>
                          )}
                          <RowButton
                            danger
                            target={role.name}
                            onClick={() => setPending({ kind: 'delete-role', role })}
                          >
                            Delete
                          </RowButton>
                        </div>
                      )}
                    </td>
                  )}
                </tr>
              )}
            </DataTable>
          )}
        </Loaded>
      </section>

      <section aria-labelledby="bindings-heading">
        <div className="toolbar">
          <h2 id="bindings-heading">Role bindings</h2>
          {canManage && roles.data && (
            <button type="button" className="primary" onClick={() => setPending({ kind: 'new-binding' })}>
              New role binding
            </button>
          )}
        </div>
        <p className="muted">
          A binding grants a role to a member or a team, on the whole organization or only on the agents whose
          labels match its selector.
        </p>
        <ErrorNote error={bindings.error} />
        <Loaded load={bindings} what="role bindings">
          {(data) => (
            <DataTable
              label="Role bindings"
              columns={['Role', 'Granted to', 'Scope', 'Created by', 'Created']}
              actions={canManage}
              rows={data.bindings}
              empty="No role bindings."
            >
              {(binding) => (
                <tr key={binding.id}>
                  <td>{roleName(binding.role)}</td>
                  <td>{subjectName(binding.subject)}</td>
                  <td>
                    {binding.selector ? (
                      <code>{binding.selector}</code>
                    ) : (
                      <span className="muted">whole organization</span>
                    )}
                  </td>
                  <td>{userName(binding.createdBy)}</td>
                  <td>
                    <When at={binding.createdAt} />
                  </td>
                  {canManage && (
                    <td>
                      <RowButton
                        danger
                        target={`the binding of ${roleName(binding.role)} to ${subjectName(binding.subject)}`}
                        onClick={() => setPending({ kind: 'delete-binding', binding })}
                      >
                        Delete
                      </RowButton>
                    </td>
                  )}
                </tr>
              )}
            </DataTable>
          )}
        </Loaded>
      </section>

      {(pending?.kind === 'new-role' || pending?.kind === 'edit-role') && (
        <RoleDialog
          org={org}
          role={pending.kind === 'edit-role' ? pending.role : undefined}
          catalogue={permissions}
          onSaved={roles.reload}
          onClose={close}
        />
      )}
      {pending?.kind === 'delete-role' && (
        <ConfirmDialog
          title="Delete role"
          confirmLabel="Delete role"
          danger
          onClose={close}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/roles/${encodeURIComponent(pending.role.id)}`));
            roles.reload();
            bindings.reload();
          }}
        >
          <p>
            Delete the custom role <strong>{pending.role.name}</strong>? Its role bindings are deleted with
            it. A role that a member, an invitation or another role still holds cannot be deleted.
          </p>
        </ConfirmDialog>
      )}
      {pending?.kind === 'new-binding' && (
        <BindingDialog
          org={org}
          roles={roleList}
          members={members.data?.members}
          teams={teams.data?.teams}
          onSaved={bindings.reload}
          onClose={close}
        />
      )}
      {pending?.kind === 'delete-binding' && (
        <ConfirmDialog
          title="Delete role binding"
          confirmLabel="Delete binding"
          danger
          onClose={close}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/role-bindings/${encodeURIComponent(pending.binding.id)}`));
            bindings.reload();
          }}
        >
          <p>
            Stop granting <strong>{roleName(pending.binding.role)}</strong> to{' '}
            <strong>{subjectName(pending.binding.subject)}</strong>
            {pending.binding.selector ? (
              <>
                {' '}
                on agents matching <code>{pending.binding.selector}</code>
              </>
            ) : (
              ' on the whole organization'
            )}
            ?
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
