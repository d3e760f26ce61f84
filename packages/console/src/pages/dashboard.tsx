import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { ErrorNote, Loading, useLoad } from '../components/ui';
import { useAccess } from '../session';
import type { AgentView, CommandView, ServiceView } from '../types';

const HOURS = 24;
const GROUPS = ['succeeded', 'failed', 'in progress', 'other'] as const;
type Group = (typeof GROUPS)[number];

function groupOf(status: CommandView['status']): Group {
  if (status === 'succeeded') return 'succeeded';
  if (status === 'failed' || status === 'timed_out') return 'failed';
  if (['awaiting_approval', 'queued', 'dispatched', 'running'].includes(status)) return 'in progress';
  return 'other';
}

function countBy<T>(items: T[], key: (item: T) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return counts;
}

/** Commands created per hour over the last day, stacked by how they stand. SVG, no inline style. */
function CommandsChart({ commands }: { commands: CommandView[] }) {
  const now = Date.now();
  const start = now - HOURS * 3_600_000;
  const buckets = Array.from({ length: HOURS }, (_, hour) => ({
    at: start + hour * 3_600_000,
    counts: new Map<Group, number>(),
  }));
  for (const command of commands) {
    const at = Date.parse(command.createdAt);
    if (at < start) continue;
    const { counts } = buckets[Math.min(HOURS - 1, Math.floor((at - start) / 3_600_000))]!;
    counts.set(groupOf(command.status), (counts.get(groupOf(command.status)) ?? 0) + 1);
  }
  const peak = Math.max(1, ...buckets.map((b) => [...b.counts.values()].reduce((a, n) => a + n, 0)));
  const width = 480;
  const height = 120;
  const barWidth = width / HOURS;
  const total = buckets.reduce((sum, b) => sum + [...b.counts.values()].reduce((a, n) => a + n, 0), 0);
  return (
    <figure className="chart">
      <svg
        viewBox={`0 0 ${width} ${height}`}
        role="img"
        aria-label={`${total} commands in the last 24 hours, by hour`}
      >
        {buckets.map((bucket, hour) => {
          let y = height;
          return GROUPS.map((group) => {
            const count = bucket.counts.get(group) ?? 0;
            if (count === 0) return null;
            const barHeight = (count / peak) * (height - 4);
            y -= barHeight;
            return (
              <rect
                key={`${bucket.at}-${group}`}
                className={`bar-${group.replace(' ', '-')}`}
                x={hour * barWidth + 1}
                y={y}
                width={barWidth - 2}
                height={barHeight}
              >
                <title>{`${count} ${group}`}</title>
              </rect>
            );
          });
        })}
      </svg>
      <figcaption>
        Commands per hour, last 24 hours.{' '}
        {GROUPS.map((group) => (
          <span key={group} className={`legend legend-${group.replace(' ', '-')}`}>
            {group}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}

export default function DashboardPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const { data, error } = useLoad(
    () =>
      Promise.all([
        access.can('agents:read')
          ? api<{ agents: AgentView[] }>('GET', orgPath(org, '/agents?limit=200')).then((r) => r.agents)
          : [],
        access.can('services:read')
          ? api<{ services: ServiceView[] }>('GET', orgPath(org, '/services')).then((r) => r.services)
          : [],
        access.can('commands:read')
          ? api<{ commands: CommandView[] }>('GET', orgPath(org, '/commands?limit=200')).then(
              (r) => r.commands,
            )
          : [],
        access.can('approvals:decide')
          ? api<{ commands: CommandView[] }>('GET', orgPath(org, '/approvals')).then((r) => r.commands)
          : [],
      ]),
    [org],
  );
  if (error) return <ErrorNote error={error} />;
  if (!data) return <Loading what="the dashboard" />;
  const [agents, services, commands, approvals] = data;
  const agentStatus = countBy(agents, (a) => a.status);
  const health = countBy(services, (s) => s.health.status);
  return (
    <section>
      <h1>{access.name}</h1>
      <div className="tiles">
        <article className="tile" aria-labelledby="tile-agents">
          <h2 id="tile-agents">Agents</h2>
          <p className="figure">
            <strong>{agentStatus.get('online') ?? 0}</strong> online
          </p>
          <p className="muted">
            {agentStatus.get('offline') ?? 0} offline · {agentStatus.get('disabled') ?? 0} disabled
          </p>
          <Link to={`/orgs/${org}/agents`}>See agents</Link>
        </article>
        <article className="tile" aria-labelledby="tile-services">
          <h2 id="tile-services">Services</h2>
          <ul className="plain">
            {[...health].map(([status, count]) => (
              <li key={status}>
                <strong>{count}</strong> {status}
              </li>
            ))}
            {health.size === 0 && <li className="muted">none reported</li>}
          </ul>
          <Link to={`/orgs/${org}/services`}>See services</Link>
        </article>
        <article className="tile" aria-labelledby="tile-approvals">
          <h2 id="tile-approvals">Pending approvals</h2>
          <p className="figure">
            <strong>{approvals.length}</strong> waiting for you
          </p>
          <Link to={`/orgs/${org}/approvals`}>Open the inbox</Link>
        </article>
      </div>
      {access.can('commands:read') && <CommandsChart commands={commands} />}
    </section>
  );
}
