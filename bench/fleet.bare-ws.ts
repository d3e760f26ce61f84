/**
 * The baseline of bench/fleet: a bare `ws` server that accepts connections and does nothing else, in
 * a process of its own so that its memory can be read alone.
 */
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
server.on('listening', () => process.send?.({ port: (server.address() as AddressInfo).port }));
process.on('message', () => {
  // The server closes first, so the client's ports are not held in TIME_WAIT for the next phase.
  for (const client of server.clients) client.terminate();
  server.close(() => process.exit(0));
});
