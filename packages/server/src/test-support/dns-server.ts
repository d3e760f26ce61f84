import { createSocket, type RemoteInfo } from 'node:dgram';
import { once } from 'node:events';
import * as packet from 'dns-packet';

/**
 * A DNS server on a free loopback UDP port that answers TXT questions from a table the test fills:
 * the domain-verification lookups go through the real DNS protocol and Node's real resolver
 * (BULWARK_DNS_SERVERS points at it). Any other question gets an empty answer (NOERROR, no data).
 */
export interface DnsServer {
  /** `127.0.0.1:<port>`, for BULWARK_DNS_SERVERS. */
  address: string;
  /** Publishes (replaces) the TXT records of `name`. */
  setTxt(name: string, values: string[]): void;
  /** The names asked for, in order. */
  asked: string[];
  close(): Promise<void>;
}

export async function startDnsServer(): Promise<DnsServer> {
  const records = new Map<string, string[]>();
  const asked: string[] = [];
  const socket = createSocket('udp4');
  socket.on('message', (message: Buffer, from: RemoteInfo) => {
    let query: packet.Packet;
    try {
      query = packet.decode(message);
    } catch {
      return; // not DNS: nothing to answer
    }
    for (const question of query.questions ?? []) asked.push(question.name);
    const answers = (query.questions ?? []).flatMap((question) =>
      question.type === 'TXT'
        ? (records.get(question.name.toLowerCase()) ?? []).map((value) => ({
            type: 'TXT' as const,
            name: question.name,
            ttl: 1,
            data: [value],
          }))
        : [],
    );
    const reply = packet.encode({
      id: query.id,
      type: 'response',
      flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE,
      questions: query.questions,
      answers,
    });
    socket.send(reply, from.port, from.address);
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const { port } = socket.address();
  return {
    address: `127.0.0.1:${port}`,
    asked,
    setTxt: (name, values) => records.set(name.toLowerCase(), values),
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
