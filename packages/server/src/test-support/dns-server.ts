import { createSocket, type RemoteInfo } from 'node:dgram';
import { once } from 'node:events';
import { isIP } from 'node:net';
import * as packet from 'dns-packet';

/**
 * A DNS server on a free loopback UDP port that answers TXT questions from a table the test fills:
 * the domain-verification lookups go through the real DNS protocol and Node's real resolver
 * (BULWARK_DNS_SERVERS points at it). It also answers A/AAAA questions from `setAddresses`, where
 * a name can answer differently on each successive question (the DNS-rebinding attack the outbound
 * guard must survive). Any other question gets an empty answer (NOERROR, no data).
 */
export interface DnsServer {
  /** `127.0.0.1:<port>`, for BULWARK_DNS_SERVERS. */
  address: string;
  /** Publishes (replaces) the TXT records of `name`. */
  setTxt(name: string, values: string[]): void;
  /**
   * Publishes the A/AAAA answers of `name`: the n-th A (or AAAA) question is answered from
   * `answers[n]`, the last entry repeating. IPv4 addresses answer A, IPv6 ones AAAA.
   */
  setAddresses(name: string, ...answers: string[][]): void;
  /** How many A (or AAAA) questions were asked for `name`. */
  addressQuestions(name: string, type: 'A' | 'AAAA'): number;
  /** The names asked for, in order. */
  asked: string[];
  close(): Promise<void>;
}

export async function startDnsServer(): Promise<DnsServer> {
  const records = new Map<string, string[]>();
  const addresses = new Map<string, string[][]>();
  const addressAsked = new Map<string, number>();
  const answerAddresses = (question: packet.Question): packet.Answer[] => {
    if (question.type !== 'A' && question.type !== 'AAAA') return [];
    const sequence = addresses.get(question.name.toLowerCase());
    if (sequence === undefined) return [];
    const counter = `${question.type} ${question.name.toLowerCase()}`;
    const seen = addressAsked.get(counter) ?? 0;
    addressAsked.set(counter, seen + 1);
    const answer = sequence[Math.min(seen, sequence.length - 1)] ?? [];
    return answer
      .filter((address) => isIP(address) === (question.type === 'A' ? 4 : 6))
      .map((address) => ({ type: question.type as 'A', name: question.name, ttl: 0, data: address }));
  };
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
        : answerAddresses(question),
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
    setAddresses: (name, ...answers) => {
      addresses.set(name.toLowerCase(), answers);
      addressAsked.delete(`A ${name.toLowerCase()}`);
      addressAsked.delete(`AAAA ${name.toLowerCase()}`);
    },
    addressQuestions: (name, type) => addressAsked.get(`${type} ${name.toLowerCase()}`) ?? 0,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
