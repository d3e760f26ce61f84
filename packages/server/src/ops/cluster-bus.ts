import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * What one server instance tells the others (HA-1): "agent X has work", "cancel command Y on agent
 * X", which instance holds which agent, a command's live output, an organization's live events.
 *
 * The database stays the source of truth: a message only says where to look, so one lost on the way
 * (pub/sub delivers at most once, and nothing to an instance reconnecting) costs a delay, never a
 * command — each instance's delivery sweep finds what waited. No secret and no command parameter is
 * ever put on the bus; live output is, as its readers see it (the agent masks secrets before sending).
 *
 * Two kinds: local (one process, or several buses sharing one in-process hub), and Redis pub/sub with
 * a dedicated subscriber connection, every channel and key under one prefix so that several clusters
 * (or tests) can share a Redis. An instance never receives its own publications: what concerns it is
 * done directly, without a round trip through Redis.
 */

/** An agent's live connection, as the instance holding it shows it on the agent's page. */
export interface HeldConnection {
  connectedAt: number;
  address: string;
  agentVersion: string;
}

/** An agent an instance holds: since when it was last heard from, and its connection when known. */
export type HeldAgent = readonly [agentId: string, at: number, connection?: HeldConnection];

export interface AgentHolder {
  agentId: string;
  /** The instance holding the agent's connection. */
  instance: string;
  /** When the agent was last heard from there. */
  at: number;
  /** How long the holder said this stands unless refreshed. */
  ttlMs: number;
  connection?: HeldConnection;
}

export interface ClusterBus {
  /** This instance, as the others know it. */
  readonly instanceId: string;
  /** Whether other instances may be listening: false for a lone server, which then publishes nothing. */
  readonly shared: boolean;
  /** Tells the other instances; fire and forget (a failure is logged, the sweeps recover). */
  publish(channel: string, body: unknown): void;
  /** Listens to the other instances on `channel`; returns the unsubscribe. */
  subscribe(channel: string, listener: (body: unknown, from: string) => void): () => void;
  /** Records that this instance holds these agents, each for `ttlMs` unless refreshed. */
  hold(agents: ReadonlyArray<HeldAgent>, ttlMs: number): void;
  /** Lets go of agents this instance held (an agent held meanwhile by another instance stays theirs). */
  release(agentIds: readonly string[]): void;
  /** Every agent some instance holds now (for an instance starting up). */
  holders(): Promise<AgentHolder[]>;
  close(): Promise<void>;
}

/**
 * A connection another instance described, when it is one: what Redis or the bus carries is shown on
 * an agent's page, so anything else (a key written by hand, a future version's shape) is left out.
 */
export function heldConnection(value: unknown): HeldConnection | undefined {
  const candidate = value as Partial<HeldConnection> | null | undefined;
  if (
    typeof candidate?.connectedAt === 'number' &&
    Number.isFinite(candidate.connectedAt) &&
    typeof candidate.address === 'string' &&
    candidate.address.length <= 64 &&
    typeof candidate.agentVersion === 'string' &&
    candidate.agentVersion.length <= 64
  )
    return {
      connectedAt: candidate.connectedAt,
      address: candidate.address,
      agentVersion: candidate.agentVersion,
    };
  return undefined;
}

/** How often a failing Redis is logged by the bus (the client logs its connection errors itself). */
const WARN_EVERY_MS = 10_000;

const newInstanceId = () => `ins_${randomBytes(9).toString('base64url')}`;

interface Envelope {
  from: string;
  body: unknown;
}

/**
 * One process: with its own hub (the default) nobody else listens; buses made on one shared hub
 * behave like instances of one cluster. Presence is not shared: each instance knows its own agents.
 */
export function createLocalClusterBus(hub?: EventEmitter): ClusterBus {
  const shared = hub !== undefined;
  const emitter = hub ?? new EventEmitter();
  emitter.setMaxListeners(0);
  const instanceId = newInstanceId();
  const unsubscribers = new Set<() => void>();
  let closed = false;
  return {
    instanceId,
    shared,
    publish(channel, body) {
      if (!closed && shared) emitter.emit(channel, { from: instanceId, body } satisfies Envelope);
    },
    subscribe(channel, listener) {
      const onMessage = (envelope: Envelope) => {
        if (envelope.from !== instanceId) listener(envelope.body, envelope.from);
      };
      emitter.on(channel, onMessage);
      const unsubscribe = () => {
        emitter.off(channel, onMessage);
        unsubscribers.delete(unsubscribe);
      };
      unsubscribers.add(unsubscribe);
      return unsubscribe;
    },
    hold() {},
    release() {},
    holders: async () => [],
    async close() {
      closed = true;
      for (const unsubscribe of [...unsubscribers]) unsubscribe();
    },
  };
}

