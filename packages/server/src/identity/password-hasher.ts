import { availableParallelism } from 'node:os';
import { hash, type Options, verify } from '@node-rs/argon2';
import { ServiceUnavailableError } from '../errors.js';

/**
 * Password hashing (AUTH-1, AUTH-2): argon2id at the OWASP parameters (19 MiB, 2 passes, 1 lane), on a
 * bounded pool. Each hash takes tens of milliseconds of a CPU core and a libuv thread; without a bound,
 * a flood of login attempts would occupy every core and thread and starve everything else. At most
 * `concurrency` hashes run at once, at most `queue` wait, and beyond that a sign-in is refused with
 * 503 at once instead of piling up.
 */

// `Algorithm.Argon2id` is 2; the enum is a const enum that cannot be imported under isolated modules.
const ARGON2ID = 2;
export const ARGON2_PARAMS: Options = {
  algorithm: ARGON2ID,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
};

export class HashingBusyError extends ServiceUnavailableError {
  constructor() {
    super('auth_busy', 'Too many sign-ins are being processed; try again in a moment.');
  }
}

/**
 * The refusal is expected under a flood and says nothing a stack trace would add, while capturing one
 * is a large part of what each refusal costs: the cheaper the refusal, the more of the event loop a
 * flood leaves to everyone else (bench/login-flood).
 */
function busy(): HashingBusyError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new HashingBusyError();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export interface PasswordHasherOptions {
  /** Hashes running at once; default: all cores but one, at least one. */
  concurrency?: number;
  /** Hashes waiting for a slot before new ones are refused. */
  queue?: number;
}

export function createPasswordHasher(options: PasswordHasherOptions = {}) {
  const concurrency = options.concurrency ?? Math.max(1, availableParallelism() - 1);
  const queueLimit = options.queue ?? 64;
  let active = 0;
  const waiting: Array<() => void> = [];
  // Made now, not on first use: otherwise the first unknown account would cost two hashes.
  const dummyHash = hash(`no account has this password ${Math.random()}`, ARGON2_PARAMS);

  const full = () => active >= concurrency && waiting.length >= queueLimit;

  async function withSlot<T>(work: () => Promise<T>): Promise<T> {
    if (active >= concurrency) {
      if (full()) throw busy();
      await new Promise<void>((resolve) => waiting.push(resolve));
    } else {
      active++;
    }
    try {
      return await work();
    } finally {
      // Hand the slot straight to the next waiter, or free it.
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  }

  return {
    hash: (password: string): Promise<string> => withSlot(() => hash(password, ARGON2_PARAMS)),

    verify: (passwordHash: string, password: string): Promise<boolean> =>
      withSlot(() => verify(passwordHash, password).catch(() => false)),

    /**
     * The same work as checking a real password, against a hash no password matches: an unknown
     * account then costs what a known one does, so response time does not tell them apart (AUTH-2).
     */
    async verifyNothing(password: string): Promise<false> {
      await withSlot(async () => {
        await verify(await dummyHash, password).catch(() => false);
      });
      return false;
    },

    /**
     * Refuses at once when a hash would be refused now: a sign-in checks this before any other work,
     * so a flood beyond the pool's bound costs as little as possible. Hashing later can still be
     * refused, if the queue fills in between.
     */
    assertCapacity(): void {
      if (full()) throw busy();
    },

    /** Hashes running and waiting now, for metrics and readiness. */
    load: () => ({ active, waiting: waiting.length, concurrency, queue: queueLimit }),
  };
}

export type PasswordHasher = ReturnType<typeof createPasswordHasher>;
