import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { FormDialog } from '../components/dialog-form';
import { useMemberList } from '../components/fields';
import { ConfirmDialog, ErrorNote, Field, InputField, Loaded, useLoad, When } from '../components/ui';
import { useAccess } from '../session';

/**
 * The organization's secrets (SEC-3). Values are write-only: this screen sends them and never gets
 * one back (no API returns a value); the list shows names, versions and who changed them.
 */

interface SecretView {
  id: string;
  name: string;
  description: string;
  version: number;
  createdBy: string;
  createdAt: string;
  updatedBy: string;
  updatedAt: string;
}

type Pending = { kind: 'create' } | { kind: 'update' | 'delete'; secret: SecretView };

/** A value field that no browser offers to remember, autofill or spell-check. */
function SecretValueField(props: { value: string; onValue: (value: string) => void }) {
  return (
    <Field
      label="Value"
      hint="Stored encrypted; nobody can read it back here, only actions that declare it receive it."
    >
      {(id, describedBy) => (
        <textarea
          id={id}
          aria-describedby={describedBy}
          rows={3}
          maxLength={65_536}
          autoComplete="off"
          spellCheck={false}
          className="secret-value"
          value={props.value}
          onChange={(e) => props.onValue(e.target.value)}
          required
        />
      )}
    </Field>
  );
}

function CreateSecretDialog(props: { org: string; onSaved: () => void; onClose: () => void }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [value, setValue] = useState('');
  return (
    <FormDialog
      title="New secret"
      submitLabel="Store secret"
      onClose={props.onClose}
      onSubmit={async () => {
        await api('POST', orgPath(props.org, '/secrets'), { name, description, value });
        props.onSaved();
        props.onClose();
      }}
    >
      <InputField
        label="Name"
        hint="As actions name it, such as DB_PASSWORD: letters, digits, _ . - (starting with a letter or _)."
        pattern="[A-Za-z_][A-Za-z0-9_.\-]*"
        maxLength={128}
        autoComplete="off"
        value={name}
        onValue={setName}
        required
      />
      <InputField label="Description" maxLength={500} value={description} onValue={setDescription} />
      <SecretValueField value={value} onValue={setValue} />
    </FormDialog>
  );
}

function NewValueDialog(props: {
  org: string;
  secret: SecretView;
  onSaved: () => void;
  onClose: () => void;
}) {
  const [value, setValue] = useState('');
  return (
    <FormDialog
      title={`New value for ${props.secret.name}`}
      submitLabel="Store new value"
      onClose={props.onClose}
      onSubmit={async () => {
        await api('POST', orgPath(props.org, `/secrets/${encodeURIComponent(props.secret.id)}/versions`), {
          value,
        });
        props.onSaved();
        props.onClose();
      }}
    >
      <p>
        Becomes version {props.secret.version + 1}. Commands already waiting keep the version they were
        created with.
      </p>
      <SecretValueField value={value} onValue={setValue} />
    </FormDialog>
  );
}

export default function SecretsPage() {
  const { org = '' } = useParams();
  const canWrite = useAccess().can('secrets:write');
  const secrets = useLoad(() => api<{ secrets: SecretView[] }>('GET', orgPath(org, '/secrets')), [org]);
  const { emailOf } = useMemberList(org);
  const [pending, setPending] = useState<Pending | undefined>();
  const close = () => setPending(undefined);
  const reload = secrets.reload;

  return (
    <section>
      <div className="toolbar">
        <h1>Secrets</h1>
        {canWrite && (
          <button type="button" className="primary" onClick={() => setPending({ kind: 'create' })}>
            New secret
          </button>
        )}
      </div>
      <p className="muted">
        Values are never shown again once stored. Actions receive them sealed to their agent, and the output
        masks them.
      </p>
      <ErrorNote error={secrets.error} />
      <Loaded load={secrets} what="secrets">
        {(data) => (
          <DataTable
            label="Secrets"
            columns={['Name', 'Description', 'Version', 'Updated']}
            actions={canWrite}
            rows={data.secrets}
            empty="No secrets yet."
          >
            {(secret) => (
              <tr key={secret.id}>
                <td>
                  <code>{secret.name}</code>
                </td>
                <td>{secret.description || <span className="muted">none</span>}</td>
                <td>{secret.version}</td>
                <td>
                  <When at={secret.updatedAt} /> <span className="muted">by {emailOf(secret.updatedBy)}</span>
                </td>
                {canWrite && (
                  <td>
                    <RowButton target={secret.name} onClick={() => setPending({ kind: 'update', secret })}>
                      New value
                    </RowButton>
                    <RowButton
                      danger
                      target={secret.name}
                      onClick={() => setPending({ kind: 'delete', secret })}
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
      {pending?.kind === 'create' && <CreateSecretDialog org={org} onSaved={reload} onClose={close} />}
      {pending?.kind === 'update' && (
        <NewValueDialog org={org} secret={pending.secret} onSaved={reload} onClose={close} />
      )}
      {pending?.kind === 'delete' && (
        <ConfirmDialog
          title={`Delete secret ${pending.secret.name}`}
          confirmLabel="Delete secret"
          danger
          onClose={close}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/secrets/${encodeURIComponent(pending.secret.id)}`));
            reload();
          }}
        >
          <p>
            Every version of its value is deleted. Commands waiting for it will fail, and actions that declare
            it cannot run until it exists again.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
