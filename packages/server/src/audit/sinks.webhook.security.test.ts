/**
 * The audit webhook (AUD-6) against what goes wrong between Bulwark and a SIEM.
 *
 * - A forged or replayed delivery: the receiver checks an HMAC-SHA256 over the timestamp and the exact
 *   body with the secret shown once at creation, so a changed body, another key, or a captured
 *   delivery sent again later are all refused.
 * - A receiver outage, and the server instance dying (SIGKILL) in the middle of it: the audited
 *   changes still commit (the sink is not in their path), the failures show on /metrics, and once the
 *   receiver is back every event arrives, in chain order, nothing lost: the chain is the outbox, the
 *   sink's cursor moves only after the receiver said 2xx, so a batch in flight is sent again.
 *
 * The server runs as a real process so it trusts the test CA the way an operator's server trusts the
 * SIEM's (NODE_EXTRA_CA_CERTS), and reaches 127.0.0.1 only because the outbound guard is told to
 * (BULWARK_OUTBOUND_ALLOW_PRIVATE).
 */
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server } from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createGuardedFetch } from '../net/outbound.js';
import { OWNER } from '../test-support/org-world.js';
import { type ServerProcess, startServerProcess } from '../test-support/processes.js';
import { SessionClient } from '../test-support/session-client.js';
import { tempDir } from '../test-support/temp.js';
import { makeTestCa } from '../test-support/test-ca.js';
import { testLine } from './sinks.lines.js';
import { createWebhookTransport, SIGNATURE_HEADER, verifyWebhookSignature } from './sinks.webhook.js';

const METRICS_TOKEN = 'metrics-token-for-the-webhook-sink-test-0123456789';

