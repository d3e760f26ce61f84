import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { GuardedFetch } from '../net/outbound.js';
import type { SinkLine, SinkTransport } from './sinks.lines.js';

/** Signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export const SIGNATURE_HEADER = 'bulwark-signature';
/** The same for the same batch, however often it is sent again: a receiver may dedupe batches on it. */
export const DELIVERY_HEADER = 'bulwark-delivery';
/** How old a signed timestamp a receiver should accept; older is a replay. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;
const TIMEOUT_MS = 15_000;

export function webhookSignature(secret: string, timestamp: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/**
 * What a receiver runs on each delivery (also in docs/audit-sinks.md): the MAC over the timestamp and
 * the exact body, compared in constant time, and the timestamp within the tolerance, so a captured
 * delivery cannot be replayed later and a body cannot be changed or made up without the secret.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | undefined,
  body: string,
  nowSeconds: number,
  toleranceSeconds = SIGNATURE_TOLERANCE_SECONDS,
): { ok: true } | { ok: false; reason: string } {
  const match = /^t=(\d{1,12}),v1=([0-9a-f]{64})$/.exec(header ?? '');
  if (!match) return { ok: false, reason: 'missing or malformed signature header' };
  const timestamp = Number(match[1]);
  const expected = Buffer.from(webhookSignature(secret, timestamp, body), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(match[2]!, 'hex')))
    return { ok: false, reason: 'bad signature' };
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds)
    return { ok: false, reason: 'timestamp outside the tolerance (replayed or clock skew)' };
  return { ok: true };
}

/**
 * The HTTPS webhook sink: a batch is one POST of NDJSON lines, signed, through the SSRF-guarded fetch;
 * any answer but 2xx is a failure and the batch is sent again later (redirects are not followed).
 */
export function createWebhookTransport(options: {
  url: string;
  signingSecret: string;
  fetch: GuardedFetch;
  clock: () => number;
}): SinkTransport {
  return {
    async send(lines: SinkLine[]): Promise<void> {
      const body = lines.map((line) => line.text).join('');
      const timestamp = Math.floor(options.clock() / 1000);
      const response = await options.fetch(options.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-ndjson',
          [SIGNATURE_HEADER]: `t=${timestamp},v1=${webhookSignature(options.signingSecret, timestamp, body)}`,
          [DELIVERY_HEADER]: createHash('sha256').update(body).digest('hex').slice(0, 32),
        },
        body,
        redirect: 'manual',
        timeoutMs: TIMEOUT_MS,
        // Judged by the status alone: a 2xx with a large body is still a delivery (reading it and
        // failing on its size would send the same batch again for ever).
        discardBody: true,
      });
      if (response.status < 200 || response.status > 299)
        throw new Error(`webhook receiver answered ${response.status}`);
    },
  };
}
