import { api, orgPath } from '../api';
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
