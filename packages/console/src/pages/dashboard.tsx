import { useEffect, useRef } from 'react';
import { Link, useParams, useSearchParams } from 'react-router';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './dashboard.css';
import { api, orgPath } from '../api';
import { ErrorNote, Loading, StatusBadge, useLoad, When } from '../components/ui';
import { useAccess } from '../session';

/** GET /api/orgs/:org/dashboard: each part null when the person may not see it at all. */
interface Dashboard {
  range: Range;
  from: string;
  to: string;
  bucketSeconds: number;
  commands: { bucketStarts: string[]; succeeded: number[]; failed: number[]; other: number[] } | null;
  failed: {
    total: number;
    commands: Array<{
      id: string;
      agent: { id: string; name: string };
      service: string;
      action: string;
      status: 'failed' | 'timed_out';
      message: string;
      requestedBy: { id: string; email: string | null; name: string | null };
      at: string;
    }>;
  } | null;
  agents: {
    online: number;
    offline: number;
    disabled: number;
    problems: Array<{ id: string; name: string; status: string; lastSeenAt: string | null }>;
  } | null;
  services: {
    notUpTotal: number;
    notUp: Array<{
      id: string;
      name: string;
      agent: { id: string; name: string };
      status: string;
      message: string;
    }>;
  } | null;
  approvals: { pending: number } | null;
  critical: Array<{
    id: string;
    ts: string;
    action: string;
    outcome: string;
    actor: { type: string; id: string | null; display: string | null };
    target: { type: string | null; id: string | null; display: string | null };
  }> | null;
}

const RANGES = [
  { value: '1h', label: '1 hour', words: 'the last hour' },
  { value: '24h', label: '24 hours', words: 'the last 24 hours' },
  { value: '7d', label: '7 days', words: 'the last 7 days' },
] as const;
type Range = (typeof RANGES)[number]['value'];

const SERIES = [
  { key: 'succeeded', label: 'Succeeded', color: '#2f9e4f' },
  { key: 'failed', label: 'Failed or timed out', color: '#c23b41' },
  { key: 'other', label: 'Waiting, running or stopped', color: '#8a96a3' },
] as const;

const TOP_DOWN = [2, 1, 0];
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/**
 * Commands per bucket, stacked, drawn by uPlot on a canvas. uPlot sizes its elements through the
 * CSSOM (element.style), which the CSP's style-src 'self' allows; its stylesheet is a file.
 */
function CommandsChart({ data, words }: { data: Dashboard; words: string }) {
  const host = useRef<HTMLDivElement>(null);
  const commands = data.commands!;
  const totals = SERIES.map((s) => sum(commands[s.key]));
  useEffect(() => {
    const element = host.current;
    if (!element) return;
    // Each bar stands over the middle of its bucket, so the last one is not cut at the right edge.
    const half = data.bucketSeconds / 2;
    const xs = commands.bucketStarts.map((at) => Date.parse(at) / 1000 + half);
    const range: uPlot.Range.MinMax = [Date.parse(data.from) / 1000, Date.parse(data.to) / 1000];
    // Stacked: each series is drawn as the sum of itself and those below it, the tallest first.
    const raw = SERIES.map((s) => commands[s.key]);
    const stacked = raw.map((_, i) => xs.map((_, x) => raw.slice(0, i + 1).reduce((a, r) => a + r[x]!, 0)));
    const bars = uPlot.paths.bars!({ size: [0.8, 64] });
    const peak = Math.max(1, ...stacked.at(-1)!);
    const seriesOf = (i: number): uPlot.Series => ({
      label: SERIES[i]!.label,
      stroke: SERIES[i]!.color,
      fill: SERIES[i]!.color,
      width: 0,
      points: { show: false },
      paths: bars,
      // The legend shows the series' own count, not the height of its stack.
      value: (_u, _v, _si, idx) => (idx === null ? '–' : String(raw[i]![idx] ?? 0)),
    });
    const options: uPlot.Options = {
      width: Math.max(280, element.clientWidth),
      height: 240,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range }, y: { range: [0, Math.max(4, Math.ceil(peak * 1.1))] } },
      legend: { live: true },
      axes: [
        { stroke: '#5b6675', grid: { stroke: '#e6eaf0' } },
        {
          stroke: '#5b6675',
          grid: { stroke: '#e6eaf0' },
          label: 'Commands',
          // Whole numbers only: a command is not divisible.
          incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000],
          values: (_u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : '')),
        },
      ],
      // The tallest stack first, so that the shorter ones are drawn over it.
      series: [{ label: 'Time' }, ...TOP_DOWN.map((i) => seriesOf(i))],
    };
    const plot = new uPlot(options, [xs, ...TOP_DOWN.map((i) => stacked[i]!)] as uPlot.AlignedData, element);
    const resize = new ResizeObserver(() =>
      plot.setSize({ width: Math.max(280, element.clientWidth), height: 240 }),
    );
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [commands, data.bucketSeconds, data.from, data.to]);
  const total = sum(totals);
  const summary = `${total} command${total === 1 ? '' : 's'} in ${words}: ${SERIES.map((s, i) => `${totals[i]} ${s.label.toLowerCase()}`).join(', ')}.`;
  return (
    <figure className="commands-chart" aria-label={summary} data-buckets={commands.bucketStarts.length}>
      <div ref={host} className="plot" role="img" aria-label={`Chart: ${summary}`} />
      <figcaption>
        Commands per{' '}
        {data.bucketSeconds >= 3600 ? `${data.bucketSeconds / 3600} h` : `${data.bucketSeconds / 60} min`},{' '}
        {words}. {summary}
      </figcaption>
    </figure>
  );
}

