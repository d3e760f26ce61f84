import { useEffect, useRef, useState } from 'react';
import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, Pager, RowButton, SearchBox, useListParams } from '../components/data-table';
import { InstallAgentDialog } from '../components/install-agent';
import {
  ConfirmDialog,
  DialogActions,
  ErrorNote,
  InputField,
  Labels,
  Loaded,
  Modal,
  parseLabelText,
  StatusBadge,
  useLoad,
  When,
} from '../components/ui';
import { type LiveEvents, useLive, useLiveRefresh } from '../live';
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

  if (created)
    return <InstallAgentDialog token={created.token} expiresAt={created.expiresAt} onClose={onClose} />;
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
        <InputField label="Description" value={description} maxLength={200} onValue={setDescription} />
        <InputField
          label="Labels for the agents it registers"
          hint="key=value, separated by commas"
          error={parsed ? undefined : 'Write labels as key=value, separated by commas.'}
          value={labels}
          aria-invalid={parsed ? undefined : true}
          placeholder="env=prod, team=payments"
          onValue={setLabels}
        />
        <InputField
          label="Expires after (minutes)"
          hint="At most 30 days."
          type="number"
          min={1}
          max={43200}
          value={minutes}
          onValue={(value) => setMinutes(Number(value))}
        />
        <InputField
          label="Registrations allowed"
          type="number"
          min={1}
          max={1000}
          value={uses}
          onValue={(value) => setUses(Number(value))}
        />
        <DialogActions
          error={error}
          submitLabel="Create token"
          canSubmit={Boolean(parsed)}
          onCancel={onClose}
        />
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
      {data && (
        <DataTable
          label="Registration tokens"
          columns={['Description', 'Status', 'Labels', 'Uses', 'Expires']}
          actions
          quietActionsHeading
          rows={data.tokens}
          empty="No registration tokens."
        >
          {(token) => (
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
                  <RowButton
                    target={`the token ${token.description || token.id}`}
                    onClick={() => setRevoking(token)}
                  >
                    Revoke
                  </RowButton>
                )}
              </td>
            </tr>
          )}
        </DataTable>
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

type Presence = LiveEvents['agent'];

const later = (a: string | null, b: string | null) => (a === null ? b : b === null || a >= b ? a : b);

/**
 * The listed agents with online, offline and last seen as the live stream last said, applied to the
 * rows in place: connections, disconnections and heartbeats cost no request. What the rows cannot
 * tell reloads the list: an agent not listed (it may be new; one that then stays off this page or
 * outside the filters is not reloaded for again), a change of status under a status filter, and the
 * stream reopening (what happened while it was closed was not sent).
 */
function useLivePresence(
  rows: AgentView[] | undefined,
  reload: () => void,
  listKey: string,
  statusFilter: string,
): AgentView[] | undefined {
  const [presence, setPresence] = useState<ReadonlyMap<string, Presence>>(new Map());
  const passedOver = useRef(new Set<string>());
  // biome-ignore lint/correctness/useExhaustiveDependencies: another list starts afresh.
  useEffect(() => {
    passedOver.current.clear();
  }, [listKey]);
  useLive(['ready'], () => {
    passedOver.current.clear();
    setPresence(new Map());
  });
  useLiveRefresh(['agent'], reload, (event) => {
    const row = rows?.find((agent) => agent.id === event.id);
    if (!row) {
      if (passedOver.current.has(event.id)) return false;
      passedOver.current.add(event.id);
      return true;
    }
    return statusFilter !== '' && event.status !== (presence.get(event.id)?.status ?? row.status);
  });
  useLive(['agent'], (event) => setPresence((known) => new Map(known).set(event.id, event)));
  return rows?.map((agent) => {
    const live = presence.get(agent.id);
    if (!live) return agent;
    return {
      ...agent,
      // Disabled and revoked come from the list: the stream speaks of active agents coming and going.
      status: agent.status === 'online' || agent.status === 'offline' ? live.status : agent.status,
      lastSeenAt: later(agent.lastSeenAt, live.lastSeenAt),
    };
  });
}

