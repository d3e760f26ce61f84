import { useEffect, useMemo, useState } from 'react';
import { Link, useNavigate, useParams, useSearchParams } from 'react-router';
import { api, orgPath } from '../api';
import { DataTable } from '../components/data-table';
import { Person } from '../components/people';
import { initialValues, paramsOf, SchemaFields } from '../components/schema-form';
import { Ago } from '../components/time';
import { ErrorNote, Field, Loading, Modal, RiskBadge, StatusBadge, useLoad } from '../components/ui';
import { useLiveRefresh } from '../live';
import { useAccess } from '../session';
import type { ActionView, BulkRunSummary, BulkRunView, Risk, ServiceView } from '../types';

/** "12 succeeded · 2 failed · 5 running · 31 waiting": a run's progress in words. */
export function progressOf(counts: BulkRunSummary['counts']): string {
  const groups: Array<[string, number]> = [
    ['succeeded', counts.succeeded ?? 0],
    ['failed', (counts.failed ?? 0) + (counts.timed_out ?? 0) + (counts.expired ?? 0)],
    ['running', (counts.queued ?? 0) + (counts.dispatched ?? 0) + (counts.running ?? 0)],
    ['waiting', (counts.held ?? 0) + (counts.awaiting_approval ?? 0)],
    ['skipped', counts.skipped ?? 0],
    ['cancelled', counts.cancelled ?? 0],
    ['rejected', counts.rejected ?? 0],
  ];
  return groups
    .filter(([, n]) => n > 0)
    .map(([label, n]) => `${n} ${label}`)
    .join(' · ');
}

/**
 * The run's progress as a bar, one segment per outcome, with the same words for screen readers.
 * Drawn in SVG with attributes: the console never uses the style attribute (CSP).
 */
export function ProgressBar({ run }: { run: BulkRunSummary }) {
  const total = Math.max(1, run.targetCount);
  const c = run.counts;
  const segments = [
    ['succeeded', c.succeeded ?? 0],
    ['failed', (c.failed ?? 0) + (c.timed_out ?? 0) + (c.expired ?? 0)],
    ['running', (c.queued ?? 0) + (c.dispatched ?? 0) + (c.running ?? 0)],
    ['skipped', (c.skipped ?? 0) + (c.cancelled ?? 0) + (c.rejected ?? 0)],
  ] as const;
  let at = 0;
  return (
    <svg
      className="progress"
      viewBox="0 0 100 4"
      preserveAspectRatio="none"
      role="img"
      aria-label={progressOf(c) || 'nothing yet'}
    >
      <rect className="progress-track" x="0" y="0" width="100" height="4" />
      {segments.map(([kind, n]) => {
        const width = (100 * n) / total;
        const x = at;
        at += width;
        return n > 0 ? (
          <rect key={kind} className={`progress-${kind}`} x={x} y="0" width={width} height="4" />
        ) : null;
      })}
    </svg>
  );
}

interface Preview {
  risk: Risk | null;
  rule: { confirmation: boolean; approvals: number; stepUp: boolean } | null;
  total: number;
  targets: Array<{ agent: { id: string; name: string }; reason: string }>;
}

/** Distinct service/action pairs the fleet declares, from the services list. */
function useDeclaredActions(org: string) {
  const { data } = useLoad(
    () => api<{ services: ServiceView[] }>('GET', orgPath(org, '/services?limit=200')),
    [org],
  );
  return useMemo(() => {
    const byService = new Map<string, Map<string, ActionView>>();
    for (const service of data?.services ?? []) {
      const actions = byService.get(service.name) ?? new Map<string, ActionView>();
      for (const action of service.actions) if (!actions.has(action.name)) actions.set(action.name, action);
      byService.set(service.name, actions);
    }
    return byService;
  }, [data]);
}

