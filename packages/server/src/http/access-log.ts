import { type FastifyBaseLogger, type FastifyReply, type FastifyRequest, LogController } from 'fastify';

/**
 * One access-log line per request, written when it completes: request id, method, URL (secret query
 * values masked by the `req` serializer), client address, status and time taken. Fastify's default
 * writes a second line when each request arrives; that one is kept at `debug`, where someone chasing
 * a request that never completes will look.
 *
 * The access line holds only the fields above, each reduced by its serializer, so it is written by a
 * logger without the catch-all redaction paths, whose wildcards were the largest cost of logging a
 * request (bench/login-flood). Every other line, errors included, keeps the full redaction.
 */
export class AccessLog extends LogController {
  readonly #lines: FastifyBaseLogger;

  constructor(logger: FastifyBaseLogger) {
    super({ requestIdLogLabel: 'requestId' });
    this.#lines = logger.child({}, { redact: [] });
  }

  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    if (error) {
      reply.log.error(
        { req: request, res: reply, err: error, responseTime: reply.elapsedTime },
        'request errored',
      );
      return;
    }
    this.#lines.info(
      { requestId: request.id, req: request, res: reply, responseTime: reply.elapsedTime },
      'request completed',
    );
  }
}
