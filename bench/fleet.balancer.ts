/**
 * The load balancer in front of a cluster's instances, as bench/fleet's simulated agents meet it.
 * Each new connection goes to the next instance in rotation. An instance that refuses a connection
 * is passed over: the connection is tried on the next instance, and the one that refused is left out
 * of the rotation for 10 s. This is what nginx does by default (`proxy_next_upstream error`,
 * `max_fails=1 fail_timeout=10s`), so an agent whose instance died reconnects to another one and
 * never sees the refusal. With a single address there is no balancer: a refusal is the agent's own
 * failed attempt.
 */
import type WebSocket from 'ws';

export interface Balancer {
  /**
   * Opens a connection through the balancer: `connect` dials one instance; `opened` gets the first
   * socket that opens, with its instance's address; `failed` is called if none does.
   */
  open(
    connect: (url: string) => WebSocket,
    opened: (socket: WebSocket, url: string) => void,
    failed: () => void,
  ): void;
  /** Connections an instance refused that were passed to another one. */
  readonly passedOn: number;
}

const FAIL_TIMEOUT_MS = 10_000;

export function createBalancer(urls: readonly string[]): Balancer {
  let next = 0;
  let passedOn = 0;
  const downUntil = new Map<string, number>();

  /** The next instance in rotation not yet tried, preferring those not marked down. */
  const pick = (tried: ReadonlySet<string>): string | undefined => {
    const now = Date.now();
    for (const skipDown of [true, false]) {
      for (let i = 0; i < urls.length; i++) {
        const url = urls[(next + i) % urls.length]!;
        if (tried.has(url) || (skipDown && (downUntil.get(url) ?? 0) > now)) continue;
        next = (next + i + 1) % urls.length;
        return url;
      }
    }
    return undefined;
  };

  return {
    get passedOn() {
      return passedOn;
    },
    open(connect, opened, failed) {
      const tried = new Set<string>();
      const attempt = () => {
        const url = pick(tried);
        if (url === undefined) return failed();
        tried.add(url);
        const socket = connect(url);
        let refused = false;
        const onError = (error: NodeJS.ErrnoException) => {
          refused = error.code === 'ECONNREFUSED';
        };
        const onClose = () => {
          if (refused && urls.length > 1) {
            downUntil.set(url, Date.now() + FAIL_TIMEOUT_MS);
            if (tried.size < urls.length) {
              passedOn++;
              return attempt();
            }
          }
          failed();
        };
        socket.on('error', onError);
        socket.once('close', onClose);
        socket.once('open', () => {
          socket.off('error', onError);
          socket.off('close', onClose);
          opened(socket, url);
        });
      };
      attempt();
    },
  };
}