function NewBulkRun({ org, onClose }: { org: string; onClose: () => void }) {
  const navigate = useNavigate();
  const declared = useDeclaredActions(org);
  const [selector, setSelector] = useState('');
  const [service, setService] = useState('');
  const [actionName, setActionName] = useState('');
  const [maxConcurrency, setMaxConcurrency] = useState('10%');
  const [maxErrors, setMaxErrors] = useState('0');
  const [reason, setReason] = useState('');
  const [values, setValues] = useState<Record<string, string | boolean>>({});
  const [preview, setPreview] = useState<Preview>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const action = declared.get(service)?.get(actionName);
  const { params, problems } = useMemo(
    () => (action ? paramsOf(action.params, values) : { params: {}, problems: {} }),
    [action, values],
  );

  // The targets as the server would pick them, shown while the selector is typed.
  useEffect(() => {
    setPreview(undefined);
    if (!selector.trim() || !service || !actionName) return;
    let current = true;
    const query = new URLSearchParams({ selector, service, action: actionName });
    const timer = setTimeout(() => {
      api<Preview>('GET', orgPath(org, `/bulk-runs/preview?${query}`)).then(
        (answer) => current && setPreview(answer),
        () => undefined,
      );
    }, 300);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [org, selector, service, actionName]);

  const runnable = preview?.targets.filter((t) => t.reason === '').length ?? 0;
  const needsApproval = (preview?.rule?.approvals ?? 0) > 0;
  const reasonMissing = preview?.risk === 'critical' && reason.trim() === '';
  const submit = async () => {
    setError(undefined);
    setBusy(true);
    try {
      const run = await api<BulkRunView>('POST', orgPath(org, '/bulk-runs'), {
        selector,
        service,
        action: actionName,
        params,
        reason,
        confirm: true,
        maxConcurrency,
        maxErrors,
      });
      navigate(`/orgs/${org}/bulk-runs/${run.id}`);
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  };

  return (
    <Modal title="New bulk run" onClose={onClose}>
      <form
        noValidate
        onSubmit={(event) => {
          event.preventDefault();
          void submit();
        }}
      >
        <Field
          label="Agents (label selector)"
          hint="Every agent in your scope whose labels match, e.g. env=prod,tier in (web, worker),!canary"
        >
          {(id, describedBy) => (
            <input
              id={id}
              value={selector}
              aria-describedby={describedBy}
              onChange={(e) => setSelector(e.target.value)}
            />
          )}
        </Field>
        <Field label="Service">
          {(id) => (
            <select
              id={id}
              value={service}
              onChange={(e) => {
                setService(e.target.value);
                setActionName('');
              }}
            >
              <option value="">Choose a service</option>
              {[...declared.keys()].sort().map((name) => (
                <option key={name}>{name}</option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Action">
          {(id) => (
            <select
              id={id}
              value={actionName}
              disabled={!service}
              onChange={(e) => {
                setActionName(e.target.value);
                const chosen = declared.get(service)?.get(e.target.value);
                setValues(chosen ? initialValues(chosen.params) : {});
              }}
            >
              <option value="">Choose an action</option>
              {[...(declared.get(service)?.keys() ?? [])].sort().map((name) => (
                <option key={name}>{name}</option>
              ))}
            </select>
          )}
        </Field>
        {action && (
          <SchemaFields
            schema={action.params}
            values={values}
            problems={problems}
            showProblems={false}
            onChange={setValues}
          />
        )}
        <div className="field-row">
          <Field label="At most at once" hint="A number, or a share of the targets such as 10%">
            {(id, describedBy) => (
              <input
                id={id}
                value={maxConcurrency}
                aria-describedby={describedBy}
                onChange={(e) => setMaxConcurrency(e.target.value)}
              />
            )}
          </Field>
          <Field
            label="Stop after more than … failures"
            hint="0 stops at the first failure; 5% of the targets"
          >
            {(id, describedBy) => (
              <input
                id={id}
                value={maxErrors}
                aria-describedby={describedBy}
                onChange={(e) => setMaxErrors(e.target.value)}
              />
            )}
          </Field>
        </div>
        <Field label={preview?.risk === 'critical' ? 'Reason (required)' : 'Reason (optional)'}>
          {(id) => (
            <input id={id} maxLength={500} value={reason} onChange={(e) => setReason(e.target.value)} />
          )}
        </Field>
        {preview && (
          <div className="notice" aria-live="polite">
            <p>
              {preview.total === 0
                ? 'No agent in your scope matches this selector.'
                : `Matches ${preview.total} agent${preview.total === 1 ? '' : 's'}; ${runnable} can run ${service}/${actionName}.`}{' '}
              {preview.risk && <RiskBadge risk={preview.risk} />}
            </p>
            {preview.targets.some((t) => t.reason) && (
              <ul>
                {preview.targets
                  .filter((t) => t.reason)
                  .slice(0, 10)
                  .map((t) => (
                    <li key={t.agent.id} title={t.agent.id}>
                      {t.agent.name}: skipped, {t.reason}
                    </li>
                  ))}
              </ul>
            )}
            {needsApproval && (
              <p>
                It needs {preview.rule?.approvals} approval{(preview.rule?.approvals ?? 0) > 1 ? 's' : ''} by
                someone other than you before any target runs.
              </p>
            )}
          </div>
        )}
        <ErrorNote error={error} />
        <div className="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy || runnable === 0 || reasonMissing}>
            {needsApproval ? 'Request approval' : `Run on ${runnable} agent${runnable === 1 ? '' : 's'}`}
          </button>
        </div>
      </form>
    </Modal>
  );
}

/** Bulk runs (CMD-8): newest first, with their progress, kept current by the live stream. */
export default function BulkRunsPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const [search, setSearch] = useSearchParams();
  const status = search.get('status') ?? '';
  const [creating, setCreating] = useState(false);
  const { data, error, reload } = useLoad(
    () =>
      api<{ runs: BulkRunSummary[]; next: string | null }>(
        'GET',
        orgPath(org, `/bulk-runs${status ? `?status=${encodeURIComponent(status)}` : ''}`),
      ),
    [org, status],
  );
  useLiveRefresh(['command'], reload);
  return (
    <section>
      <div className="toolbar">
        <h1>Bulk runs</h1>
        <label>
          Status{' '}
          <select
            value={status}
            onChange={(e) => setSearch(e.target.value ? { status: e.target.value } : {}, { replace: true })}
          >
            <option value="">Any</option>
            {['awaiting_approval', 'running', 'succeeded', 'failed', 'cancelled', 'rejected', 'expired'].map(
              (s) => (
                <option key={s} value={s}>
                  {s.replaceAll('_', ' ')}
                </option>
              ),
            )}
          </select>
        </label>
        {access.can('commands:create') && (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            New bulk run
          </button>
        )}
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="bulk runs" />}
      {data && (
        <DataTable
          label="Bulk runs"
          columns={['Action', 'Agents', 'Status', 'Progress', 'Risk', 'Requested by', 'Started']}
          rows={data.runs}
          empty="No bulk run yet."
        >
          {(run) => (
            <tr key={run.id}>
              <td>
                <Link to={`/orgs/${org}/bulk-runs/${run.id}`} title={run.id}>
                  {run.service}/{run.action}
                </Link>
              </td>
              <td>
                <code>{run.selector}</code>
              </td>
              <td>
                <StatusBadge status={run.status} />
              </td>
              <td>
                <ProgressBar run={run} />
                <small>{progressOf(run.counts)}</small>
              </td>
              <td>
                <RiskBadge risk={run.risk} />
              </td>
              <td>
                <Person {...run.requestedBy} />
              </td>
              <td>
                <Ago at={run.createdAt} />
              </td>
            </tr>
          )}
        </DataTable>
      )}
      {creating && <NewBulkRun org={org} onClose={() => setCreating(false)} />}
    </section>
  );
}
