import { useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import {
  ConfirmDialog,
  CopyButton,
  ErrorNote,
  Field,
  Labels,
  Loading,
  Modal,
  parseLabelText,
  StatusBadge,
  useLoad,
  When,
} from '../components/ui';
import { useAccess } from '../session';
import type { AgentView, RegistrationTokenView } from '../types';

type Lifecycle = 'disable' | 'enable' | 'revoke';

const LIFECYCLE_TEXT: Record<Lifecycle, { title: string; body: string; button: string }> = {
  disable: {
    title: 'Disable agent',
    body: 'Its connection ends and it cannot connect or run commands until it is enabled again.',
    button: 'Disable',
  },
  enable: { title: 'Enable agent', body: 'It may connect and run commands again.', button: 'Enable' },
  revoke: {
    title: 'Revoke agent',
    body: 'Revoking is final: its connection ends, it can never connect again, and its commands in flight end as failed.',
    button: 'Revoke for good',
  },
};

function CreateTokenDialog({ org, onClose }: { org: string; onClose: () => void }) {
  const [description, setDescription] = useState('');
  const [labels, setLabels] = useState('');
  const [minutes, setMinutes] = useState(60);
  const [uses, setUses] = useState(1);
  const [error, setError] = useState<unknown>();
  const [created, setCreated] = useState<{ token: string; expiresAt: string } | undefined>();
  const parsed = parseLabelText(labels);

  if (created) {
    const install = `bulwark-agent register --server ${location.origin} --token ${created.token}`;
    return (
      <Modal title="Registration token created" onClose={onClose}>
        <p className="notice">
          This token is shown only now. It expires <When at={created.expiresAt} />.
        </p>
        <Field label="Install command">
          {(id) => <textarea id={id} readOnly rows={3} value={install} className="mono" />}
        </Field>
        <div className="actions">
          <CopyButton text={install} label="Copy command" />
          <button type="button" className="primary" onClick={onClose}>
            Done
          </button>
        </div>
      </Modal>
    );
  }
  return (
    <Modal title="New registration token" onClose={onClose}>
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          if (!parsed) return;
          try {
            setCreated(
              await api('POST', orgPath(org, '/agent-registration-tokens'), {
                description,
                labels: parsed,
                expiresInMinutes: minutes,
                uses,
              }),
            );
          } catch (failure) {
            setError(failure);
          }
        }}
      >
        <Field label="Description">
          {(id) => (
            <input
              id={id}
              value={description}
              maxLength={200}
              onChange={(e) => setDescription(e.target.value)}
            />
          )}
        </Field>
        <Field
          label="Labels for the agents it registers"
          hint="key=value, separated by commas"
          error={parsed ? undefined : 'Write labels as key=value, separated by commas.'}
        >
          {(id, describedBy) => (
            <input
              id={id}
              value={labels}
              aria-describedby={describedBy}
              aria-invalid={parsed ? undefined : true}
              placeholder="env=prod, team=payments"
              onChange={(e) => setLabels(e.target.value)}
            />
          )}
        </Field>
        <Field label="Expires after (minutes)" hint="At most 30 days.">
          {(id, describedBy) => (
            <input
              id={id}
              type="number"
              min={1}
              max={43200}
              aria-describedby={describedBy}
              value={minutes}
              onChange={(e) => setMinutes(Number(e.target.value))}
            />
          )}
        </Field>
        <Field label="Registrations allowed">
          {(id) => (
            <input
              id={id}
              type="number"
              min={1}
              max={1000}
              value={uses}
              onChange={(e) => setUses(Number(e.target.value))}
            />
          )}
        </Field>
        <ErrorNote error={error} />
        <div className="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={!parsed}>
            Create token
          </button>
        </div>
      </form>
    </Modal>
  );
}

