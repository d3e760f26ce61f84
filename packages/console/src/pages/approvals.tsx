import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { Decide } from '../components/decide';
import { ErrorNote, Loading, RiskBadge, useLoad, When } from '../components/ui';
import type { CommandView } from '../types';

/** Commands waiting for the caller's decision: not their own, within their scope. */
export default function ApprovalsPage() {
  const { org = '' } = useParams();
  const { data, error, reload } = useLoad(
    () => api<{ commands: CommandView[] }>('GET', orgPath(org, '/approvals')),
    [org],
  );
  return (
    <section>
      <div className="toolbar">
        <h1>Approvals</h1>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="approvals" />}
      {data && data.commands.length === 0 && <p className="muted">Nothing is waiting for you.</p>}
      <div className="cards">
        {data?.commands.map((command) => (
          <article key={command.id} className="card" aria-label={`${command.service}/${command.action}`}>
            <header className="card-head">
              <h2>
                <Link to={`/orgs/${org}/commands/${command.id}`}>
                  {command.service}/{command.action}
                </Link>
              </h2>
              <RiskBadge risk={command.risk} />
            </header>
            <p className="muted">
              Requested by <code>{command.requestedBy}</code> <When at={command.createdAt} /> on agent{' '}
              <code>{command.agentId}</code> · expires <When at={command.approvalExpiresAt} />
            </p>
            <p>
              Parameters: <code>{JSON.stringify(command.params)}</code>
            </p>
            {command.reason && <p>Reason: {command.reason}</p>}
            <p>
              {command.approvals.filter((a) => a.decision === 'approved').length} of{' '}
              {command.requiredApprovals} approvals
            </p>
            <Decide org={org} command={command} onDone={reload} />
          </article>
        ))}
      </div>
    </section>
  );
}
