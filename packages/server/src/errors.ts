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

/**
 * The database cannot be reached or is going away (PostgreSQL stopped, restarting, out of
 * connections, or the network to it is down). Answered 503 so clients and load balancers retry
 * rather than report a server bug; `cause` keeps the driver's error for the logs.
 */
export class DatabaseUnavailableError extends ServiceUnavailableError {
  constructor(override readonly cause: unknown) {
    super('database_unavailable', 'The database could not be reached. Try again shortly.');
  }
}

/** The database's disk is full: nothing can be written until an operator frees space; reads still work. */
export class StorageFullError extends ServiceUnavailableError {
  constructor(override readonly cause: unknown) {
    super('storage_full', "The server's storage is full, so this change was not made. Reads still work.");
  }
}

/** For a write that may be skipped on a full disk (a last-seen time): rethrows anything else. */
export function unlessStorageFull(error: unknown): void {
  if (!(error instanceof StorageFullError)) throw error;
}
