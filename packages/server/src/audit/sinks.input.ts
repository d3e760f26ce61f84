import { z } from 'zod';
import { DisplayText } from '../http/schemas.js';

/**
 * What configures an audit sink, checked the same way whether it comes through the API or the CLI
 * (`bulwark audit sinks add`). Zod only: the CLI loads this without the HTTP server.
 */

/** A host name or an IP address (no scheme, no port). */
const Host = z
  .string()
  .trim()
  .min(1)
  .max(253)
  .regex(
    /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$|^[0-9a-fA-F:.]+$/,
    'is not a host name or address',
  );

/** HTTPS only, no credentials in the URL (they would be logged and shown): the secret signs instead. */
const HttpsUrl = z
  .url({ protocol: /^https$/ })
  .max(2048)
  .refine((value) => {
    // zod runs refinements after a failed check too: an unparsable value is the url check's to report.
    if (!URL.canParse(value)) return true;
    const url = new URL(value);
    return url.username === '' && url.password === '';
  }, 'must not hold a user name or password');

/** A header the collector wants (an API key); never one that frames the request itself. */
const HeaderName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/, 'is not a header name')
  .refine(
    (name) =>
      !['host', 'content-length', 'content-type', 'transfer-encoding', 'connection'].includes(
        name.toLowerCase(),
      ),
    'is set by the server',
  );
const HeaderValue = z
  .string()
  .max(4096)
  .regex(/^[\t\x20-\x7e]*$/, 'must be printable ASCII');

/** A sink's destination as a member (API) or an operator (CLI) gives it. */
export const SinkInputSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('webhook'), url: HttpsUrl }),
  z.strictObject({
    kind: z.literal('syslog'),
    host: Host,
    port: z.number().int().min(1).max(65_535),
    caPem: z.string().min(1).max(32_768).describe("PEM of the CA that signed the receiver's certificate"),
    serverName: Host.nullish().describe('The name the certificate must carry; the host by default'),
    facility: z
      .number()
      .int()
      .min(0)
      .max(23)
      .optional()
      .describe('RFC 5424 facility; 13 (log audit) by default'),
    appHostname: z
      .string()
      .regex(/^[\x21-\x7e]{1,255}$/)
      .nullish(),
  }),
  z.strictObject({ kind: z.literal('file') }),
  z.strictObject({
    kind: z.literal('otlp'),
    url: HttpsUrl.describe('The collector’s logs endpoint, e.g. https://collector:4318/v1/logs'),
    headers: z
      .record(HeaderName, HeaderValue)
      .optional()
      .describe('Sent with every request (an API key of the collector); write-only, never returned'),
  }),
]);

export const PersonalDataSchema = z
  .boolean()
  .describe(
    "Lines carry people's opened email/name, IP and user agent (`shown`); off: only the sealed/hashed form, which erasure reaches",
  );

export const SinkNameSchema = DisplayText(100);
