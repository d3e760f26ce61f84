import { useEffect, useId, useRef, useState } from 'react';
import { useParams, useSearchParams } from 'react-router';
import './audit.css';
import { ApiError, api, download, orgPath } from '../api';
import { Loading, messageOf, useLoad, When } from '../components/ui';
import { useAccess } from '../session';

interface AuditEvent {
  id: string;
  seq: number;
  ts: string;
  actor: {
    type: string;
    id: string | null;
    display: string | null;
    name: string | null;
    email: string | null;
  };
  ip: string | null;
  userAgent: string | null;
  action: string;
  target: { type: string | null; id: string | null; display: string | null };
  outcome: string;
  requestId: string | null;
  details: Record<string, unknown>;
  chain: 'org' | 'instance';
  hash: string;
  prevHash: string;
  signed: boolean;
}

interface Verification {
  ok: boolean;
  events: number;
  checkpoints: number;
  signedSeq: number;
  headSeq: number;
  broken?: { seq: number; reason: string };
}

interface TypeGroup {
  prefix: string;
  family: string;
  types: string[];
}

/** The filters a link carries: what the URL's query holds, and what the API is asked. */
const FILTER_KEYS = ['action', 'actor', 'target', 'outcome', 'since', 'until', 'members'] as const;
type FilterKey = (typeof FILTER_KEYS)[number];
type Filters = Record<FilterKey, string>;

/** What each query parameter is called on this screen, so that a refusal names the field as shown. */
const FIELD_NAMES: Record<string, string> = {
  'query.action': 'Event type',
  'query.actor': 'Actor',
  'query.target': 'Target id',
  'query.outcome': 'Outcome',
  'query.since': 'Since',
  'query.until': 'Until',
  'query.sort': 'Sort',
  'query.order': 'Order',
  'query.cursor': 'Page',
  'query.members': "Members' sign-ins",
};

/** A datetime-local value (the person's local time, no zone) from an ISO instant, and back. */
function localInput(iso: string): string {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return '';
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
}
const isoOf = (local: string) => (local ? new Date(local).toISOString() : '');

function filtersOf(params: URLSearchParams): Filters {
  return Object.fromEntries(FILTER_KEYS.map((key) => [key, params.get(key) ?? ''])) as Filters;
}

