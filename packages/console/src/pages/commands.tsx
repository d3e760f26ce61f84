import { useState } from 'react';
import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable } from '../components/data-table';
import { ErrorNote, Loading, RiskBadge, StatusBadge, useLoad, When } from '../components/ui';
import { COMMAND_STATUSES, type CommandView } from '../types';

/** Rows of commands; shared by the commands list and the approvals inbox. */
export function CommandRows({ org, commands }: { org: string; commands: CommandView[] }) {
  return (
    <DataTable
      label="Commands"
      columns={['Action', 'Risk', 'Status', 'Requested by', 'Created']}
      rows={commands}
    >
      {(command) => (
        <tr key={command.id}>
          <td>
            <Link to={`/orgs/${org}/commands/${command.id}`}>
              {command.service}/{command.action}
            </Link>
          </td>
          <td>
            <RiskBadge risk={command.risk} />
          </td>
          <td>
            <StatusBadge status={command.status} />
          </td>
          <td>
            <code>{command.requestedBy}</code>
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
  const [status, setStatus] = useState('');
  const [before, setBefore] = useState<string[]>([]);
  const cursor = before.at(-1);
  const { data, error, reload } = useLoad(() => {
    const query = new URLSearchParams({ limit: '50' });
    if (status) query.set('status', status);
    if (cursor) query.set('before', cursor);
    return api<{ commands: CommandView[]; next: string | null }>('GET', orgPath(org, `/commands?${query}`));
  }, [org, status, cursor]);
  return (
    <section>
      <h1>Commands</h1>
      <div className="toolbar">
        <label htmlFor="status-filter">Status</label>
        <select
          id="status-filter"
          value={status}
          onChange={(e) => {
            setStatus(e.target.value);
            setBefore([]);
          }}
        >
          <option value="">any</option>
          {COMMAND_STATUSES.map((s) => (
            <option key={s} value={s}>
              {s.replaceAll('_', ' ')}
            </option>
          ))}
        </select>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="commands" />}
      {data && data.commands.length === 0 && <p className="muted">No commands.</p>}
      {data && data.commands.length > 0 && <CommandRows org={org} commands={data.commands} />}
      <div className="actions">
        {before.length > 0 && (
          <button type="button" onClick={() => setBefore(before.slice(0, -1))}>
            Newer
          </button>
        )}
        {data?.next && (
          <button type="button" onClick={() => setBefore([...before, data.next!])}>
            Older
          </button>
        )}
      </div>
    </section>
  );
}
