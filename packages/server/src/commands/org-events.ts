import { EventEmitter } from 'node:events';
import { type AccessSnapshot, decide } from '../access/authorize.js';
import type { Caller } from '../access/caller.js';
import type { Labels } from '../access/label-selector.js';
import { parseLabels } from '../agents/agents.service.js';
import type { AgentRow } from '../agents/agents.store.js';
import type { CommandStatus } from '../db/schema.js';
import type { ClusterBus } from '../ops/cluster-bus.js';
import type { LiveOutput } from './commands.service.js';
import type { CommandOutputRow, CommandRow } from './commands.store.js';

/**
 * The organization's event bus: what the console's one live stream per tab shows as it happens —
 * commands changing state, the approvals inbox changing, agents coming and going. The commands
 * service and the agent gateway tell it what changed; each event is then published with the labels
 * its agent has at that moment (one read per event, not per reader), and every reader's stream
 * decides, with the reader's own access, whether the reader may see it (org-events.routes.ts).
 *
 * Events are delivered in the order they were told, as a list row updated by "running" must never be
 * overwritten by a late "dispatched". Nothing is read or queued for an organization nobody watches.
 *
 * A reader may also focus on one command (the console's command page): its output and status then
 * come on the same stream, so that a tab keeps one connection (browsers allow six per origin over
 * HTTP/1.1) and one ticket, whatever page it shows.
 */

/** A command's state as a list row shows it. */
export interface CommandChange {
  id: string;
  agentId: string;
  service: string;
  action: string;
  risk: CommandRow['risk'];
  status: CommandStatus;
  requestedBy: string;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  exitCode: number | null;
}

export type OrgEvent =
  | { type: 'command'; command: CommandChange }
  /** The approvals inbox changed: a command entered it, was decided on, or left it. */
  | { type: 'approval'; commandId: string; status: CommandStatus; requestedBy: string }
  | { type: 'agent'; agentId: string; online: boolean; lastSeenAt: number | null };

/** An event as a reader's stream receives it: the organization and agent it is about, and the agent's labels. */
export interface PublishedEvent {
  orgId: string;
  agentId: string;
  labels: Labels;
  event: OrgEvent;
}

/**
 * Where a focused command's output comes from: the commands service, which attaches itself once
 * built (it is built after this bus, which it tells of every change).
 */
export interface FocusSource {
  /**
   * The command, if the caller may read it: the same check as the command's own routes, so a focus
   * is never easier to get than the command itself — 404 outside the caller's organization, 403
   * (audited) outside their label scope or without commands:read.
   */
  readable(caller: Caller, id: string): Promise<CommandRow>;
  find(orgId: string, id: string): Promise<CommandRow | undefined>;
  /** The stored output, in order. */
  output(id: string): Promise<CommandOutputRow[]>;
  /** Each command's live output and status changes, emitted under its id. */
  live: EventEmitter;
}

/** One item of a reader's queue: an event of the organization, or an update of the command it focuses on. */
export type Delivery = { kind: 'event'; published: PublishedEvent } | { kind: 'focus'; update: LiveOutput };

/** What a reader must hold, on the event's agent, to see it. */
const PERMISSION_OF: Record<OrgEvent['type'], string> = {
  command: 'commands:read',
  approval: 'approvals:decide',
  agent: 'agents:read',
};

/** Whether the reader with this access may see the event: never another organization's, only agents in their scope. */
export function visibleTo(access: AccessSnapshot, published: PublishedEvent): boolean {
  if (access.orgId !== published.orgId) return false;
  return decide(access, PERMISSION_OF[published.event.type], { kind: 'agent', labels: published.labels })
    .allowed;
}

/** Leaving or entering `awaiting_approval`, or a decision while in it, changes the approvals inbox. */
const touchesInbox = (before: CommandStatus, after: CommandStatus) =>
  before === 'awaiting_approval' || after === 'awaiting_approval';

