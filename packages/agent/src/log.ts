import { KeyObject } from 'node:crypto';

/**
 * JSON-lines logging to stdout ({time, level, msg, ...fields}), as a supervisor (journald, Docker)
 * collects it. AGT-7: keys and tokens never reach a log line. Callers never pass them; as a second
 * line of defence a KeyObject or a Buffer is written as a placeholder and anything shaped like a
 * Bulwark token (`bwr_…`, `bwk_…`) is masked, so a careless field cannot leak one.
 */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds these fields (e.g. agentId) to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; stdout by default. */
  write?: (line: string) => void;
}

const TOKEN_SHAPE = /\bbw[a-z]_[A-Za-z0-9_-]{20,}/g;

function redact(_key: string, value: unknown): unknown {
  if (value instanceof KeyObject) return '[key]';
  if (Buffer.isBuffer(value)) return '[bytes]';
  if (value instanceof Error) return value.message.replace(TOKEN_SHAPE, '[token]');
  if (typeof value === 'string') return value.replace(TOKEN_SHAPE, '[token]');
  return value;
}

export function createLogger(options: LoggerOptions = {}, base: LogFields = {}): Logger {
  const threshold = LOG_LEVELS.indexOf(options.level ?? 'info');
  const write = options.write ?? ((line: string) => process.stdout.write(line));
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(level) < threshold) return;
    const entry = { time: new Date().toISOString(), level, msg, ...base, ...fields };
    write(`${JSON.stringify(entry, (key, value) => redact(key, value))}\n`);
  };
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (fields) => createLogger(options, { ...base, ...fields }),
  };
}