/** A refusal in words: the server's message and, per field, the field's name on this screen. */
function Refusal({ error }: { error: unknown }) {
  if (!error) return null;
  const fields = error instanceof ApiError ? error.fields : [];
  return (
    <div className="notice error" role="alert">
      <p>
        {error instanceof ApiError && error.code === 'invalid_cursor'
          ? 'That page of results is no longer valid; showing the first page.'
          : messageOf(error)}
      </p>
      {fields.length > 0 && (
        <ul>
          {fields.map((field) => (
            <li key={field.path}>
              {FIELD_NAMES[field.path] ?? field.path.replace(/^query\./, '')} {field.message}.
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function ChainStatus({ org }: { org: string }) {
  const { data, error } = useLoad(() => api<Verification>('GET', orgPath(org, '/audit/verification')), [org]);
  if (error) return <Refusal error={error} />;
  if (!data) return <Loading what="the chain verification" />;
  return data.ok ? (
    <p className="notice ok" role="status">
      Chain verified: {data.events} events
      {data.signedSeq > 0
        ? `, signed through #${data.signedSeq} of #${data.headSeq}.`
        : '; no signed checkpoint yet (one is made on the checkpoint interval).'}
    </p>
  ) : (
    <p className="notice error" role="alert">
      The audit chain is broken at #{data.broken?.seq}: {data.broken?.reason}
    </p>
  );
}

const actorName = (e: AuditEvent) =>
  e.actor.name ?? e.actor.display ?? (e.actor.type === 'system' ? 'the server' : e.actor.type);
const targetName = (e: AuditEvent) => e.target.display ?? e.target.id ?? '';

/** The full event and where it stands in its hash chain, in a drawer over the right of the page. */
function EventDrawer({ event, onClose }: { event: AuditEvent; onClose: () => void }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.close();
  }, []);
  return (
    <dialog
      ref={ref}
      className="drawer"
      aria-labelledby={titleId}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      {/* Close sits at the top: opening the drawer focuses it, so the view starts at the record, not below it. */}
      <div className="drawer-head">
        <h2 id={titleId} className="dialog-title">
          Event <code>{event.action}</code>
        </h2>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
      <dl aria-label="Event">
        <dt>Time</dt>
        <dd>
          <When at={event.ts} /> ({event.ts})
        </dd>
        <dt>Outcome</dt>
        <dd>
          <span className={`badge outcome-${event.outcome}`}>{event.outcome}</span>
        </dd>
        <dt>Actor</dt>
        <dd>
          {actorName(event)}
          {event.actor.email && event.actor.email !== actorName(event) ? ` (${event.actor.email})` : ''} —{' '}
          {event.actor.type}
          {event.actor.id ? <code> {event.actor.id}</code> : null}
        </dd>
        <dt>Target</dt>
        <dd>
          {event.target.type ? (
            <>
              {targetName(event)} — {event.target.type}
              {event.target.id ? <code> {event.target.id}</code> : null}
            </>
          ) : (
            'none'
          )}
        </dd>
        <dt>From</dt>
        <dd>
          {event.ip ?? 'no address'}
          {event.userAgent ? `, ${event.userAgent}` : ''}
        </dd>
        <dt>Request</dt>
        <dd>{event.requestId ? <code>{event.requestId}</code> : 'none'}</dd>
        <dt>Event id</dt>
        <dd>
          <code>{event.id}</code>
        </dd>
      </dl>
      <h3>Details</h3>
      <pre>{JSON.stringify(event.details, null, 2)}</pre>
      <h3>Position in the chain</h3>
      <dl aria-label="Chain position">
        <dt>Log</dt>
        <dd>
          {event.chain === 'org'
            ? "This organization's log"
            : "The instance's log (a member's account security event)"}
        </dd>
        <dt>Sequence number</dt>
        <dd>#{event.seq}</dd>
        <dt>Hash</dt>
        <dd>
          <code>{event.hash}</code>
        </dd>
        <dt>Previous hash</dt>
        <dd>
          <code>{event.prevHash}</code>
        </dd>
        <dt>Signed checkpoint</dt>
        <dd>
          {event.signed
            ? 'Covered by a signed checkpoint'
            : 'Not yet covered by a signed checkpoint (they are signed periodically)'}
        </dd>
      </dl>
    </dialog>
  );
}

export default function AuditPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const [params, setParams] = useSearchParams();
  const filters = filtersOf(params);
  const sort = params.get('sort') === 'action' ? 'action' : 'time';
  const order = params.get('order') === 'asc' ? 'asc' : 'desc';
  const [draft, setDraft] = useState<Filters>(filters);
  const [cursors, setCursors] = useState<string[]>([]);
  const [open, setOpen] = useState<AuditEvent | undefined>();
  const [exportError, setExportError] = useState<unknown>();
  const query = params.toString();
  // Another link (or Back) changes the filters: the form and the paging follow.
  useEffect(() => {
    setDraft(filtersOf(new URLSearchParams(query)));
    setCursors([]);
  }, [query]);
  const cursor = cursors.at(-1);
  const types = useLoad(() => api<{ groups: TypeGroup[] }>('GET', orgPath(org, '/audit/types')), [org]);
  const { data, error } = useLoad(() => {
    const request = new URLSearchParams(query);
    request.set('limit', '50');
    if (cursor) request.set('cursor', cursor);
    return api<{ events: AuditEvent[]; nextCursor: string | null }>(
      'GET',
      orgPath(org, `/audit/events?${request}`),
    );
  }, [org, query, cursor]);

  const apply = (next: Filters, extra: Record<string, string> = {}) => {
    const search = new URLSearchParams();
    for (const key of FILTER_KEYS) if (next[key]) search.set(key, next[key]);
    const all = { sort: sort === 'time' ? '' : sort, order: order === 'desc' ? '' : order, ...extra };
    for (const [key, value] of Object.entries(all)) if (value) search.set(key, value);
    setParams(search);
  };
  const sortBy = (column: 'time' | 'action') => {
    const nextOrder = sort === column && order === 'desc' ? 'asc' : 'desc';
    apply(filters, { sort: column === 'time' ? '' : column, order: nextOrder === 'desc' ? '' : nextOrder });
  };
  const ariaSort = (column: 'time' | 'action') =>
    sort === column ? (order === 'asc' ? 'ascending' : 'descending') : 'none';
  const text = (key: FilterKey, label: string, hint?: string) => (
    <div className="field">
      <label htmlFor={`audit-${key}`}>{label}</label>
      <input
        id={`audit-${key}`}
        value={draft[key]}
        placeholder={hint}
        onChange={(e) => setDraft({ ...draft, [key]: e.target.value })}
      />
    </div>
  );
  const when = (key: 'since' | 'until', label: string) => (
    <div className="field">
      <label htmlFor={`audit-${key}`}>{label}</label>
      <input
        id={`audit-${key}`}
        type="datetime-local"
        value={localInput(draft[key])}
        onChange={(e) => setDraft({ ...draft, [key]: isoOf(e.target.value) })}
      />
    </div>
  );
  const exportAs = async (format: 'csv' | 'ndjson') => {
    setExportError(undefined);
    const request = new URLSearchParams();
    for (const key of FILTER_KEYS) if (key !== 'members' && filters[key]) request.set(key, filters[key]);
    request.set('format', format);
    await download(orgPath(org, `/audit/export?${request}`), `audit-${org}.${format}`).catch(setExportError);
  };

  return (
    <section>
      <h1>Audit log</h1>
      <ChainStatus org={org} />
      <form
        className="audit-filters"
        aria-label="Filters"
        onSubmit={(e) => {
          e.preventDefault();
          apply(draft);
        }}
      >
        <div className="field">
          <label htmlFor="audit-action">Event type</label>
          <select
            id="audit-action"
            value={draft.action}
            onChange={(e) => setDraft({ ...draft, action: e.target.value })}
          >
            <option value="">any type</option>
            {types.data?.groups.map((group) => (
              <optgroup key={group.prefix} label={group.family}>
                <option value={group.prefix}>{`${group.prefix} (every ${group.family} event)`}</option>
                {group.types.map((type) => (
                  <option key={type} value={type}>
                    {type}
                  </option>
                ))}
              </optgroup>
            ))}
            {/* A link may name a type before the list has loaded: keep it selectable. */}
            {!types.data && draft.action && <option value={draft.action}>{draft.action}</option>}
          </select>
        </div>
        {text('actor', 'Actor', 'email or name')}
        {text('target', 'Target id')}
        <div className="field">
          <label htmlFor="audit-outcome">Outcome</label>
          <select
            id="audit-outcome"
            value={draft.outcome}
            onChange={(e) => setDraft({ ...draft, outcome: e.target.value })}
          >
            <option value="">any</option>
            <option value="success">success</option>
            <option value="failure">failure</option>
            <option value="denied">denied</option>
          </select>
        </div>
        {when('since', 'Since')}
        {when('until', 'Until')}
        <div className="field checkbox">
          <input
            id="audit-members"
            type="checkbox"
            checked={draft.members !== 'exclude'}
            onChange={(e) => setDraft({ ...draft, members: e.target.checked ? '' : 'exclude' })}
          />
          <label htmlFor="audit-members">Include members' sign-ins and factor changes</label>
        </div>
        <div className="actions">
          <button type="submit" className="primary">
            Apply filters
          </button>
          <button type="button" onClick={() => apply(filtersOf(new URLSearchParams()))}>
            Clear
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
      <Refusal error={exportError} />
      <Refusal error={error} />
      {!data && !error && <Loading what="audit events" />}
      {data && data.events.length === 0 && <p className="muted">No events match.</p>}
      {data && data.events.length > 0 && (
        // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard to scroll it.
        <section className="table-wrap" tabIndex={0} aria-label="Audit events, scrollable">
          <table className="audit-table" aria-label="Audit events">
            <colgroup>
              <col className="col-seq" />
              <col className="col-time" />
              <col />
              <col />
              <col />
              <col className="col-outcome" />
              <col className="col-open" />
            </colgroup>
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col" aria-sort={ariaSort('time')}>
                  <button type="button" onClick={() => sortBy('time')}>
                    Time {sort === 'time' ? (order === 'asc' ? '↑' : '↓') : ''}
                  </button>
                </th>
                <th scope="col" aria-sort={ariaSort('action')}>
                  <button type="button" onClick={() => sortBy('action')}>
                    Event type {sort === 'action' ? (order === 'asc' ? '↑' : '↓') : ''}
                  </button>
                </th>
                <th scope="col">Actor</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">
                  <span className="visually-hidden">Details</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {data.events.map((event) => (
                <tr key={event.id}>
                  <td>
                    {event.seq}
                    {event.chain === 'instance' && (
                      <span className="chain-tag" title="From the instance's log: a member's account event">
                        account
                      </span>
                    )}
                  </td>
                  <td>
                    <When at={event.ts} />
                  </td>
                  <td>
                    <code>{event.action}</code>
                  </td>
                  <td>
                    <span className="truncate" title={event.actor.id ?? event.actor.type}>
                      {actorName(event)}
                    </span>
                  </td>
                  <td>
                    <span className="truncate" title={event.target.id ?? ''}>
                      {targetName(event)}
                    </span>
                  </td>
                  <td>
                    <span className={`badge outcome-${event.outcome}`}>{event.outcome}</span>
                  </td>
                  <td>
                    <button type="button" onClick={() => setOpen(event)}>
                      Open<span className="visually-hidden"> event #{event.seq}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      <div className="actions">
        {cursors.length > 0 && (
          <button type="button" onClick={() => setCursors(cursors.slice(0, -1))}>
            Previous page
          </button>
        )}
        {data?.nextCursor && (
          <button type="button" onClick={() => setCursors([...cursors, data.nextCursor!])}>
            Next page
          </button>
        )}
      </div>
      {open && <EventDrawer event={open} onClose={() => setOpen(undefined)} />}
    </section>
  );
}