function RegistrationTokens({ org }: { org: string }) {
  const [creating, setCreating] = useState(false);
  const [revoking, setRevoking] = useState<RegistrationTokenView | undefined>();
  const { data, error, reload } = useLoad(
    () => api<{ tokens: RegistrationTokenView[] }>('GET', orgPath(org, '/agent-registration-tokens')),
    [org],
  );
  return (
    <section aria-labelledby="tokens-heading">
      <div className="toolbar">
        <h2 id="tokens-heading">Registration tokens</h2>
        <button type="button" className="primary" onClick={() => setCreating(true)}>
          New registration token
        </button>
      </div>
      <ErrorNote error={error} />
      {data && data.tokens.length === 0 && <p className="muted">No registration tokens.</p>}
      {data && data.tokens.length > 0 && (
        <div className="table-wrap">
          <table aria-label="Registration tokens">
            <thead>
              <tr>
                <th>Description</th>
                <th>Status</th>
                <th>Labels</th>
                <th>Uses</th>
                <th>Expires</th>
                <th>
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {data.tokens.map((token) => (
                <tr key={token.id}>
                  <td>{token.description || <span className="muted">{token.id}</span>}</td>
                  <td>
                    <StatusBadge status={token.status} />
                  </td>
                  <td>
                    <Labels labels={token.labels} />
                  </td>
                  <td>
                    {token.uses} / {token.usesAllowed}
                  </td>
                  <td>
                    <When at={token.expiresAt} />
                  </td>
                  <td>
                    {token.status === 'active' && (
                      <button type="button" onClick={() => setRevoking(token)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {creating && (
        <CreateTokenDialog
          org={org}
          onClose={() => {
            setCreating(false);
            reload();
          }}
        />
      )}
      {revoking && (
        <ConfirmDialog
          title="Revoke registration token"
          confirmLabel="Revoke token"
          danger
          onConfirm={async () => {
            await api('DELETE', orgPath(org, `/agent-registration-tokens/${revoking.id}`));
            reload();
          }}
          onClose={() => setRevoking(undefined)}
        >
          <p>
            No agent can register with “{revoking.description || revoking.id}” once it is revoked. Agents
            already registered with it stay.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}

export default function AgentsPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const [selector, setSelector] = useState('');
  const [applied, setApplied] = useState('');
  const [pending, setPending] = useState<{ agent: AgentView; verb: Lifecycle } | undefined>();
  const { data, error, reload } = useLoad(
    () =>
      api<{ agents: AgentView[]; next: string | null }>(
        'GET',
        orgPath(org, `/agents?limit=200${applied ? `&selector=${encodeURIComponent(applied)}` : ''}`),
      ),
    [org, applied],
  );
  const canManage = access.can('agents:manage');
  return (
    <section>
      <h1>Agents</h1>
      <form
        className="toolbar"
        onSubmit={(event) => {
          event.preventDefault();
          setApplied(selector.trim());
        }}
      >
        <Field label="Label selector" hint="For example env=prod,team in (payments, core)">
          {(id, describedBy) => (
            <input
              id={id}
              value={selector}
              aria-describedby={describedBy}
              onChange={(e) => setSelector(e.target.value)}
            />
          )}
        </Field>
        <button type="submit">Filter</button>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </form>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="agents" />}
      {data && data.agents.length === 0 && (
        <p className="muted">No agents{applied ? ' match this selector' : ''}.</p>
      )}
      {data && data.agents.length > 0 && (
        <div className="table-wrap">
          <table aria-label="Agents">
            <thead>
              <tr>
                <th>Name</th>
                <th>Status</th>
                <th>Labels</th>
                <th>Last seen</th>
                <th>Host</th>
                {canManage && (
                  <th>
                    <span className="visually-hidden">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {data.agents.map((agent) => (
                <tr key={agent.id} data-agent={agent.id}>
                  <td>{agent.name}</td>
                  <td>
                    <StatusBadge status={agent.status} />
                  </td>
                  <td>
                    <Labels labels={agent.labels} />
                  </td>
                  <td>
                    <When at={agent.lastSeenAt} />
                  </td>
                  <td>{agent.hostname}</td>
                  {canManage && (
                    <td className="row-actions">
                      {agent.status === 'disabled' && (
                        <button type="button" onClick={() => setPending({ agent, verb: 'enable' })}>
                          Enable
                        </button>
                      )}
                      {(agent.status === 'online' || agent.status === 'offline') && (
                        <button type="button" onClick={() => setPending({ agent, verb: 'disable' })}>
                          Disable
                        </button>
                      )}
                      {agent.status !== 'revoked' && (
                        <button
                          type="button"
                          className="danger"
                          onClick={() => setPending({ agent, verb: 'revoke' })}
                        >
                          Revoke
                        </button>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {pending && (
        <ConfirmDialog
          title={`${LIFECYCLE_TEXT[pending.verb].title} ${pending.agent.name}`}
          confirmLabel={LIFECYCLE_TEXT[pending.verb].button}
          danger={pending.verb !== 'enable'}
          onConfirm={async () => {
            await api('POST', orgPath(org, `/agents/${pending.agent.id}/${pending.verb}`));
            reload();
          }}
          onClose={() => setPending(undefined)}
        >
          <p>{LIFECYCLE_TEXT[pending.verb].body}</p>
        </ConfirmDialog>
      )}
      {access.can('agents:register') && <RegistrationTokens org={org} />}
    </section>
  );
}
