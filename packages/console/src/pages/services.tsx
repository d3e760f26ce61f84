import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { ErrorNote, Loading, RiskBadge, StatusBadge, useLoad, When } from '../components/ui';
import { useAccess } from '../session';
import type { ServiceView } from '../types';

function ServiceCard({ org, service }: { org: string; service: ServiceView }) {
  const access = useAccess();
  const headingId = `service-${service.id}`;
  return (
    <article className="card" aria-labelledby={headingId}>
      <header className="card-head">
        <h2 id={headingId}>
          {service.name} <span className="muted">on {service.agent.name}</span>
        </h2>
        <StatusBadge status={service.health.status} />
      </header>
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
              {access.can('commands:create') && (
                <Link
                  className="button"
                  to={`/orgs/${org}/services/${service.agent.id}/${encodeURIComponent(service.name)}/${encodeURIComponent(action.name)}`}
                  aria-label={`Run ${action.name} on ${service.name} (${service.agent.name})`}
                >
                  Run
                </Link>
              )}
            </li>
          ))}
        </ul>
      )}
    </article>
  );
}

export default function ServicesPage() {
  const { org = '' } = useParams();
  const { data, error, reload } = useLoad(
    () => api<{ services: ServiceView[] }>('GET', orgPath(org, '/services')),
    [org],
  );
  return (
    <section>
      <div className="toolbar">
        <h1>Services</h1>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="services" />}
      {data && data.services.length === 0 && <p className="muted">No agent has reported a service yet.</p>}
      <div className="cards">
        {data?.services.map((service) => (
          <ServiceCard key={service.id} org={org} service={service} />
        ))}
      </div>
    </section>
  );
}