interface Delivery {
  header: string;
  body: string;
}
interface OtlpRequest {
  resourceLogs: Array<{
    scopeLogs: Array<{
      logRecords: Array<{ severityNumber: number; body: { stringValue: string }; timeUnixNano: string }>;
    }>;
  }>;
}
type Line = { chain: string; seq: number; hash: string; prevHash?: string; kind?: string; id?: string };

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('audit webhook sink', () => {
  let dir: { path: string; remove(): Promise<void> };
  let receiver: Server;
  let receiverUrl: string;
  let server: ServerProcess | undefined;
  let secret = '';
  let mode: 'up' | 'down' = 'up';
  const accepted: Delivery[] = [];
  const refused: string[] = [];
  let refusedWhileDown = 0;
  const otlp: Array<{ headers: Record<string, unknown>; body: OtlpRequest }> = [];

  const env = () => ({
    BULWARK_DATA_DIR: path.join(dir.path, 'data'),
    BULWARK_BOOTSTRAP_EMAIL: OWNER.email,
    BULWARK_BOOTSTRAP_PASSWORD: OWNER.password,
    BULWARK_BOOTSTRAP_ORG_NAME: 'Acme',
    BULWARK_RATE_LIMIT_WRITE_PER_MINUTE: '10000',
    BULWARK_OUTBOUND_ALLOW_PRIVATE: '127.0.0.1',
    BULWARK_AUDIT_SINK_POLL_MS: '20',
    BULWARK_AUDIT_SINK_BACKOFF_MAX_SECONDS: '1',
    BULWARK_AUDIT_CHECKPOINT_EVERY: '5',
    BULWARK_METRICS_TOKEN: METRICS_TOKEN,
    NODE_EXTRA_CA_CERTS: path.join(dir.path, 'webhook-ca.pem'),
  });
  const signIn = async () => {
    const client = new SessionClient(server!.url);
    expect((await client.login(OWNER.email, OWNER.password)).status).toBe(200);
    return client;
  };
  const lines = (): Line[] =>
    accepted.flatMap((delivery) =>
      delivery.body
        .split('\n')
        .filter((text) => text !== '')
        .map((text) => JSON.parse(text) as Line),
    );
  const makeEvents = async (client: SessionClient, n: number, label: string) => {
    for (let i = 0; i < n; i++)
      expect((await client.json('POST', '/api/orgs/acme/teams', { name: `${label}-${i}` })).status).toBe(201);
  };
  const metric = async (name: string): Promise<number> => {
    const text = await (
      await fetch(`${server!.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
    ).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`));
    return line ? Number(line.split(' ').at(-1)) : 0;
  };

  beforeAll(async () => {
    dir = await tempDir('webhook');
    const certificate = makeTestCa(dir.path, 'webhook').issue('server');
    receiver = createServer(
      {
        cert: await readFile(certificate.certFile),
        key: await readFile(certificate.keyFile),
      },
      (request, response) => {
        let body = '';
        request.setEncoding('utf8');
        request.on('data', (chunk: string) => {
          body += chunk;
        });
        request.on('end', () => {
          if (request.url === '/v1/logs') {
            otlp.push({ headers: request.headers, body: JSON.parse(body) });
            response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
            return;
          }
          if (mode === 'down') {
            refusedWhileDown++;
            response.writeHead(503).end();
            return;
          }
          const header = String(request.headers[SIGNATURE_HEADER] ?? '');
          const check = verifyWebhookSignature(secret, header, body, Math.floor(Date.now() / 1000));
          if (!check.ok) {
            refused.push(check.reason);
            response.writeHead(401).end();
            return;
          }
          accepted.push({ header, body });
          response.writeHead(204).end();
        });
      },
    );
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    receiverUrl = `https://127.0.0.1:${(receiver.address() as { port: number }).port}/audit`;
    server = await startServerProcess({ cwd: dir.path, env: env() });
  }, 60_000);

  afterAll(async () => {
    await server?.stop('SIGKILL');
    receiver?.closeAllConnections();
    await new Promise((resolve) => receiver?.close(resolve));
    await dir?.remove();
  });

  test('signed deliveries; a forged, re-keyed or replayed one is refused by the check receivers run', async () => {
    const owner = await signIn();
    const created = await owner.json<{ sink: { id: string }; signingSecret: string }>(
      'POST',
      '/api/orgs/acme/audit/sinks',
      { name: 'siem', config: { kind: 'webhook', url: receiverUrl } },
    );
    expect(created.status).toBe(201);
    secret = created.body.signingSecret;
    await makeEvents(owner, 2, 'signed');
    await until('a signed delivery', async () => (accepted.length > 0 ? true : undefined));
    expect(refused).toEqual([]);
    const { header, body } = accepted[0]!;
    const now = Math.floor(Date.now() / 1000);
    expect(verifyWebhookSignature(secret, header, body, now)).toEqual({ ok: true });
    // A body changed in transit (or made up) with a captured signature.
    const forged = body.replace('"outcome":"success"', '"outcome":"failure"');
    expect(forged).not.toBe(body);
    expect(verifyWebhookSignature(secret, header, forged, now).ok).toBe(false);
    // Signed with another key (a receiver's guess, or another sink's secret).
    expect(verifyWebhookSignature(`${secret}x`, header, body, now).ok).toBe(false);
    // The same delivery replayed ten minutes later.
    expect(verifyWebhookSignature(secret, header, body, now + 600)).toEqual({
      ok: false,
      reason: expect.stringMatching(/replayed/),
    });
    expect(verifyWebhookSignature(secret, undefined, body, now).ok).toBe(false);
  }, 60_000);

  test('a receiver outage and a killed instance lose nothing: retried with backoff, redelivered after restart, in order', async () => {
    let owner = await signIn();
    mode = 'down';
    // Changes go on committing while the sink is down: delivery is not in their path.
    await makeEvents(owner, 6, 'outage');
    await until('failures on /metrics', async () =>
      (await metric('bulwark_audit_sink_failures_total')) >= 2 &&
      (await metric('bulwark_audit_sink_outbox_depth')) > 0
        ? true
        : undefined,
    );
    expect(refusedWhileDown).toBeGreaterThanOrEqual(2);
    // The instance dies mid-outage (no shutdown, no flush), and a new one starts on the same data.
    await server!.stop('SIGKILL');
    server = await startServerProcess({ cwd: dir.path, env: env() });
    owner = await signIn();
    await makeEvents(owner, 2, 'after-restart');
    mode = 'up';
    const audit = await owner.json<{ events: Array<{ seq: number; chain: string }> }>(
      'GET',
      '/api/orgs/acme/audit/events?limit=100',
    );
    const head = Math.max(...audit.body.events.filter((e) => e.chain !== 'instance').map((e) => e.seq));
    await until('the sink to catch up after the outage', async () =>
      lines().some((line) => line.kind === undefined && line.seq >= head) ? true : undefined,
    );
    // Every event from the first, none missing; the stream is in chain order (a redelivered batch
    // repeats lines, which receivers drop by id) and each line links to the one before it.
    const events = lines().filter((line) => line.kind === undefined);
    const seen = new Map<number, Line>();
    let last = 0;
    for (const line of events) {
      if (seen.has(line.seq)) {
        expect(seen.get(line.seq)!.hash).toBe(line.hash);
        continue;
      }
      expect(line.seq).toBe(last + 1);
      if (last > 0) expect(line.prevHash).toBe(seen.get(last)!.hash);
      seen.set(line.seq, line);
      last = line.seq;
    }
    expect(last).toBeGreaterThanOrEqual(head);
    expect(lines().some((line) => line.kind === 'checkpoint')).toBe(true);
    expect(await metric('bulwark_audit_sink_outbox_depth')).toBe(0);
    expect(refused).toEqual([]);
  }, 90_000);

  test('OTLP/HTTP logs: one log record per line, the collector key sent but never shown', async () => {
    const owner = await signIn();
    const origin = new URL(receiverUrl).origin;
    const created = await owner.json<{ sink: { id: string; config: Record<string, unknown> } }>(
      'POST',
      '/api/orgs/acme/audit/sinks',
      {
        name: 'collector',
        config: {
          kind: 'otlp',
          url: `${origin}/v1/logs`,
          headers: { 'x-collector-auth': 'collector-credential-42' },
        },
        from: 'now',
      },
    );
    expect(created.status).toBe(201);
    expect(created.body.sink.config).toEqual({
      kind: 'otlp',
      url: `${origin}/v1/logs`,
      headerNames: ['x-collector-auth'],
      personalData: false,
    });
    expect(JSON.stringify(await owner.json('GET', '/api/orgs/acme/audit/sinks'))).not.toContain(
      'collector-credential-42',
    );
    await makeEvents(owner, 1, 'otlp');
    const records = await until('an OTLP export', async () => {
      const all = otlp.flatMap((request) => request.body.resourceLogs[0]!.scopeLogs[0]!.logRecords);
      return all.some((record) => record.body.stringValue.includes('"action":"team.created"'))
        ? all
        : undefined;
    });
    expect(otlp[0]!.headers['x-collector-auth']).toBe('collector-credential-42');
    const line = JSON.parse(
      records.find((r) => r.body.stringValue.includes('team.created'))!.body.stringValue,
    );
    expect(line).toMatchObject({ action: 'team.created', chain: expect.stringMatching(/^org_/) });
    expect(records[0]!.severityNumber).toBe(9);
  }, 60_000);
});

