import type { CommandStatus } from '../db/schema.js';

/** Every state a command can be in, as the API names them. */
export const COMMAND_STATUSES = [
  'awaiting_approval',
  'held',
  'queued',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
  'skipped',
] as const satisfies readonly CommandStatus[];

/** The states a command never leaves: routes, services and stores all end their work on them. */
export const TERMINAL_STATUSES: readonly CommandStatus[] = [
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'rejected',
  'expired',
  'skipped',
];
