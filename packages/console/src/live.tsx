import { createContext, type ReactNode, useContext, useEffect, useRef, useState } from 'react';
import { ApiError, api, orgPath } from './api';
import type { CommandStatus } from './types';

/** What the organization's stream says, by event name (the server's `streamOrgEvents`). */
export interface LiveEvents {
  command: {
    id: string;
    agentId: string;
    service: string;
    action: string;
    risk: string;
    status: CommandStatus;
    requestedBy: string;
    createdAt: string;
    startedAt: string | null;
    finishedAt: string | null;
    exitCode: number | null;
  };
  approval: { commandId: string; status: CommandStatus; requestedBy: string };
  agent: { id: string; status: 'online' | 'offline'; lastSeenAt: string | null };
  /**
   * The stream (re)opened: whatever happened while it was closed was not sent, so a screen reloads
   * what it shows.
   */
  ready: Record<string, never>;
  /** The focused command's output (its stored output first, then as it arrives). */
  output: { commandId: string; seq: number; stream: 'stdout' | 'stderr'; data: string; at: string };
  /** The focused command's status, sent after its stored output and then as it changes. */
  status: { commandId: string; status: CommandStatus };
  /** The focused command may no longer be read by this member: nothing more of it will come. */
  focus_ended: { commandId: string; message: string };
  /** The focus was refused (the ticket request said why); the stream opened without it. */
  focus_refused: { commandId: string; message: string };
}
type Name = keyof LiveEvents;
type Listener = (data: never) => void;

export type LiveState = 'connecting' | 'open' | 'closed';

interface Live {
  subscribe<K extends Name>(name: K, listener: (data: LiveEvents[K]) => void): () => void;
  /** Focuses the tab's stream on one command (reopening it); the returned function lets go. */
  focus(commandId: string): () => void;
  state: LiveState;
}

const LiveContext = createContext<Live | undefined>(undefined);

const FIRST_RETRY_MS = 1000;
const LONGEST_RETRY_MS = 30_000;

/**
 * The one live stream of an organization per browser tab: command status changes, the approvals
 * inbox, agents online and offline, each only as far as the server lets this member see. Screens
 * subscribe with {@link useLive}. Opened with a single-use ticket (a POST with the CSRF token, NET-5);
 * the browser's own reconnection would present the used ticket again, so a broken stream is closed
 * and opened anew with a fresh ticket, waiting longer after each failure in a row.
 */
