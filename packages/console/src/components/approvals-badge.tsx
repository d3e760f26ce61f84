import { api, orgPath } from '../api';
import { useLiveRefresh } from '../live';
import { useLoad } from './ui';

/** How many commands and bulk runs wait for the member's decision, kept current by the live stream (no polling). */
export function ApprovalsBadge({ org }: { org: string }) {
  // Commands, and bulk runs (one decision covers all of a run's targets).
  const { data, reload } = useLoad(
    () =>
      Promise.all([
        api<{ commands: unknown[] }>('GET', orgPath(org, '/approvals')),
        api<{ runs: unknown[] }>('GET', orgPath(org, '/approvals/bulk-runs')),
      ]),
    [org],
  );
  useLiveRefresh(['approval'], reload);
  const count = (data?.[0].commands.length ?? 0) + (data?.[1].runs.length ?? 0);
  if (count === 0) return null;
  return (
    <span className="count-badge" data-testid="approvals-count">
      {count}
      <span className="visually-hidden"> waiting for you</span>
    </span>
  );
}
