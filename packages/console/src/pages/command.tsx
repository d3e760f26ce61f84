import { useEffect, useRef, useState } from 'react';
import { useParams } from 'react-router';
import { api, orgPath } from '../api';
import { LoadFailed } from '../components/dead-end';
import { Decide } from '../components/decide';
import { AgentName, Person } from '../components/people';
import { Ago, Elapsed, formatDuration } from '../components/time';
import { ConfirmDialog, Loading, RiskBadge, StatusBadge, useLoad } from '../components/ui';
import { useLiveRefresh } from '../live';
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

/** Reconnections in a row, without a successful one between, before the live view gives up. */
const MAX_RECONNECTS = 5;
const RECONNECT_DELAY_MS = 1000;

/**
 * The command's output and status, live: the server's event stream sends what is stored, then what
 * arrives, until the command ends. The stream is same-origin and carries the session cookie, but that
 * alone opens nothing (NET-5): each connection first asks for a single-use ticket (a POST with the
 * CSRF token, which no other site can send) and opens the stream with it. The browser's own
 * reconnection would present the used ticket again, so the page closes a broken stream and opens a
 * new one with a new ticket; the stream sends the stored output again, and chunks already shown are
 * skipped by their sequence number.
 */
function useLiveOutput(org: string, id: string, onStatus: () => void) {
  const [chunks, setChunks] = useState<Chunk[]>([]);
  const [notice, setNotice] = useState<string | undefined>();
  // Set when the stream reports the end, which it does after it has sent all the stored output: only
  // then does "no chunks" mean "no output" (the command itself may be known to have ended sooner).
  const [finished, setFinished] = useState(false);
  const statusRef = useRef(onStatus);
  statusRef.current = onStatus;
  useEffect(() => {
    setChunks([]);
    setFinished(false);
    let source: EventSource | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let failures = 0;
    const stop = () => {
      stopped = true;
      clearTimeout(retry);
      source?.close();
    };

    async function connect() {
      let ticket: string;
      try {
        ({ ticket } = await api<{ ticket: string }>('POST', orgPath(org, `/commands/${id}/events/tickets`)));
      } catch (error) {
        if (!stopped) setNotice(error instanceof Error ? error.message : 'The live view could not start.');
        return;
      }
      if (stopped) return;
      const opened = new EventSource(
        `${orgPath(org, `/commands/${id}/events`)}?ticket=${encodeURIComponent(ticket)}`,
      );
      source = opened;
      opened.onopen = () => {
        failures = 0;
      };
      opened.addEventListener('output', (event) => {
        const chunk = JSON.parse((event as MessageEvent<string>).data) as Chunk;
        setChunks((all) => (all.some((c) => c.seq === chunk.seq) ? all : [...all, chunk]));
      });
      opened.addEventListener('status', (event) => {
        const { status } = JSON.parse((event as MessageEvent<string>).data) as {
          status: CommandView['status'];
        };
        statusRef.current();
        if (TERMINAL.includes(status)) {
          setFinished(true);
          stop();
        }
      });
      opened.addEventListener('overflow', () => {
        setNotice('The live view fell behind; reload the page to read the stored output.');
        stop();
      });
      opened.addEventListener('ended', (event) => {
        // Access ended while watching (a revoked session, a lost role): the server sent nothing more.
        setNotice((JSON.parse((event as MessageEvent<string>).data) as { message: string }).message);
        stop();
      });
      opened.onerror = () => {
        // The stream ends when the command does; one that breaks before is opened again, with a new ticket.
        opened.close();
        if (stopped) return;
        failures += 1;
        if (failures > MAX_RECONNECTS) {
          setNotice('The live view stopped. Reload to resume it.');
          return;
        }
        retry = setTimeout(() => void connect(), RECONNECT_DELAY_MS * failures);
      };
    }

    void connect();
    return stop;
  }, [org, id]);
  return { chunks, notice, finished };
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
  const { chunks, notice, finished } = useLiveOutput(org, id, reload);
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
