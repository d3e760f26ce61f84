import { useEffect, useState } from 'react';

/** The current time, updated every `everyMs` while mounted. */
function useNow(everyMs: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

/** "1 h 4 min", "3 min 12 s", "42 s": a duration as a person reads it. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const UNITS: Array<[Intl.RelativeTimeFormatUnit, number]> = [
  ['day', 86_400_000],
  ['hour', 3_600_000],
  ['minute', 60_000],
  ['second', 1000],
];

export function formatRelative(at: number, now: number): string {
  const diff = at - now;
  for (const [unit, size] of UNITS)
    if (Math.abs(diff) >= size || unit === 'second') return relative.format(Math.round(diff / size), unit);
  return '';
}

/** A time as "2 minutes ago", with the absolute time on hover; `none` when there is none. */
export function Ago({ at, none = 'not yet' }: { at: string | null; none?: string }) {
  const now = useNow(10_000);
  if (!at) return <span className="muted">{none}</span>;
  const time = new Date(at);
  return (
    <time dateTime={at} title={time.toLocaleString()}>
      {/* Against the time of this render, not of the last tick: what just happened is never "in 2 seconds". */}
      {formatRelative(time.getTime(), Math.max(now, Date.now()))}
    </time>
  );
}

/** How long something has been going on, ticking every second. */
export function Elapsed({ since }: { since: string }) {
  const now = useNow(1000);
  return <span className="elapsed">{formatDuration(now - new Date(since).getTime())}</span>;
}
