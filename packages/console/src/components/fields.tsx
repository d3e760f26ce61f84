import { api, orgPath } from '../api';
import type { MemberView } from '../pages/members';
import type { RoleView } from '../pages/roles';
import { useAccess } from '../session';
import { Field, InputField, useLoad } from './ui';

// Fields of the org pages' dialogs: this module stays out of the first chunk (see app.tsx).

/**
 * The organization's roles, for RoleSelectField and to show role names. Without roles:read the
 * list is not ours to see: it loads as empty, and the page shows role ids instead.
 */
export function useRoles(org: string) {
  const canReadRoles = useAccess().can('roles:read');
  return useLoad(
    () =>
      canReadRoles
        ? api<{ roles: RoleView[] }>('GET', orgPath(org, '/roles'))
        : Promise.resolve({ roles: [] as RoleView[] }),
    [org, canReadRoles],
  );
}

/** Picks one of the organization's roles by id; a custom role says so after its name. */
export function RoleSelectField(props: {
  hint?: string;
  roles: ReadonlyArray<{ id: string; name: string; builtIn: boolean }>;
  value: string;
  onValue: (role: string) => void;
}) {
  return (
    <Field label="Role" hint={props.hint}>
      {(id, describedBy) => (
        <select
          id={id}
          aria-describedby={describedBy}
          value={props.value}
          onChange={(e) => props.onValue(e.target.value)}
        >
          {props.roles.map((r) => (
            <option key={r.id} value={r.id}>
              {r.builtIn ? r.name : `${r.name} (custom)`}
            </option>
          ))}
        </select>
      )}
    </Field>
  );
}

/** The name and description that teams and custom roles both have, with the server's limits. */
export function NameAndDescriptionFields(props: {
  name: string;
  description: string;
  onName: (name: string) => void;
  onDescription: (description: string) => void;
}) {
  return (
    <>
      <InputField label="Name" maxLength={64} value={props.name} onValue={props.onName} required />
      <Field label="Description">
        {(id) => (
          <textarea
            id={id}
            rows={2}
            maxLength={500}
            value={props.description}
            onChange={(e) => props.onDescription(e.target.value)}
          />
        )}
      </Field>
    </>
  );
}

export interface Permission {
  name: string;
  description: string;
}

/** Checkboxes over a permission catalogue; `chosen` keeps the ticked names. */
export function PermissionPicker(props: {
  legend: string;
  catalogue: readonly Permission[];
  chosen: ReadonlySet<string>;
  onChosen: (chosen: Set<string>) => void;
}) {
  const toggle = (permission: string, on: boolean) => {
    const next = new Set(props.chosen);
    if (on) next.add(permission);
    else next.delete(permission);
    props.onChosen(next);
  };
  return (
    <fieldset>
      <legend>{props.legend}</legend>
      <ul>
        {props.catalogue.map((permission) => (
          <li key={permission.name}>
            <label>
              <input
                type="checkbox"
                checked={props.chosen.has(permission.name)}
                onChange={(e) => toggle(permission.name, e.target.checked)}
              />{' '}
              <code>{permission.name}</code> <span className="muted">{permission.description}</span>
            </label>
          </li>
        ))}
      </ul>
    </fieldset>
  );
}

/** The permission catalogue, in its order (requests and audit records list permissions in it). */
export const usePermissionCatalogue = () =>
  useLoad(() => api<{ permissions: Permission[] }>('GET', '/api/permissions'), []);

/**
 * The organization's members when the caller may list them (members:read), to show emails instead
 * of user ids; without the permission, `emailOf` gives the id back.
 */
export function useMemberList(org: string) {
  const canRead = useAccess().can('members:read');
  const members = useLoad(
    () =>
      canRead ? api<{ members: MemberView[] }>('GET', orgPath(org, '/members')) : Promise.resolve(undefined),
    [org, canRead],
  );
  const emailOf = (id: string) => members.data?.members.find((m) => m.id === id)?.email ?? id;
  return { members, emailOf };
}