// A receiver (or something in front of it) answers 2xx with a body over the size limit: the batch was
// taken, so the sink must count it delivered, not fail on the body and resend the batch for ever.
describe('audit webhook sink, judged by status', () => {
  const answers: number[] = [];
  const big = createHttpServer((request, response) => {
    request.resume();
    request.on('end', () => {
      answers.push(1);
      const body = 'x'.repeat(256 * 1024);
      response.writeHead(200, { 'content-type': 'text/html', 'content-length': body.length }).end(body);
    });
  });
  beforeAll(() => new Promise<void>((resolve) => big.listen(0, '127.0.0.1', resolve)));
  afterAll(async () => {
    big.closeAllConnections();
    await new Promise((resolve) => big.close(resolve));
  });

  test('a 2xx with an oversized body is a delivery', async () => {
    const transport = createWebhookTransport({
      url: `http://127.0.0.1:${(big.address() as { port: number }).port}/audit`,
      signingSecret: 'bwh_test',
      fetch: createGuardedFetch({ allowlist: [], allowPrivate: ['127.0.0.1'], dnsServers: [] }),
      clock: Date.now,
    });
    await expect(transport.send([testLine('org_x', 'snk_x', Date.now())])).resolves.toBeUndefined();
    expect(answers).toHaveLength(1);
  });
});
