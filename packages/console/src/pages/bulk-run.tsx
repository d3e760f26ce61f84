import { useMemo, useState } from 'react';
import { Link, useParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable } from '../components/data-table';
import { AgentName, Person } from '../components/people';
import { Ago, Elapsed, formatDuration } from '../components/time';
import { ConfirmDialog, ErrorNote, Loading, RiskBadge, StatusBadge, useLoad } from '../components/ui';
import { useLiveRefresh } from '../live';
import { useAccess, useSignedIn } from '../session';
import type { BulkRunView } from '../types';
import { ProgressBar, progressOf } from './bulk-runs';

/** Approve or reject the whole run: one decision for every target. A rejection says why. */
function DecideRun({ org, run, onDone }: { org: string; run: BulkRunView; onDone: () => void }) {
  const { user } = useSignedIn();
  const [comment, setComment] = useState('');
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  if (run.requestedBy.id === user.id)
    return <p className="muted">You asked for this run: someone else must approve or reject it.</p>;
  const mine = run.approvals.find((a) => a.by.id === user.id);
  if (mine) return <p className="muted">You {mine.decision} this run.</p>;
  const decide = async (verb: 'approve' | 'reject') => {
    setError(undefined);
    setBusy(true);
    try {
      await api('POST', orgPath(org, `/bulk-runs/${run.id}/${verb}`), { comment });
      onDone();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="decide" onSubmit={(e) => e.preventDefault()}>
      <label htmlFor="run-comment">Comment</label>
      <input
        id="run-comment"
        maxLength={500}
        value={comment}
        aria-describedby="run-comment-hint"
        onChange={(e) => setComment(e.target.value)}
      />
      <small id="run-comment-hint" className="muted">
        Your decision covers all {run.targetCount} targets. Optional to approve; a rejection must say why.
      </small>
      <div className="actions">
        <button type="button" className="primary" disabled={busy} onClick={() => void decide('approve')}>
          Approve the run
        </button>
        <button type="button" className="danger" disabled={busy} onClick={() => void decide('reject')}>
          Reject the run
        </button>
      </div>
      <ErrorNote error={error} labels={{ 'body.comment': 'Comment' }} />
    </form>
  );
}

const STOPPED: Record<string, string> = {
  error_threshold:
    'Stopped: more targets failed than the run allows. The targets it never sent are marked skipped.',
  cancelled: 'Cancelled: nothing more is sent, and targets not finished were told to stop.',
};

/** One bulk run: its request, its decision, and every target's progress, live. */
export default function BulkRunPage() {
  const { org = '', run: id = '' } = useParams();
  const access = useAccess();
  const [cancelling, setCancelling] = useState(false);
  const {
    data: run,
    error,
    reload,
  } = useLoad(() => api<BulkRunView>('GET', orgPath(org, `/bulk-runs/${encodeURIComponent(id)}`)), [org, id]);
  const targetIds = useMemo(() => new Set(run?.targets.map((t) => t.commandId)), [run]);
  useLiveRefresh(['command'], reload, (event) => targetIds.has(event.id));
  if (error) return <ErrorNote error={error} />;
  if (!run) return <Loading what="the bulk run" />;
  const open = run.status === 'awaiting_approval' || run.status === 'running';
  return (
    <section>
      <p>
        <Link to={`/orgs/${org}/bulk-runs`}>← Bulk runs</Link>
      </p>
      <div className="toolbar">
        <h1 title={run.id}>
          {run.service}/{run.action} on <code>{run.selector}</code>
        </h1>
        <StatusBadge status={run.status} />
        <RiskBadge risk={run.risk} />
        {open && access.can('commands:cancel') && (
          <button type="button" className="danger" onClick={() => setCancelling(true)}>
            Cancel the run
          </button>
        )}
      </div>
      {run.stopReason && <p className="notice">{STOPPED[run.stopReason] ?? run.stopReason}</p>}
      <dl className="summary">
        <div>
          <dt>Requested by</dt>
          <dd>
            <Person {...run.requestedBy} /> <Ago at={run.createdAt} />
          </dd>
        </div>
        <div>
          <dt>{run.finishedAt ? 'Took' : 'Running for'}</dt>
          <dd>
            {run.finishedAt ? (
              formatDuration(Date.parse(run.finishedAt) - Date.parse(run.createdAt))
            ) : (
              <Elapsed since={run.createdAt} />
            )}
          </dd>
        </div>
        <div>
          <dt>Parameters</dt>
          <dd>
            <code>{JSON.stringify(run.params)}</code>
          </dd>
        </div>
        {run.reason && (
          <div>
            <dt>Reason</dt>
            <dd>{run.reason}</dd>
          </div>
        )}
        <div>
          <dt>Limits</dt>
          <dd>
            {run.maxConcurrency.resolved} at once ({run.maxConcurrency.asked}); stops after more than{' '}
            {run.maxErrors.resolved} failed ({run.maxErrors.asked})
          </dd>
        </div>
        <div>
          <dt>Progress</dt>
          <dd>
            <ProgressBar run={run} />
            {progressOf(run.counts) || 'nothing yet'} of {run.targetCount}
          </dd>
        </div>
        {run.requiredApprovals > 0 && (
          <div>
            <dt>Approvals</dt>
            <dd>
              {run.approvals.filter((a) => a.decision === 'approved').length} of {run.requiredApprovals}
              {run.approvals.map((a) => (
                <span key={a.by.id}>
                  {' · '}
                  <Person {...a.by} /> {a.decision}
                  {a.comment && `: ${a.comment}`}
                </span>
              ))}
            </dd>
          </div>
        )}
      </dl>
      {run.status === 'awaiting_approval' && access.can('approvals:decide') && (
        <DecideRun org={org} run={run} onDone={reload} />
      )}
      <h2>Targets</h2>
      <DataTable
        label="Targets"
        columns={['Agent', 'Status', 'Started', 'Finished', 'Outcome']}
        rows={run.targets}
      >
        {(target) => (
          <tr key={target.commandId}>
            <td>
              <Link to={`/orgs/${org}/agents/${target.agent.id}`}>
                <AgentName {...target.agent} />
              </Link>
            </td>
            <td>
              <Link to={`/orgs/${org}/commands/${target.commandId}`} title={target.commandId}>
                <StatusBadge status={target.status} />
              </Link>
            </td>
            <td>
              <Ago at={target.startedAt} />
            </td>
            <td>
              {target.finishedAt ? (
                <Ago at={target.finishedAt} />
              ) : target.startedAt ? (
                <Elapsed since={target.startedAt} />
              ) : (
                <span className="muted">not yet</span>
              )}
            </td>
            <td>
              {target.exitCode !== null && <code>exit {target.exitCode}</code>} {target.message}
            </td>
          </tr>
        )}
      </DataTable>
      {cancelling && (
        <ConfirmDialog
          title="Cancel this bulk run?"
          confirmLabel="Cancel the run"
          danger
          onConfirm={async () => {
            await api('POST', orgPath(org, `/bulk-runs/${run.id}/cancel`));
            reload();
          }}
          onClose={() => setCancelling(false)}
        >
          <p>
            No more targets will be sent. Targets still waiting are cancelled; those running are told to stop.
          </p>
        </ConfirmDialog>
      )}
    </section>
  );
}
