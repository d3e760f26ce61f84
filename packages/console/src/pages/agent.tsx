import { useEffect, useState } from 'react';
import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { LoadFailed } from '../components/dead-end';
import { Labels, Loading, StatusBadge, useLoad, When } from '../components/ui';
import { type LiveEvents, useLive, useLiveRefresh } from '../live';
import { useAccess } from '../session';
import type { AgentDetailView, CommandView, ServiceView } from '../types';
import { CommandRows } from './commands';
import { ServiceCard } from './services';

/** How long since `from`, in the largest two units (for "up 3 h 12 min"). */
function durationSince(from: string, now = Date.now()): string {
  let seconds = Math.max(0, Math.floor((now - Date.parse(from)) / 1000));
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['min', 60],
    ['s', 1],
  ] as const) {
    const count = Math.floor(seconds / size);
    seconds -= count * size;
    if (count > 0 || (parts.length === 0 && unit === 's')) parts.push(`${count} ${unit}`);
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

/** One agent's facts, its services and its recent commands. */
export default function AgentPage() {
  const { org = '', agent: agentId = '' } = useParams();
  const access = useAccess();
  const agent = useLoad(
    () => api<AgentDetailView>('GET', orgPath(org, `/agents/${encodeURIComponent(agentId)}`)),
    [org, agentId],
  );
  const services = useLoad(
    () =>
      access.can('services:read')
        ? api<{ services: ServiceView[]; next: string | null }>(
            'GET',
            orgPath(org, `/services?agent=${encodeURIComponent(agentId)}&limit=50`),
          )
        : Promise.resolve(undefined),
    [org, agentId],
  );
  const commands = useLoad(
    () =>
      access.can('commands:read')
        ? api<{ commands: CommandView[]; next: string | null }>(
            'GET',
            orgPath(org, `/commands?agent=${encodeURIComponent(agentId)}&limit=10`),
          )
        : Promise.resolve(undefined),
    [org, agentId],
  );
  // Its heartbeats move "last seen" in place; coming or going changes the connection's facts too,
  // which only a reload tells (as does the stream reopening).
  const [heard, setHeard] = useState<LiveEvents['agent'] | undefined>();
  // biome-ignore lint/correctness/useExhaustiveDependencies: another agent starts afresh.
  useEffect(() => setHeard(undefined), [agentId]);
  useLive(['agent'], (event) => {
    if (event.id === agentId) setHeard(event);
  });
  useLiveRefresh(
    ['agent'],
    agent.reload,
    (event) => event.id === agentId && event.status !== (heard?.status ?? agent.data?.status),
  );
  if (agent.error) return <LoadFailed error={agent.error} what="agent" />;
  if (!agent.data) return <Loading what="the agent" />;
  const a =
    heard && heard.lastSeenAt !== null && (agent.data.lastSeenAt ?? '') < heard.lastSeenAt
      ? { ...agent.data, lastSeenAt: heard.lastSeenAt }
      : agent.data;
  return (
    <section>
      <p>
        <Link to={`/orgs/${org}/agents`}>All agents</Link>
      </p>
      <h1>
        {a.name} <StatusBadge status={a.status} />
      </h1>
      {a.statusReason && (
        <p className="unavailable-note" role="note">
          {a.statusReason}
        </p>
      )}
      <dl className="summary" aria-label="Agent facts">
        <div>
          <dt>Status</dt>
          <dd>{a.status}</dd>
        </div>
        <div>
          <dt>Agent version</dt>
          <dd>{a.connection?.agentVersion || <span className="muted">known while connected</span>}</dd>
        </div>
        <div>
          <dt>Connected since</dt>
          <dd>
            {a.connection ? (
              <>
                <When at={a.connection.connectedAt} /> (up {durationSince(a.connection.connectedAt)})
              </>
            ) : (
              <span className="muted">not connected</span>
            )}
          </dd>
        </div>
        <div>
          <dt>Connection address</dt>
          <dd>
            {a.connection ? (
              <code>{a.connection.address}</code>
            ) : (
              <span className="muted">not connected</span>
            )}
          </dd>
        </div>
        <div>
          <dt>Last seen</dt>
          <dd>
            <When at={a.lastSeenAt} />
          </dd>
        </div>
        <div>
          <dt>Host</dt>
          <dd>{a.hostname || <span className="muted">not given</span>}</dd>
        </div>
        <div>
          <dt>Labels</dt>
          <dd>
            <Labels labels={a.labels} />
          </dd>
        </div>
        <div>
          <dt>Registered</dt>
          <dd>
            <When at={a.createdAt} />
          </dd>
        </div>
        <div>
          <dt>Id</dt>
          <dd>
            <code>{a.id}</code>
          </dd>
        </div>
      </dl>
      {services.data && (
        <>
          <h2>Services</h2>
          {services.data.services.length === 0 ? (
            <p className="muted">This agent has reported no service.</p>
          ) : (
            <div className="cards">
              {services.data.services.map((service) => (
                <ServiceCard key={service.id} org={org} service={service} />
              ))}
            </div>
          )}
        </>
      )}
      {commands.data && (
        <>
          <h2>Recent commands</h2>
          {commands.data.commands.length === 0 ? (
            <p className="muted">No command has been run on this agent.</p>
          ) : (
            <CommandRows org={org} commands={commands.data.commands} />
          )}
          {commands.data.next && (
            <p>
              <Link to={`/orgs/${org}/commands?agent=${encodeURIComponent(a.id)}`}>
                All commands on {a.name}
              </Link>
            </p>
          )}
        </>
      )}
    </section>
  );
}
