import type { CommandStatus } from '../db/schema.js';

/** The states a command never leaves: routes, services and stores all end their work on them. */
export const TERMINAL_STATUSES: readonly CommandStatus[] = [
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
];
