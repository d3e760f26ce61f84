import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable, Pager, SearchBox, type Sorting, useListParams } from '../components/data-table';
import { Person } from '../components/people';
import { ErrorNote, Loading, RiskBadge, StatusBadge, useLoad, When } from '../components/ui';
import { COMMAND_STATUSES, type CommandView } from '../types';

/** Rows of commands; shared by the commands list and the approvals inbox. */
export function CommandRows({
  org,
  commands,
  sorting,
}: {
  org: string;
  commands: CommandView[];
  /** On the commands list: headings sort it on the server. */
  sorting?: Sorting;
}) {
  return (
    <DataTable
      label="Commands"
      columns={[
        { label: 'Action', sort: 'action' },
        'Risk',
        { label: 'Status', sort: 'status' },
        'Requested by',
        { label: 'Created', sort: 'created' },
      ]}
      {...(sorting ? { sorting } : {})}
      rows={commands}
    >
      {(command) => (
        <tr key={command.id}>
          <td>
            <Link to={`/orgs/${org}/commands/${command.id}`} title={command.id}>
              {command.service}/{command.action}
            </Link>
            {command.agentName && <span className="muted"> on {command.agentName}</span>}
          </td>
          <td>
            <RiskBadge risk={command.risk} />
          </td>
          <td>
            <StatusBadge status={command.status} />
          </td>
          <td>
            <Person
              id={command.requestedBy}
              name={command.requestedByName}
              email={command.requestedByEmail}
            />
          </td>
          <td>
            <When at={command.createdAt} />
          </td>
        </tr>
      )}
    </DataTable>
  );
}

export default function CommandsPage() {
  const { org = '' } = useParams();
  // Search, filters, sort and page live in the URL: a link shows the same list, a reload keeps it.
  const list = useListParams({ q: '', status: '', agent: '', service: '', requester: '', sort: '-created' });
  const { data, error, reload } = useLoad(
    () =>
      api<{ commands: CommandView[]; next: string | null }>(
        'GET',
        orgPath(org, `/commands?${list.query({ limit: '50' })}`),
      ),
    [org, list.key],
  );
  const narrowed = ['agent', 'service', 'requester'].filter((name) => list.get(name));
  return (
    <section>
      <h1>Commands</h1>
      <div className="toolbar">
        <SearchBox label="Search commands" value={list.get('q')} onSearch={(q) => list.set({ q })} />
        <div className="field">
          <label htmlFor="status-filter">Status</label>
          <select
            id="status-filter"
            value={list.get('status')}
            onChange={(e) => list.set({ status: e.target.value })}
          >
            <option value="">any</option>
            {COMMAND_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.replaceAll('_', ' ')}
              </option>
            ))}
          </select>
        </div>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      {narrowed.length > 0 && (
        <p className="muted">
          Only the commands of this {narrowed.join(' and ')}.{' '}
          <button
            type="button"
            className="link"
            onClick={() => list.set({ agent: '', service: '', requester: '' })}
          >
            Show all
          </button>
        </p>
      )}
      <ErrorNote error={error} />
      {!data && !error && <Loading what="commands" />}
      {data && data.commands.length === 0 && <p className="muted">No commands.</p>}
      {data && data.commands.length > 0 && (
        <CommandRows org={org} commands={data.commands} sorting={list.sorting('-created')} />
      )}
      {data && <Pager label="Commands" {...list.pager(data.next)} />}
    </section>
  );
}