export function createOrgEvents(deps: {
  agents: { find(orgId: string, id: string): Promise<AgentRow | undefined> };
  onError: (error: unknown) => void;
  /**
   * The other instances (HA-1): what is told on one reaches the readers of every instance. Events
   * carry states and ids, never parameters or output; each instance reads the labels itself.
   */
  cluster?: ClusterBus;
}) {
  const bus = new EventEmitter();
  bus.setMaxListeners(0);
  const cluster = deps.cluster?.shared ? deps.cluster : undefined;
  // An organization's channel is listened to while it has readers here.
  const remote = new Map<string, () => void>();
  if (cluster) {
    // Before 'newListener': added after it, this listener would be announced there as an event name.
    bus.on('removeListener', (orgId: string | symbol) => {
      if (typeof orgId !== 'string' || bus.listenerCount(orgId) > 0) return;
      remote.get(orgId)?.();
      remote.delete(orgId);
    });
    bus.on('newListener', (orgId: string | symbol) => {
      if (typeof orgId !== 'string' || remote.has(orgId)) return;
      remote.set(
        orgId,
        cluster.subscribe(`org:${orgId}`, (body) => {
          const { agentId, events } = body as { agentId: string; events: OrgEvent[] };
          publishHere(orgId, agentId, events);
        }),
      );
    });
  }
  // One publication at a time per organization: its events reach its readers in the order they were
  // told, and a burst in one organization (a bulk run over thousands of agents) never delays another's.
  const chains = new Map<string, Promise<void>>();
  // Readers' streams never end on their own: the server's shutdown ends them, or it would wait forever.
  let closed = false;
  const closers = new Set<() => void>();
  let focusSource: FocusSource | undefined;
  function sourceOfFocus(): FocusSource {
    if (!focusSource) throw new Error('the commands service has not attached itself to the event bus');
    return focusSource;
  }

  function publish(orgId: string, agentId: string, events: OrgEvent[]): void {
    if (!closed) cluster?.publish(`org:${orgId}`, { agentId, events });
    publishHere(orgId, agentId, events);
  }

  function publishHere(orgId: string, agentId: string, events: OrgEvent[]): void {
    if (closed || bus.listenerCount(orgId) === 0) return;
    const next = (chains.get(orgId) ?? Promise.resolve())
      .then(async () => {
        // Read as the event is published: an agent relabelled out of a reader's scope is out of it now.
        const agent = await deps.agents.find(orgId, agentId);
        if (!agent) return;
        const labels = parseLabels(agent.labels);
        for (const event of events)
          bus.emit(orgId, { orgId, agentId, labels, event } satisfies PublishedEvent);
      })
      .catch(deps.onError)
      .finally(() => {
        // The last link of a quiet organization's chain is let go.
        if (chains.get(orgId) === next) chains.delete(orgId);
      });
    chains.set(orgId, next);
  }

  return {
    /**
     * A command moved from `before` (its status then) to `after`; a decision that released nothing
     * is a move from awaiting_approval to itself.
     */
    commandChanged(before: CommandStatus | undefined, after: CommandRow): void {
      const events: OrgEvent[] = [
        {
          type: 'command',
          command: {
            id: after.id,
            agentId: after.agent_id,
            service: after.service,
            action: after.action,
            risk: after.risk,
            status: after.status,
            requestedBy: after.requested_by,
            createdAt: after.created_at,
            startedAt: after.started_at,
            finishedAt: after.finished_at,
            exitCode: after.exit_code,
          },
        },
      ];
      if (touchesInbox(before ?? after.status, after.status))
        events.push({
          type: 'approval',
          commandId: after.id,
          status: after.status,
          requestedBy: after.requested_by,
        });
      publish(after.org_id, after.agent_id, events);
    },

    /** An agent connected, disconnected, or was seen (its heartbeats, in batches). */
    agentPresence(orgId: string, agentId: string, online: boolean, lastSeenAt: number | null): void {
      publish(orgId, agentId, [{ type: 'agent', agentId, online, lastSeenAt }]);
    },

    /** The commands service, attached once built: what a focused reader reads. */
    attachCommands(source: FocusSource): void {
      focusSource = source;
    },

    /** What a focused reader reads; absent only while the server is being put together. */
    focusSource: sourceOfFocus,

    /**
     * One reader's subscription to an organization's events, like subscribeLive: events wait in a
     * queue until the reader takes them, and a reader `maxQueued` behind is dropped with `overflow`.
     * Taken in batches, so that a burst costs one check of the reader's access, not one per event.
     * With `focus`, the live output and status of that command (whose readability the caller has
     * checked) join the same queue from now on, until `unfocus()`.
     */
    subscribe(orgId: string, maxQueued: number, signal: AbortSignal, focus?: string) {
      const queue: Delivery[] = [];
      let overflowed = false;
      let wake: (() => void) | undefined;
      const take = (delivery: Delivery) => {
        if (queue.length >= maxQueued) {
          overflowed = true;
          bus.off(orgId, listener);
          unfocus();
        } else {
          queue.push(delivery);
        }
        wake?.();
      };
      const listener = (published: PublishedEvent) => take({ kind: 'event', published });
      const focusListener = (update: LiveOutput) => take({ kind: 'focus', update });
      const live = focus === undefined ? undefined : sourceOfFocus().live;
      const unfocus = () => {
        if (focus !== undefined) live?.off(focus, focusListener);
      };
      // Let go when the reader goes, whether or not it ever started reading (a client that left
      // while the first message was on its way).
      const unsubscribe = () => {
        bus.off(orgId, listener);
        unfocus();
        closers.delete(closer);
        wake?.();
      };
      const closer = () => wake?.();
      bus.on(orgId, listener);
      // Subscribed at once: whatever the command does after this call is queued, even before the
      // reader has read its stored output.
      if (focus !== undefined) live?.on(focus, focusListener);
      closers.add(closer);
      signal.addEventListener('abort', unsubscribe, { once: true });
      return { batches, unfocus };
      async function* batches(): AsyncGenerator<Delivery[] | 'overflow'> {
        try {
          while (!signal.aborted && !closed) {
            if (queue.length > 0) {
              yield queue.splice(0, queue.length);
              continue;
            }
            if (overflowed) {
              yield 'overflow';
              return;
            }
            // One waiter at a time, woken by an event, the reader leaving, or shutdown.
            await new Promise<void>((resolve) => {
              wake = resolve;
              if (signal.aborted || closed) resolve();
            });
            wake = undefined;
          }
        } finally {
          signal.removeEventListener('abort', unsubscribe);
          unsubscribe();
        }
      }
    },

    /** Ends every reader's stream (server shutdown); nothing is published after. */
    close(): void {
      closed = true;
      for (const unsubscribe of remote.values()) unsubscribe();
      remote.clear();
      bus.removeAllListeners();
      for (const closer of closers) closer();
    },

    /** Readers now subscribed to the organization (for tests and metrics). */
    readers: (orgId: string) => bus.listenerCount(orgId),

    /** Resolves once everything told so far has been published. */
    settled: () => Promise.all([...chains.values()]).then(() => undefined),
  };
}

export type OrgEvents = ReturnType<typeof createOrgEvents>;
