import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { Pager, SearchBox, useListParams } from '../components/data-table';
import { ErrorNote, Loading, RiskBadge, StatusBadge, useLoad, When } from '../components/ui';
import { useAccess } from '../session';
import type { ServiceView } from '../types';

/** A link to run an action, or, when the agent can run nothing, a disabled button saying why. */
export function RunLink({ org, service, action }: { org: string; service: ServiceView; action: string }) {
  if (!service.available) {
    const reasonId = `unavailable-${service.id}-${action}`;
    return (
      <span className="run-unavailable">
        <button type="button" disabled aria-describedby={reasonId}>
          Run
          <span className="visually-hidden">
            {' '}
            {action} on {service.name} ({service.agent.name})
          </span>
        </button>
        <small id={reasonId} className="muted">
          {service.unavailableReason}
        </small>
      </span>
    );
  }
  return (
    <Link
      className="button"
      to={`/orgs/${org}/services/${service.agent.id}/${encodeURIComponent(service.name)}/${encodeURIComponent(action)}`}
      aria-label={`Run ${action} on ${service.name} (${service.agent.name})`}
    >
      Run
    </Link>
  );
}

export function ServiceCard({ org, service }: { org: string; service: ServiceView }) {
  const access = useAccess();
  const headingId = `service-${service.id}`;
  return (
    <article className="card" aria-labelledby={headingId}>
      <header className="card-head">
        <h2 id={headingId}>
          {service.name}{' '}
          <span className="muted">
            on{' '}
            <Link to={`/orgs/${org}/agents/${service.agent.id}`} title={service.agent.id}>
              {service.agent.name}
            </Link>
          </span>
        </h2>
        <StatusBadge status={service.health.status} />
      </header>
      {!service.available && (
        <p className="unavailable-note" role="note">
          <StatusBadge status={service.agent.status} /> Unavailable: {service.unavailableReason}
        </p>
      )}
      <p className="muted">
        {service.kind} {service.version} · reported <When at={service.updatedAt} />
        {service.health.message && ` · ${service.health.message}`}
      </p>
      <h3>Configuration</h3>
      {service.config.length === 0 ? (
        <p className="muted">None reported.</p>
      ) : (
        <dl className="config">
          {service.config.map((item) => (
            <div key={item.key}>
              <dt>
                <code>{item.key}</code>
              </dt>
              {/* Secrets never reach the server: only whether they are configured. */}
              <dd>
                {item.value !== undefined ? (
                  <code>{item.value}</code>
                ) : (
                  <span className="muted">{item.configured ? 'configured' : 'not configured'}</span>
                )}
              </dd>
            </div>
          ))}
        </dl>
      )}
      <h3>Actions</h3>
      {service.actions.length === 0 ? (
        <p className="muted">This service declares no actions.</p>
      ) : (
        <ul className="actions-list">
          {service.actions.map((action) => (
            <li key={action.name}>
              <span>
                <strong>{action.name}</strong> <RiskBadge risk={action.risk} />
                <br />
                <span className="muted">{action.description}</span>
              </span>
              {access.can('commands:create') && <RunLink org={org} service={service} action={action.name} />}
            </li>
          ))}
        </ul>
      )}
      {access.can('commands:read') && (
        <p>
          <Link to={`/orgs/${org}/services/${service.agent.id}/${encodeURIComponent(service.name)}`}>
            Run history
            <span className="visually-hidden">
              {' '}
              of {service.name} on {service.agent.name}
            </span>
          </Link>
        </p>
      )}
    </article>
  );
}

const SORTS: Array<[string, string]> = [
  ['name', 'Name (A–Z)'],
  ['-name', 'Name (Z–A)'],
  ['agent', 'Agent (A–Z)'],
  ['-agent', 'Agent (Z–A)'],
  ['health', 'Health'],
  ['-updated', 'Recently reported'],
];

export default function ServicesPage() {
  const { org = '' } = useParams();
  // Search, filters, sort and page live in the URL: a link shows the same list, a reload keeps it.
  const list = useListParams({ q: '', health: '', sort: 'name' });
  const { data, error, reload } = useLoad(
    () =>
      api<{ services: ServiceView[]; next: string | null }>(
        'GET',
        orgPath(org, `/services?${list.query({ limit: '20' })}`),
      ),
    [org, list.key],
  );
  const filtered = Boolean(list.get('q') || list.get('health'));
  return (
    <section>
      <div className="toolbar">
        <h1>Services</h1>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      <div className="toolbar">
        <SearchBox label="Search services" value={list.get('q')} onSearch={(q) => list.set({ q })} />
        <div className="field">
          <label htmlFor="service-health-filter">Health</label>
          <select
            id="service-health-filter"
            value={list.get('health')}
            onChange={(event) => list.set({ health: event.target.value })}
          >
            <option value="">any</option>
            {['up', 'degraded', 'down', 'unknown'].map((health) => (
              <option key={health} value={health}>
                {health}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="service-sort">Sort by</label>
          <select
            id="service-sort"
            value={list.get('sort')}
            onChange={(event) => list.set({ sort: event.target.value })}
          >
            {SORTS.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </div>
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="services" />}
      {data && data.services.length === 0 && (
        <p className="muted">{filtered ? 'No services match.' : 'No agent has reported a service yet.'}</p>
      )}
      <div className="cards">
        {data?.services.map((service) => (
          <ServiceCard key={service.id} org={org} service={service} />
        ))}
      </div>
      {data && <Pager label="Services" {...list.pager(data.next)} />}
    </section>
  );
}
