import { useEffect, useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { LoadFailed } from '../components/dead-end';
import { Decide } from '../components/decide';
import { AgentName, Person } from '../components/people';
import { Ago, Elapsed, formatDuration } from '../components/time';
import { ConfirmDialog, Loading, RiskBadge, StatusBadge, useLoad } from '../components/ui';
import { type LiveEvents, useLive, useLiveFocus, useLiveRefresh, useLiveState } from '../live';
import { useAccess } from '../session';
import { type CommandView, TERMINAL } from '../types';

interface Chunk {
  seq: number;
  stream: 'stdout' | 'stderr';
  data: string;
  /** When the server received it from the agent. */
  at: string;
}

/** hh:mm:ss of a chunk, in the reader's time zone; the full time is on hover. */
const clockTime = (at: string) =>
  new Date(at).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/**
 * The output as lines, each started by the time its chunk arrived: a chunk may end mid-line, and the
 * rest of that line then carries no second time.
 */
function OutputLines({ chunks }: { chunks: Chunk[] }) {
  const pieces: Array<{ key: string; stream: Chunk['stream']; at?: string; text: string }> = [];
  let lineStart = true;
  for (const chunk of [...chunks].sort((a, b) => a.seq - b.seq)) {
    chunk.data.split(/(?<=\n)/).forEach((text, index) => {
      pieces.push({
        key: `${chunk.seq}.${index}`,
        stream: chunk.stream,
        ...(lineStart ? { at: chunk.at } : {}),
        text,
      });
      lineStart = text.endsWith('\n');
    });
  }
  return (
    <>
      {pieces.map((piece) => (
        <span key={piece.key} className={piece.stream}>
          {piece.at && (
            <time className="stamp" dateTime={piece.at} title={new Date(piece.at).toLocaleString()}>
              {clockTime(piece.at)}{' '}
            </time>
          )}
          {piece.text}
        </span>
      ))}
    </>
  );
}

/**
 * The command's output and status, live, over the tab's one stream of the organization (live.tsx),
 * focused on this command while the page is open: the server sends what is stored, then what
 * arrives, until the command ends. When the stream reopens it sends the stored output again, and
 * chunks already shown are skipped by their sequence number.
 */
function useLiveOutput(id: string, onStatus: () => void) {
  const [chunks, setChunks] = useState<Chunk[]>([]);
  const [notice, setNotice] = useState<string | undefined>();
  // Set when the stream reports the end, which it does after it has sent all the stored output: only
  // then does "no chunks" mean "no output" (the command itself may be known to have ended sooner).
  const [finished, setFinished] = useState(false);
  // biome-ignore lint/correctness/useExhaustiveDependencies: a new command starts empty.
  useEffect(() => {
    setChunks([]);
    setFinished(false);
    setNotice(undefined);
  }, [id]);
  useLiveFocus(id);
  useLive(['output', 'status', 'focus_ended', 'focus_refused'], (data, name) => {
    if (data.commandId !== id) return;
    if (name === 'output') {
      const chunk = data as LiveEvents['output'];
      setChunks((all) => (all.some((c) => c.seq === chunk.seq) ? all : [...all, chunk]));
    } else if (name === 'status') {
      onStatus();
      if (TERMINAL.includes((data as LiveEvents['status']).status)) setFinished(true);
    } else {
      // Access to the command ended while watching, or was refused: the server sends nothing more of it.
      setNotice((data as LiveEvents['focus_ended']).message);
    }
  });
  const state = useLiveState();
  const stopped = state === 'closed' && !finished ? 'The live view stopped. Reload to resume it.' : undefined;
  return { chunks, notice: notice ?? stopped, finished };
}

export default function CommandPage() {
  const { org = '', command: id = '' } = useParams();
  const access = useAccess();
  const [cancelling, setCancelling] = useState(false);
  const {
    data: command,
    error,
    reload,
  } = useLoad(() => api<CommandView>('GET', orgPath(org, `/commands/${id}`)), [org, id]);
  const { chunks, notice, finished } = useLiveOutput(id, reload);
  // Decisions and changes of state made anywhere, from the organization's live stream.
  useLiveRefresh(['command'], reload, (changed) => changed.id === id);
  if (error) return <LoadFailed error={error} what="command" />;
  if (!command) return <Loading what="the command" />;
  const ended = TERMINAL.includes(command.status);
  return (
    <section>
      <div className="toolbar">
        <h1>
          {command.service}/{command.action} <RiskBadge risk={command.risk} />
        </h1>
        <StatusBadge status={command.status} />
        {!ended && access.can('commands:cancel') && (
          <button type="button" className="danger" onClick={() => setCancelling(true)}>
            Cancel command
          </button>
        )}
      </div>
      <dl className="summary">
        <div>
          <dt>Command</dt>
          <dd>
            <code title={command.id}>{command.id}</code>
          </dd>
        </div>
        <div>
          <dt>Agent</dt>
          <dd>
            <AgentName id={command.agentId} name={command.agentName} />
          </dd>
        </div>
        <div>
          <dt>Requested by</dt>
          <dd>
            <Person
              id={command.requestedBy}
              name={command.requestedByName}
              email={command.requestedByEmail}
            />
          </dd>
        </div>
        <div>
          <dt>Parameters</dt>
          <dd>
            <code>{JSON.stringify(command.params)}</code>
          </dd>
        </div>
        {command.reason && (
          <div>
            <dt>Reason</dt>
            <dd>{command.reason}</dd>
          </div>
        )}
        <div>
          <dt>Created</dt>
          <dd>
            <Ago at={command.createdAt} />
          </dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd>
            <Ago at={command.startedAt} none={ended ? 'never started' : 'not yet'} />
          </dd>
        </div>
        <div>
          <dt>{!ended && command.startedAt ? 'Running for' : 'Finished'}</dt>
          <dd>
            {ended ? (
              <>
                <Ago at={command.finishedAt} none="—" />
                {command.startedAt &&
                  command.finishedAt &&
                  ` · took ${formatDuration(Date.parse(command.finishedAt) - Date.parse(command.startedAt))}`}
                {command.exitCode !== null && ` · exit code ${command.exitCode}`}
              </>
            ) : command.startedAt ? (
              <Elapsed since={command.startedAt} />
            ) : (
              <span className="muted">not yet</span>
            )}
          </dd>
        </div>
        {command.message && (
          <div>
            <dt>Message</dt>
            <dd>{command.message}</dd>
          </div>
        )}
      </dl>
      {command.requiredApprovals > 0 && (
        <section aria-labelledby="approvals-heading">
          <h2 id="approvals-heading">
            Approvals ({command.approvals.filter((a) => a.decision === 'approved').length} of{' '}
            {command.requiredApprovals})
          </h2>
          {command.approvals.length === 0 && <p className="muted">No decision yet.</p>}
          <ul>
            {command.approvals.map((a) => (
              <li key={a.userId}>
                <StatusBadge status={a.decision} /> by <Person id={a.userId} name={a.name} email={a.email} />{' '}
                <Ago at={a.at} />
                {a.comment && ` — ${a.comment}`}
              </li>
            ))}
          </ul>
          {command.status === 'awaiting_approval' && access.can('approvals:decide') && (
            <Decide org={org} command={command} onDone={reload} />
          )}
        </section>
      )}
      <h2>Output</h2>
      {notice && <p className="notice">{notice}</p>}
      <pre className="output" role="log" aria-label="Command output">
        {chunks.length === 0 ? (
          <span className="muted">{finished ? 'No output.' : 'Waiting for output…'}</span>
        ) : (
          <OutputLines chunks={chunks} />
        )}
      </pre>
      {command.outputTruncated && <p className="muted">The server keeps the first 1 MiB of output.</p>}
      {cancelling && (
        <ConfirmDialog
          title="Cancel this command?"
          confirmLabel="Cancel command"
          danger
          onConfirm={async () => {
            await api('POST', orgPath(org, `/commands/${command.id}/cancel`));
            reload();
          }}
          onClose={() => setCancelling(false)}
        >
          <p>If it is running, the agent stops its processes; what it already did is not undone.</p>
        </ConfirmDialog>
      )}
    </section>
  );
}
