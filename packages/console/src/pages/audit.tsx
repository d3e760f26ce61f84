import { useState } from 'react';
import { useParams } from 'react-router';
import { api, download, orgPath } from '../api';
import { ErrorNote, Field, Loading, useLoad, When } from '../components/ui';
import { useAccess } from '../session';

interface AuditEvent {
  id: string;
  seq: number;
  ts: string;
  actor: { type: string; id: string | null; display: string | null };
  ip: string | null;
  action: string;
  target: { type: string | null; id: string | null; display: string | null };
  outcome: string;
  details: Record<string, unknown>;
}

interface Verification {
  ok: boolean;
  events: number;
  checkpoints: number;
  signedSeq: number;
  headSeq: number;
  broken?: { seq: number; reason: string };
}

interface Filters {
  action: string;
  actor: string;
  target: string;
  outcome: string;
  since: string;
  until: string;
}

const EMPTY: Filters = { action: '', actor: '', target: '', outcome: '', since: '', until: '' };

function queryOf(filters: Filters): URLSearchParams {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    if (!value) continue;
    // datetime-local has no zone: it is the person's local time, sent as UTC.
    query.set(key, key === 'since' || key === 'until' ? new Date(value).toISOString() : value);
  }
  return query;
}

function ChainStatus({ org }: { org: string }) {
  const { data, error } = useLoad(() => api<Verification>('GET', orgPath(org, '/audit/verification')), [org]);
  if (error) return <ErrorNote error={error} />;
  if (!data) return <Loading what="the chain verification" />;
  return data.ok ? (
    <p className="notice ok" role="status">
      Chain verified: {data.events} events, signed through #{data.signedSeq} of #{data.headSeq}.
    </p>
  ) : (
    <p className="notice error" role="alert">
      The audit chain is broken at #{data.broken?.seq}: {data.broken?.reason}
    </p>
  );
}

export default function AuditPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const [draft, setDraft] = useState<Filters>(EMPTY);
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const [cursors, setCursors] = useState<string[]>([]);
  const [exportError, setExportError] = useState<unknown>();
  const cursor = cursors.at(-1);
  const { data, error } = useLoad(() => {
    const query = queryOf(filters);
    query.set('limit', '50');
    if (cursor) query.set('cursor', cursor);
    return api<{ events: AuditEvent[]; nextCursor: string | null }>(
      'GET',
      orgPath(org, `/audit/events?${query}`),
    );
  }, [org, filters, cursor]);
  const input = (key: keyof Filters, label: string, type = 'text') => (
    <Field label={label}>
      {(id) => (
        <input
          id={id}
          type={type}
          value={draft[key]}
          onChange={(e) => setDraft({ ...draft, [key]: e.target.value })}
        />
      )}
    </Field>
  );
  const exportAs = async (format: 'csv' | 'ndjson') => {
    setExportError(undefined);
    const query = queryOf(filters);
    query.set('format', format);
    await download(orgPath(org, `/audit/export?${query}`), `audit-${org}.${format}`).catch(setExportError);
  };
  return (
    <section>
      <h1>Audit log</h1>
      <ChainStatus org={org} />
      <form
        className="filters"
        onSubmit={(event) => {
          event.preventDefault();
          setFilters(draft);
          setCursors([]);
        }}
      >
        {input('action', 'Action')}
        {input('actor', 'Actor id')}
        {input('target', 'Target id')}
        <Field label="Outcome">
          {(id) => (
            <select
              id={id}
              value={draft.outcome}
              onChange={(e) => setDraft({ ...draft, outcome: e.target.value })}
            >
              <option value="">any</option>
              <option value="success">success</option>
              <option value="failure">failure</option>
              <option value="denied">denied</option>
            </select>
          )}
        </Field>
        {input('since', 'Since', 'datetime-local')}
        {input('until', 'Until', 'datetime-local')}
        <div className="actions">
          <button type="submit" className="primary">
            Apply filters
          </button>
          {access.can('audit:export') && (
            <>
              <button type="button" onClick={() => void exportAs('csv')}>
                Export CSV
              </button>
              <button type="button" onClick={() => void exportAs('ndjson')}>
                Export NDJSON
              </button>
            </>
          )}
        </div>
      </form>
      <ErrorNote error={exportError} />
      <ErrorNote error={error} />
      {!data && !error && <Loading what="audit events" />}
      {data && data.events.length === 0 && <p className="muted">No events match.</p>}
      {data && data.events.length > 0 && (
        <div className="table-wrap">
          <table aria-label="Audit events">
            <thead>
              <tr>
                <th>#</th>
                <th>Time</th>
                <th>Actor</th>
                <th>Action</th>
                <th>Target</th>
                <th>Outcome</th>
                <th>IP</th>
              </tr>
            </thead>
            <tbody>
              {data.events.map((event) => (
                <tr key={event.id}>
                  <td>{event.seq}</td>
                  <td>
                    <When at={event.ts} />
                  </td>
                  <td>{event.actor.display ?? event.actor.id ?? event.actor.type}</td>
                  <td>
                    <code>{event.action}</code>
                  </td>
                  <td>{event.target.display ?? event.target.id ?? ''}</td>
                  <td>
                    <span className={`badge outcome-${event.outcome}`}>{event.outcome}</span>
                  </td>
                  <td>{event.ip ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="actions">
        {cursors.length > 0 && (
          <button type="button" onClick={() => setCursors(cursors.slice(0, -1))}>
            Newer
          </button>
        )}
        {data?.nextCursor && (
          <button type="button" onClick={() => setCursors([...cursors, data.nextCursor!])}>
            Older
          </button>
        )}
      </div>
    </section>
  );
}