export function LiveProvider({ org, children }: { org: string; children: ReactNode }) {
  const listeners = useRef(new Map<Name, Set<Listener>>());
  const [state, setState] = useState<LiveState>('connecting');
  // The command the stream also carries the output of (the command page's): the stream reopens when
  // it changes, so that a tab keeps exactly one connection.
  const [focus, setFocus] = useState<string | undefined>();
  // The open stream a focus change replaces: kept until its successor is ready, so that no event
  // falls between the two and the screens need not reload (a navigation is not a break).
  const outgoing = useRef<EventSource | undefined>(undefined);
  const [live] = useState<Omit<Live, 'state'>>(() => ({
    subscribe(name, listener) {
      const set = listeners.current.get(name) ?? new Set();
      listeners.current.set(name, set);
      set.add(listener as Listener);
      return () => set.delete(listener as Listener);
    },
    focus(commandId) {
      setFocus(commandId);
      return () => setFocus((current) => (current === commandId ? undefined : current));
    },
  }));

  useEffect(() => {
    let source: EventSource | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let failures = 0;
    const emit = (name: Name, data: unknown) => {
      for (const listener of listeners.current.get(name) ?? []) (listener as (data: unknown) => void)(data);
    };
    const again = () => {
      source?.close();
      if (stopped) return;
      setState('connecting');
      failures += 1;
      const delay = Math.min(FIRST_RETRY_MS * 2 ** (failures - 1), LONGEST_RETRY_MS);
      retry = setTimeout(() => void connect(), delay);
    };

    // A focus the server refuses (no such command, no right to read it) is dropped, with the reason
    // for the page that asked: the rest of the tab's live view must not depend on it.
    let focused = focus;
    // Handed over by the stream this one replaces, if it was open: no reload is due when this opens.
    let previous = outgoing.current;
    outgoing.current = undefined;
    const letPreviousGo = () => {
      previous?.close();
      previous = undefined;
    };
    async function connect() {
      let ticket: string;
      const query = focused === undefined ? '' : `?command=${encodeURIComponent(focused)}`;
      try {
        ({ ticket } = await api<{ ticket: string }>('POST', `${orgPath(org, '/events/tickets')}${query}`));
      } catch (error) {
        if (focused !== undefined && error instanceof ApiError && error.status >= 400 && error.status < 500) {
          emit('focus_refused', { commandId: focused, message: error.message });
          focused = undefined;
          void connect();
          return;
        }
        letPreviousGo();
        again();
        return;
      }
      if (stopped) return;
      const opened = new EventSource(
        `${orgPath(org, '/events')}?ticket=${encodeURIComponent(ticket)}${query.replace('?', '&')}`,
      );
      source = opened;
      opened.addEventListener('ready', () => {
        failures = 0;
        setState('open');
        // Taken over from an open stream: nothing was missed. Otherwise the screens reload.
        const seamless = previous !== undefined && previous.readyState === EventSource.OPEN;
        letPreviousGo();
        if (!seamless) emit('ready', {});
      });
      for (const name of ['command', 'approval', 'agent', 'output', 'status', 'focus_ended'] as const)
        opened.addEventListener(name, (event) =>
          emit(name, JSON.parse((event as MessageEvent<string>).data)),
        );
      // Fell behind: open again, and the screens reload on `ready`.
      opened.addEventListener('overflow', again);
      opened.addEventListener('ended', () => {
        // Access to the organization ended: nothing more will come; the next request says why.
        opened.close();
        setState('closed');
      });
      opened.onerror = () => {
        letPreviousGo();
        again();
      };
    }

    void connect();
    return () => {
      stopped = true;
      clearTimeout(retry);
      letPreviousGo();
      // An open stream stays until its successor (same organization, another focus) is ready.
      if (source?.readyState === EventSource.OPEN) outgoing.current = source;
      else source?.close();
    };
  }, [org, focus]);

  // Leaving the organization (or the page): nothing takes over. Its cleanup runs after the stream
  // effect's (declared before it), which has just handed its open stream over.
  // biome-ignore lint/correctness/useExhaustiveDependencies: `org` changing is the event, not a value read.
  useEffect(
    () => () => {
      outgoing.current?.close();
      outgoing.current = undefined;
    },
    [org],
  );

  const value = { ...live, state };
  return <LiveContext.Provider value={value}>{children}</LiveContext.Provider>;
}

/**
 * Focuses the tab's one stream on a command while the calling component is mounted: its stored
 * output, then its live output and status, come as `output` and `status` events.
 */
export function useLiveFocus(commandId: string) {
  const live = useContext(LiveContext);
  const focus = live?.focus;
  useEffect(() => focus?.(commandId), [focus, commandId]);
}

/** Whether the live stream is open; 'closed' when it will not open again. */
export function useLiveState(): LiveState {
  return useContext(LiveContext)?.state ?? 'closed';
}

/**
 * Calls `listener` on every event of these names (and once more when the stream reopens, when
 * `ready` is among them). The latest `listener` is called: it need not be stable.
 */
export function useLive<K extends Name>(
  names: readonly K[],
  listener: (data: LiveEvents[K], name: K) => void,
) {
  const live = useContext(LiveContext);
  const latest = useRef(listener);
  latest.current = listener;
  const key = names.join(',');
  // biome-ignore lint/correctness/useExhaustiveDependencies: `key` stands for the names.
  useEffect(() => {
    if (!live) return;
    const offs = names.map((name) => live.subscribe(name, (data) => latest.current(data, name)));
    return () => {
      for (const off of offs) off();
    };
  }, [live?.subscribe, key]);
}

/** Reloads coalesced within this window: a burst of events (a bulk run) costs one request. */
const REFRESH_COALESCE_MS = 250;

/**
 * Calls `reload` after events of these names for which `when` holds, and whenever the stream
 * (re)opens, since what happened while it was closed was not sent. Bursts coalesce into one reload.
 */
export function useLiveRefresh<K extends Exclude<Name, 'ready'>>(
  names: readonly K[],
  reload: () => void,
  when: (data: LiveEvents[K], name: K) => boolean = () => true,
) {
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(timer.current), []);
  useLive([...names, 'ready'] as Array<K | 'ready'>, (data, name) => {
    if (name !== 'ready' && !when(data as LiveEvents[K], name as K)) return;
    if (timer.current !== undefined) return;
    timer.current = setTimeout(() => {
      timer.current = undefined;
      reload();
    }, REFRESH_COALESCE_MS);
  });
}
