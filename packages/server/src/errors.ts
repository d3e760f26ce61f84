/**
 * The typed errors services throw. Each has a stable machine code and an HTTP status; the one error
 * handler (http/error-handler.ts) turns them into `{ error: { code, message, requestId } }`. Anything
 * else that escapes is answered as 500 `internal_error` with a generic message: no stack, SQL or
 * internal name ever leaves the server.
 */

export interface FieldProblem {
  /** Where the problem is, e.g. `body.labels.env` or `query.limit`. */
  path: string;
  message: string;
}

export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields?: FieldProblem[],
  ) {
    super(message);
    this.name = 'AppError';
  }
}

export class ValidationError extends AppError {
  constructor(fields: FieldProblem[], message = 'The request is not valid.') {
    super(422, 'validation_failed', message, fields);
  }
}

export class BadRequestError extends AppError {
  constructor(code: string, message: string) {
    super(400, code, message);
  }
}

export class UnauthenticatedError extends AppError {
  constructor(message = 'Authentication is required.') {
    super(401, 'unauthenticated', message);
  }
}

export class ForbiddenError extends AppError {
  constructor(message = 'You do not have permission to do this.') {
    super(403, 'forbidden', message);
  }
}

export class NotFoundError extends AppError {
  constructor(message = 'Not found.') {
    super(404, 'not_found', message);
  }
}

export class RateLimitedError extends AppError {
  constructor(readonly retryAfterSeconds: number) {
    super(429, 'rate_limited', 'Too many requests; try again later.');
  }
}

export class ServiceUnavailableError extends AppError {
  constructor(code: string, message: string) {
    super(503, code, message);
  }
}
