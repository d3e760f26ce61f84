import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { newId } from '@bulwark/protocol';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, DatabaseUnavailableError, type FieldProblem, StorageFullError } from '../errors.js';

export interface ErrorBody {
  error: { code: string; message: string; requestId: string; fields?: FieldProblem[] };
}

/** Fastify's own client errors, by code, as stable Bulwark codes with messages of our own wording. */
const FASTIFY_CLIENT_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: {
    status: 413,
    code: 'payload_too_large',
    message: 'The request body is larger than this server accepts.',
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    code: 'unsupported_media_type',
    message: 'Send the request body as application/json.',
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    status: 400,
    code: 'bad_request',
    message: 'The Content-Length header does not match the body.',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    status: 400,
    code: 'invalid_json',
    message: 'The request body is empty but declared as JSON.',
  },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    status: 400,
    code: 'invalid_json',
    message: 'The request body is not valid JSON.',
  },
  FST_ERR_BAD_URL: { status: 400, code: 'bad_request', message: 'The URL is malformed.' },
  FST_ERR_MAX_PARAM_LENGTH: {
    status: 414,
    code: 'uri_too_long',
    message: 'A part of the URL is longer than this server accepts.',
  },
  FST_ERR_ASYNC_CONSTRAINT: { status: 400, code: 'bad_request', message: 'The request could not be routed.' },
};

/** Where identity providers call: they read errors in SCIM's shape (RFC 7644 §3.12). */
const SCIM_PREFIX = '/scim/';

/** SCIM's error body: its own `scimType` where the refusal has one, the message as `detail`. */
function sendScim(
  reply: FastifyReply,
  request: FastifyRequest,
  status: number,
  error: Omit<ErrorBody['error'], 'requestId'> & { scimType?: string },
) {
  // A request that does not validate is SCIM's 400, not a 422.
  const answered = status === 422 ? 400 : status;
  const scimType = error.scimType ?? (status === 422 ? 'invalidValue' : undefined);
  const fields = error.fields?.map((field) => `${field.path} ${field.message}`).join('; ');
  return reply
    .code(answered)
    .type('application/scim+json; charset=utf-8')
    .send({
      schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'],
      status: String(answered),
      ...(scimType ? { scimType } : {}),
      detail: fields ? `${error.message} ${fields}` : error.message,
      requestId: request.id,
    });
}

function send(
  reply: FastifyReply,
  request: FastifyRequest,
  status: number,
  error: Omit<ErrorBody['error'], 'requestId'> & { scimType?: string },
) {
  if (request.url.startsWith(SCIM_PREFIX)) return sendScim(reply, request, status, error);
  const { scimType: _scimOnly, ...rest } = error;
  const body: ErrorBody = { error: { ...rest, requestId: request.id } };
  return reply.code(status).type('application/json; charset=utf-8').send(body);
}

/**
 * Fastify's `frameworkErrors`: what the router refuses before any route or error handler runs (a URL
 * with broken percent-encoding, a path parameter past the router's length limit). Without it Fastify
 * answers in its own shape and echoes the URL back; with it, the one error shape.
 */
export function answerFrameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  const known = FASTIFY_CLIENT_ERRORS[error.code] ?? FASTIFY_CLIENT_ERRORS.FST_ERR_ASYNC_CONSTRAINT!;
  return send(reply, request, known.status, { code: known.code, message: known.message });
}

const CONNECTION_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  HPE_HEADER_OVERFLOW: {
    status: 431,
    code: 'headers_too_large',
    message: 'The request headers are larger than this server accepts.',
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    code: 'request_timeout',
    message: 'The request took too long to arrive.',
  },
};

/**
 * Fastify's `clientErrorHandler`: a request Node's HTTP parser refused (headers past 16 KiB, not HTTP
 * at all) never becomes a request; the connection gets the one error shape, then is closed.
 */
export function answerClientError(this: FastifyInstance, error: NodeJS.ErrnoException, socket: Duplex): void {
  // A reset connection has no one left to answer.
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const { status, code, message } = CONNECTION_ERRORS[error.code ?? ''] ?? {
    status: 400,
    code: 'bad_request',
    message: 'The request is not valid HTTP.',
  };
  const requestId = newId('req');
  this.log.debug({ err: error, requestId }, 'connection refused by the HTTP parser');
  const body = JSON.stringify({ error: { code, message, requestId } } satisfies ErrorBody);
  if (socket.writable)
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  socket.destroy(error);
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof DatabaseUnavailableError || error instanceof StorageFullError) {
      // The client gets a stable 503; the operator needs the driver's own words to act on it.
      const what = error instanceof StorageFullError ? 'storage is full' : 'is unavailable';
      request.log.error({ err: error.cause, code: error.code }, `request failed: the database ${what}`);
    }
    if (error instanceof AppError) {
      // Any refusal that knows when to try again says so (request limits, sign-in lockouts).
      const retryAfter = (error as { retryAfterSeconds?: unknown }).retryAfterSeconds;
      if (typeof retryAfter === 'number') reply.header('retry-after', String(retryAfter));
      const scimType = (error as { scimType?: unknown }).scimType;
      return send(reply, request, error.status, {
        code: error.code,
        message: error.message,
        ...(error.fields ? { fields: error.fields } : {}),
        ...(typeof scimType === 'string' ? { scimType } : {}),
      });
    }
    const known = error.code ? FASTIFY_CLIENT_ERRORS[error.code] : undefined;
    if (known) return send(reply, request, known.status, { code: known.code, message: known.message });
    if (error instanceof SyntaxError || error.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
      return send(reply, request, 400, {
        code: 'invalid_json',
        message: 'The request body is not valid JSON.',
      });
    }
    if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
      // A client error Fastify raised that has no mapping yet: answer it without echoing its text.
      request.log.warn({ err: error }, 'unmapped client error');
      return send(reply, request, error.statusCode, {
        code: 'bad_request',
        message: 'The request could not be processed.',
      });
    }
    request.log.error({ err: error }, 'request failed');
    return send(reply, request, 500, {
      code: 'internal_error',
      message: 'Something went wrong on the server. The request id identifies it in the logs.',
    });
  });

  app.setNotFoundHandler((request, reply) =>
    send(reply, request, 404, { code: 'not_found', message: 'There is no such route.' }),
  );
}
