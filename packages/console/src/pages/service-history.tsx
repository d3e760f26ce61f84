import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { Pager, useListParams } from '../components/data-table';
import { LoadFailed, NotFound } from '../components/dead-end';
import { ErrorNote, Loading, StatusBadge, useLoad } from '../components/ui';
import { COMMAND_STATUSES, type CommandView, type ServiceView } from '../types';
import { CommandRows } from './commands';
import { RunLink } from './services';

/** One service's run history: the commands run on it, newest first, paged, filtered by status. */
export default function ServiceHistoryPage() {
  const { org = '', agent = '', service: serviceName = '' } = useParams();
  const list = useListParams({ status: '', sort: '-created' });
  const service = useLoad(
    () =>
      api<{ services: ServiceView[] }>(
        'GET',
        orgPath(org, `/services?agent=${encodeURIComponent(agent)}&limit=200`),
      ).then((r) => r.services.find((s) => s.name === serviceName) ?? null),
    [org, agent, serviceName],
  );
  const commands = useLoad(
    () =>
      api<{ commands: CommandView[]; next: string | null }>(
        'GET',
        orgPath(org, `/commands?${list.query({ agent, service: serviceName, limit: '25' })}`),
      ),
    [org, agent, serviceName, list.key],
  );
  if (service.error) return <LoadFailed error={service.error} what="service" />;
  if (service.data === undefined) return <Loading what="the service" />;
  if (service.data === null) return <NotFound what="service on this agent" />;
  const s = service.data;
  return (
    <section>
      <p>
        <Link to={`/orgs/${org}/services`}>All services</Link>
      </p>
      <h1>
        Run history of {s.name}{' '}
        <span className="muted">
          on{' '}
          <Link to={`/orgs/${org}/agents/${s.agent.id}`} title={s.agent.id}>
            {s.agent.name}
          </Link>
        </span>
      </h1>
      {!s.available && (
        <p className="unavailable-note" role="note">
          <StatusBadge status={s.agent.status} /> Unavailable: {s.unavailableReason}
        </p>
      )}
      {s.actions.length > 0 && (
        <ul className="actions-list">
          {s.actions.map((action) => (
            <li key={action.name}>
              <strong>{action.name}</strong>
              <RunLink org={org} service={s} action={action.name} />
            </li>
          ))}
        </ul>
      )}
      <div className="toolbar">
        <div className="field">
          <label htmlFor="history-status-filter">Status</label>
          <select
            id="history-status-filter"
            value={list.get('status')}
            onChange={(event) => list.set({ status: event.target.value })}
          >
            <option value="">any</option>
            {COMMAND_STATUSES.map((status) => (
              <option key={status} value={status}>
                {status.replaceAll('_', ' ')}
              </option>
            ))}
          </select>
        </div>
        <button type="button" onClick={commands.reload}>
          Refresh
        </button>
      </div>
      <ErrorNote error={commands.error} />
      {!commands.data && !commands.error && <Loading what="commands" />}
      {commands.data && commands.data.commands.length === 0 && (
        <p className="muted">
          No command has been run on this service{list.get('status') ? ' in this state' : ''}.
        </p>
      )}
      {commands.data && commands.data.commands.length > 0 && (
        <CommandRows org={org} commands={commands.data.commands} sorting={list.sorting('-created')} />
      )}
      {commands.data && <Pager label="Run history" {...list.pager(commands.data.next)} />}
    </section>
  );
}
