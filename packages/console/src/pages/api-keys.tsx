import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { DialogForm, ShownOnceDialog } from '../components/dialog-form';
import { type Permission, PermissionPicker, usePermissionCatalogue } from '../components/fields';
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

/**
 * The organization's API keys (KEY-1), for scripts and the CLI. A key holds some of its creator's
 * permissions, never more, and its token is shown once, at creation; the server keeps a hash only.
 */

interface ApiKeyView {
  id: string;
  name: string;
  hint: string;
  createdBy: { id: string; email: string };
  createdByKey: string | null;
  permissions: string[];
  selector: string | null;
  status: 'active' | 'expired' | 'revoked';
  createdAt: string;
  expiresAt: string;
  lastUsedAt: string | null;
  lastUsedIp: string | null;
}

const DEFAULT_EXPIRY_DAYS = 90;
const MAX_EXPIRY_DAYS = 365;

function CreateKeyDialog(props: {
  org: string;
  catalogue: Permission[];
  onCreated: () => void;
  onClose: () => void;
}) {
  const [name, setName] = useState('');
  const [chosen, setChosen] = useState<ReadonlySet<string>>(new Set());
  const [selector, setSelector] = useState('');
  const [days, setDays] = useState(String(DEFAULT_EXPIRY_DAYS));
  const [token, setToken] = useState<string | undefined>();

  if (token)
    return (
      <ShownOnceDialog
        title="API key created"
        notice={
          <>
            This token is shown only now: copy it into your script's secret store. Send it as{' '}
            <code>Authorization: Bearer …</code>, or to the CLI as <code>BULWARK_API_KEY</code>.
          </>
        }
        label="Token"
        value={token}
        copyLabel="Copy token"
        onClose={props.onClose}
      />
    );
  return (
    <Modal title="New API key" onClose={props.onClose}>
      <DialogForm
        submitLabel="Create key"
        canSubmit={chosen.size > 0}
        onCancel={props.onClose}
        onSubmit={async () => {
          const created = await api<{ token: string }>('POST', orgPath(props.org, '/api-keys'), {
            name,
            // Catalogue order keeps the request (and the audit record of it) stable.
            permissions: props.catalogue.map((p) => p.name).filter((p) => chosen.has(p)),
            ...(selector.trim() ? { selector: selector.trim() } : {}),
            expiresInDays: Number(days),
          });
          setToken(created.token);
          props.onCreated();
        }}
      >
        <InputField
          label="Name"
          hint="What uses it, such as the deploy pipeline."
          maxLength={100}
          value={name}
          onValue={setName}
          required
        />
        <PermissionPicker
          legend="Permissions (only those you hold yourself)"
          catalogue={props.catalogue}
          chosen={chosen}
          onChosen={setChosen}
        />
        <InputField
          label="Only on agents matching (optional)"
          hint="Empty for the whole organization; only agent permissions can be scoped. For example env=prod,team notin (legacy,test)"
          maxLength={512}
          placeholder="env=prod"
          value={selector}
          onValue={setSelector}
        />
        <InputField
          label="Expires after (days)"
          type="number"
          min={1}
          max={MAX_EXPIRY_DAYS}
          value={days}
          onValue={setDays}
          required
        />
      </DialogForm>
    </Modal>
  );
}

export default function ApiKeysPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const canManage = access.can('apikeys:manage');
  const keys = useLoad(() => api<{ apiKeys: ApiKeyView[] }>('GET', orgPath(org, '/api-keys')), [org]);
  const catalogue = usePermissionCatalogue();
  const [pending, setPending] = useState<
    { kind: 'create' } | { kind: 'revoke'; key: ApiKeyView } | undefined
  >();
  const close = () => setPending(undefined);
  // A key holds only what its creator holds: offer no more than that.
  const grantable = (catalogue.data?.permissions ?? []).filter((p) => access.can(p.name));

  return (
    <section>
      <div className="toolbar">
        <h1>API keys</h1>
        {canManage && (
          <button type="button" className="primary" onClick={() => setPending({ kind: 'create' })}>
            New API key
          </button>
        )}
      </div>
      <ErrorNote error={keys.error ?? catalogue.error} />
      <Loaded load={keys} what="API keys">
        {(data) => (
          <DataTable
            label="API keys"
            columns={['Name', 'Token', 'Permissions', 'Status', 'Expires', 'Last used', 'Created by']}
            actions={canManage}
            rows={data.apiKeys}
            empty="No API keys yet."
          >
            {(key) => (
              <tr key={key.id}>
                <td>{key.name}</td>
                <td>
                  <code>{key.hint}</code>
                </td>
                <td>
                  <ul className="labels">
                    {key.permissions.map((permission) => (
                      <li key={permission}>
                        <code>{permission}</code>
                      </li>
                    ))}
                  </ul>
                  {key.selector && <span className="muted">on agents matching {key.selector}</span>}
                </td>
                <td>
                  <StatusBadge status={key.status} />
                </td>
                <td>
                  <When at={key.expiresAt} />
                </td>
                <td>
                  <When at={key.lastUsedAt} />{' '}
                  {key.lastUsedIp && <span className="muted">from {key.lastUsedIp}</span>}
                </td>
                <td>{key.createdByKey ? `${key.createdBy.email} (with a key)` : key.createdBy.email}</td>
                {canManage && (
                  <td>
                    {key.status === 'active' && (
                      <RowButton danger target={key.name} onClick={() => setPending({ kind: 'revoke', key })}>
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
      {pending?.kind === 'create' && (
        <CreateKeyDialog org={org} catalogue={grantable} onCreated={keys.reload} onClose={close} />
      )}
      {pending?.kind === 'revoke' && (
        <ConfirmDialog
          title={`Revoke API key ${pending.key.name}`}
          confirmLabel="Revoke key"
          danger
          onClose={close}
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/api-keys/${encodeURIComponent(pending.key.id)}`));
            keys.reload();
          }}
        >
          <p>It stops working at once, and so does every key created with it. This cannot be undone.</p>
        </ConfirmDialog>
      )}
    </section>
  );
}