/** Deletes an agent's holder key only while it still names this instance (another may hold it since). */
const RELEASE_IF_MINE = `
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value).instance == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * Redis pub/sub. `redis` publishes and keeps the holder keys (it is the server's shared client);
 * a duplicate of it subscribes, as a subscribed connection can do nothing else.
 */
export async function createRedisClusterBus(deps: {
  redis: Redis;
  /** Every channel and key of this cluster starts with it, e.g. `bulwark:cluster`. */
  prefix: string;
  logger: Logger;
}): Promise<ClusterBus> {
  const { redis, prefix, logger } = deps;
  const instanceId = newInstanceId();
  // The name Redis knows this instance by (holder keys, the subscriber's client name): said once, so
  // that what Redis shows can be traced to a process.
  logger.info(
    { instance: instanceId, prefix },
    'sharing agents and events with other instances through Redis',
  );
  // Subscriptions wait for the connection rather than fail: a channel subscribed while Redis is down
  // is subscribed when it comes back (and ioredis subscribes again to all of them after a reconnect).
  const subscriber = redis.duplicate({
    lazyConnect: true,
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
    connectionName: `bulwark:${instanceId}:sub`,
  });
  subscriber.on('error', (error) => logger.warn({ err: error }, 'redis subscriber connection error'));
  await subscriber
    .connect()
    .catch((error) => logger.error({ err: error }, 'redis is not reachable for the cluster bus'));
  const listeners = new Map<string, Set<(body: unknown, from: string) => void>>();
  const channelOf = (name: string) => `${prefix}:${name}`;
  const holderKey = (agentId: string) => `${prefix}:agent:${agentId}`;
  let closed = false;

  subscriber.on('message', (channel: string, text: string) => {
    const set = listeners.get(channel);
    if (!set) return;
    let envelope: Envelope;
    try {
      envelope = JSON.parse(text) as Envelope;
    } catch {
      logger.warn({ channel }, 'an unreadable message on the cluster bus was ignored');
      return;
    }
    if (envelope.from === instanceId) return;
    for (const listener of [...set]) {
      try {
        listener(envelope.body, envelope.from);
      } catch (error) {
        logger.error({ err: error, channel }, 'a cluster bus listener failed');
      }
    }
  });

  // While Redis is down every publication fails: one line every few seconds says so, not one each.
  let warnedAt = 0;
  const failed = (what: string) => (error: unknown) => {
    if (Date.now() - warnedAt < WARN_EVERY_MS) return;
    warnedAt = Date.now();
    logger.warn({ err: error }, `cluster bus: could not ${what}`);
  };

  return {
    instanceId,
    shared: true,
    publish(channel, body) {
      if (closed) return;
      redis
        .publish(channelOf(channel), JSON.stringify({ from: instanceId, body } satisfies Envelope))
        .catch(failed('publish'));
    },
    subscribe(channel, listener) {
      const name = channelOf(channel);
      let set = listeners.get(name);
      if (!set) {
        set = new Set();
        listeners.set(name, set);
        subscriber.subscribe(name).catch(failed('subscribe'));
      }
      set.add(listener);
      return () => {
        const current = listeners.get(name);
        if (!current?.delete(listener) || current.size > 0) return;
        listeners.delete(name);
        if (!closed) subscriber.unsubscribe(name).catch(failed('unsubscribe'));
      };
    },
    hold(agents, ttlMs) {
      if (closed || agents.length === 0) return;
      const pipeline = redis.pipeline();
      for (const [agentId, at, connection] of agents)
        pipeline.set(
          holderKey(agentId),
          JSON.stringify({ instance: instanceId, at, ttlMs, connection }),
          'PX',
          ttlMs,
        );
      pipeline.exec().catch(failed('record the agents it holds'));
    },
    release(agentIds) {
      if (closed) return;
      for (const agentId of agentIds)
        redis.eval(RELEASE_IF_MINE, 1, holderKey(agentId), instanceId).catch(failed('release an agent'));
    },
    async holders() {
      const found: AgentHolder[] = [];
      let cursor = '0';
      // SCAN, never KEYS: a large shared Redis is never blocked for the whole keyspace.
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', holderKey('*'), 'COUNT', 1000);
        cursor = next;
        if (keys.length === 0) continue;
        const values = await redis.mget(...keys);
        keys.forEach((key, i) => {
          const value = values[i];
          if (!value) return;
          const { instance, at, ttlMs, connection } = JSON.parse(value) as Omit<AgentHolder, 'agentId'>;
          const shown = heldConnection(connection);
          found.push({
            agentId: key.slice(holderKey('').length),
            instance,
            at,
            ttlMs,
            ...(shown ? { connection: shown } : {}),
          });
        });
      } while (cursor !== '0');
      return found;
    },
    async close() {
      closed = true;
      listeners.clear();
      subscriber.disconnect();
    },
  };
}
