/** The baseline of bench/dispatch: a bare `ws` server that echoes each message, in a process of its own. */
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
server.on('listening', () => process.send?.({ port: (server.address() as AddressInfo).port }));
server.on('connection', (socket) => socket.on('message', (data) => socket.send(data.toString())));
