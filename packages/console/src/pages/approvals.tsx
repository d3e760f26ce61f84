import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { Decide } from '../components/decide';
import { AgentName, Person } from '../components/people';
import { Ago } from '../components/time';
import { ErrorNote, Loading, RiskBadge, useLoad } from '../components/ui';
import { useLiveRefresh } from '../live';
import type { BulkRunSummary, CommandView } from '../types';

/**
 * Commands waiting for the caller's decision: not their own, not ones they decided already, within
 * their scope. Kept current by the organization's live stream: a card comes and goes as commands
 * are asked for and decided, here or elsewhere.
 */
export default function ApprovalsPage() {
  const { org = '' } = useParams();
  const { data, error, reload } = useLoad(
    () => api<{ commands: CommandView[] }>('GET', orgPath(org, '/approvals')),
    [org],
  );
  const runs = useLoad(
    () => api<{ runs: BulkRunSummary[] }>('GET', orgPath(org, '/approvals/bulk-runs')),
    [org],
  );
  useLiveRefresh(['approval'], () => {
    reload();
    runs.reload();
  });
  return (
    <section>
      <div className="toolbar">
        <h1>Approvals</h1>
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="approvals" />}
      <ErrorNote error={runs.error} />
      {data && runs.data && data.commands.length === 0 && runs.data.runs.length === 0 && (
        <p className="muted">Nothing is waiting for you.</p>
      )}
      {runs.data && runs.data.runs.length > 0 && (
        <div className="cards">
          {runs.data.runs.map((run) => (
            <article key={run.id} className="card" aria-label={`Bulk run ${run.service}/${run.action}`}>
              <header className="card-head">
                <h2>
                  <Link to={`/orgs/${org}/bulk-runs/${run.id}`} title={run.id}>
                    Bulk run: {run.service}/{run.action}
                  </Link>
                </h2>
                <RiskBadge risk={run.risk} />
              </header>
              <p className="muted">
                Requested by <Person {...run.requestedBy} /> <Ago at={run.createdAt} /> on {run.targetCount}{' '}
                agent{run.targetCount === 1 ? '' : 's'} matching <code>{run.selector}</code>
              </p>
              <p>
                Parameters: <code>{JSON.stringify(run.params)}</code>
              </p>
              {run.reason && <p>Reason: {run.reason}</p>}
              <p>
                <Link to={`/orgs/${org}/bulk-runs/${run.id}`}>Review the targets and decide</Link>
              </p>
            </article>
          ))}
        </div>
      )}
      <div className="cards">
        {data?.commands.map((command) => (
          <article key={command.id} className="card" aria-label={`${command.service}/${command.action}`}>
            <header className="card-head">
              <h2>
                <Link to={`/orgs/${org}/commands/${command.id}`} title={command.id}>
                  {command.service}/{command.action}
                </Link>
              </h2>
              <RiskBadge risk={command.risk} />
            </header>
            <p className="muted">
              Requested by{' '}
              <Person
                id={command.requestedBy}
                name={command.requestedByName}
                email={command.requestedByEmail}
              />{' '}
              <Ago at={command.createdAt} /> on agent{' '}
              <AgentName id={command.agentId} name={command.agentName} /> · expires{' '}
              <Ago at={command.approvalExpiresAt} none="never" />
            </p>
            <p>
              Parameters: <code>{JSON.stringify(command.params)}</code>
            </p>
            {command.reason && <p>Reason: {command.reason}</p>}
            <p>
              {command.approvals.filter((a) => a.decision === 'approved').length} of{' '}
              {command.requiredApprovals} approvals
              {command.approvals.length > 0 && (
                <>
                  {' '}
                  (
                  {command.approvals.map((a, index) => (
                    <span key={a.userId}>
                      {index > 0 && ', '}
                      <Person id={a.userId} name={a.name} email={a.email} />
                    </span>
                  ))}
                  )
                </>
              )}
            </p>
            <Decide org={org} command={command} onDone={reload} />
          </article>
        ))}
      </div>
    </section>
  );
}