export default function AgentsPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  // Search, filters, sort and page live in the URL: a link shows the same list, a reload keeps it.
  const list = useListParams({ q: '', status: '', selector: '', sort: 'name' });
  const applied = list.get('selector');
  const [selector, setSelector] = useState(applied);
  useEffect(() => setSelector(applied), [applied]);
  const [pending, setPending] = useState<{ agent: AgentView; verb: Lifecycle } | undefined>();
  const agents = useLoad(
    () =>
      api<{ agents: AgentView[]; next: string | null }>(
        'GET',
        orgPath(org, `/agents?${list.query({ limit: '50' })}`),
      ),
    [org, list.key],
  );
  const filtered = Boolean(applied || list.get('q') || list.get('status'));
  const shown = useLivePresence(agents.data?.agents, agents.reload, list.key, list.get('status'));
  const canManage = access.can('agents:manage');
  return (
    <section>
      <h1>Agents</h1>
      <form
        className="toolbar"
        onSubmit={(event) => {
          event.preventDefault();
          list.set({ selector: selector.trim() });
        }}
      >
        <SearchBox label="Search agents" value={list.get('q')} onSearch={(q) => list.set({ q })} />
        <div className="field">
          <label htmlFor="agent-status-filter">Status</label>
          <select
            id="agent-status-filter"
            value={list.get('status')}
            onChange={(event) => list.set({ status: event.target.value })}
          >
            <option value="">any</option>
            {['online', 'offline', 'disabled', 'revoked'].map((status) => (
              <option key={status} value={status}>
                {status}
              </option>
            ))}
          </select>
        </div>
        <InputField
          label="Label selector"
          hint="For example env=prod,team in (payments, core)"
          value={selector}
          onValue={setSelector}
        />
        <button type="submit">Filter</button>
        <button type="button" onClick={agents.reload}>
          Refresh
        </button>
      </form>
      <ErrorNote error={agents.error} />
      <Loaded load={agents} what="agents">
        {(data) => (
          <DataTable
            label="Agents"
            columns={[
              { label: 'Name', sort: 'name' },
              'Status',
              'Labels',
              'Last seen',
              { label: 'Host', sort: 'hostname' },
              { label: 'Registered', sort: 'created' },
            ]}
            sorting={list.sorting('name')}
            actions={canManage}
            quietActionsHeading
            rows={shown ?? data.agents}
            empty={`No agents${filtered ? ' match' : ''}.`}
          >
            {(agent) => (
              <tr key={agent.id} data-agent={agent.id}>
                <td>
                  <Link to={`/orgs/${org}/agents/${agent.id}`} title={agent.id}>
                    {agent.name}
                  </Link>
                </td>
                <td>
                  <span title={agent.statusReason ?? undefined}>
                    <StatusBadge status={agent.status} />
                  </span>
                </td>
                <td>
                  <Labels labels={agent.labels} />
                </td>
                <td>
                  <When at={agent.lastSeenAt} />
                </td>
                <td>{agent.hostname}</td>
                <td>
                  <When at={agent.createdAt} />
                </td>
                {canManage && (
                  <td className="row-actions">
                    {agent.status === 'disabled' && (
                      <RowButton target={agent.name} onClick={() => setPending({ agent, verb: 'enable' })}>
                        Enable
                      </RowButton>
                    )}
                    {(agent.status === 'online' || agent.status === 'offline') && (
                      <RowButton target={agent.name} onClick={() => setPending({ agent, verb: 'disable' })}>
                        Disable
                      </RowButton>
                    )}
                    {agent.status !== 'revoked' && (
                      <RowButton
                        danger
                        target={agent.name}
                        onClick={() => setPending({ agent, verb: 'revoke' })}
                      >
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
      {agents.data && <Pager label="Agents" {...list.pager(agents.data.next)} />}
      {pending && (
        <ConfirmDialog
          title={`${LIFECYCLE_TEXT[pending.verb].title} ${pending.agent.name}`}
          confirmLabel={LIFECYCLE_TEXT[pending.verb].button}
          danger={pending.verb !== 'enable'}
          onConfirm={async () => {
            await api('POST', orgPath(org, `/agents/${pending.agent.id}/${pending.verb}`));
            agents.reload();
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