function Person({ who }: { who: { id: string; email: string | null; name: string | null } }) {
  return (
    <span title={who.id}>{who.name ? `${who.name} (${who.email})` : (who.email ?? 'a removed user')}</span>
  );
}

export default function DashboardPage() {
  const { org = '' } = useParams();
  const access = useAccess();
  const [params, setParams] = useSearchParams();
  const range: Range = RANGES.find((r) => r.value === params.get('range'))?.value ?? '24h';
  const words = RANGES.find((r) => r.value === range)!.words;
  const { data, error } = useLoad(
    () => api<Dashboard>('GET', orgPath(org, `/dashboard?range=${range}`)),
    [org, range],
  );
  return (
    <section>
      <div className="toolbar">
        <h1>{access.name}</h1>
        <fieldset className="range-picker">
          <legend className="visually-hidden">Period</legend>
          {RANGES.map((r) => (
            <button
              key={r.value}
              type="button"
              aria-pressed={r.value === range}
              onClick={() => setParams(r.value === '24h' ? {} : { range: r.value })}
            >
              {r.label}
            </button>
          ))}
        </fieldset>
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="the dashboard" />}
      {data && data.range === range && (
        <>
          {data.commands && <CommandsChart data={data} words={words} />}
          <div className="dashboard-grid">
            {data.failed && (
              <article aria-labelledby="failed-heading">
                <h2 id="failed-heading">Failed and timed-out commands ({data.failed.total})</h2>
                {data.failed.commands.length === 0 ? (
                  <p className="all-clear">None in {words}.</p>
                ) : (
                  <ul className="problem-list" aria-label="Failed commands">
                    {data.failed.commands.map((c) => (
                      <li key={c.id}>
                        <StatusBadge status={c.status} />{' '}
                        <Link to={`/orgs/${org}/commands/${c.id}`} title={c.id}>
                          {c.service} · {c.action}
                        </Link>{' '}
                        on <span title={c.agent.id}>{c.agent.name}</span>, by <Person who={c.requestedBy} />,{' '}
                        <When at={c.at} />
                        {c.message && <div className="muted">{c.message}</div>}
                      </li>
                    ))}
                  </ul>
                )}
                <Link to={`/orgs/${org}/commands`}>See commands</Link>
              </article>
            )}
            {data.agents && (
              <article aria-labelledby="agents-heading">
                <h2 id="agents-heading">Agents</h2>
                <p>
                  <strong>{data.agents.online}</strong> online · <strong>{data.agents.offline}</strong>{' '}
                  offline · <strong>{data.agents.disabled}</strong> disabled
                </p>
                {data.agents.problems.length === 0 ? (
                  <p className="all-clear">Every agent is online.</p>
                ) : (
                  <ul className="problem-list" aria-label="Agents offline or disabled">
                    {data.agents.problems.map((a) => (
                      <li key={a.id}>
                        <StatusBadge status={a.status} /> <span title={a.id}>{a.name}</span>, last seen{' '}
                        <When at={a.lastSeenAt} />
                      </li>
                    ))}
                  </ul>
                )}
                <Link to={`/orgs/${org}/agents`}>See agents</Link>
              </article>
            )}
            {data.services && (
              <article aria-labelledby="services-heading">
                <h2 id="services-heading">Services not up ({data.services.notUpTotal})</h2>
                {data.services.notUp.length === 0 ? (
                  <p className="all-clear">Every service reports up.</p>
                ) : (
                  <ul className="problem-list" aria-label="Services not up">
                    {data.services.notUp.map((s) => (
                      <li key={s.id}>
                        <StatusBadge status={s.status} /> <span title={s.id}>{s.name}</span> on{' '}
                        <span title={s.agent.id}>{s.agent.name}</span>
                        {s.message && <div className="muted">{s.message}</div>}
                      </li>
                    ))}
                  </ul>
                )}
                <Link to={`/orgs/${org}/services`}>See services</Link>
              </article>
            )}
            {data.approvals && (
              <article aria-labelledby="approvals-heading">
                <h2 id="approvals-heading">Pending approvals</h2>
                <p className="figure">
                  <strong>{data.approvals.pending}</strong> waiting for you
                </p>
                <Link to={`/orgs/${org}/approvals`}>Open the inbox</Link>
              </article>
            )}
            {data.critical && (
              <article aria-labelledby="critical-heading">
                <h2 id="critical-heading">Recent critical audit events</h2>
                {data.critical.length === 0 ? (
                  <p className="all-clear">None in {words}.</p>
                ) : (
                  <ul className="problem-list" aria-label="Critical audit events">
                    {data.critical.map((e) => (
                      <li key={e.id}>
                        <code>{e.action}</code>{' '}
                        <span className={`badge outcome-${e.outcome}`}>{e.outcome}</span> by{' '}
                        <span title={e.actor.id ?? e.actor.type}>{e.actor.display ?? e.actor.type}</span>
                        {e.target.display || e.target.id ? (
                          <>
                            {' '}
                            on <span title={e.target.id ?? ''}>{e.target.display ?? e.target.id}</span>
                          </>
                        ) : null}
                        , <When at={e.ts} />
                      </li>
                    ))}
                  </ul>
                )}
                <Link to={`/orgs/${org}/audit`}>Open the audit log</Link>
              </article>
            )}
          </div>
        </>
      )}
    </section>
  );
}
