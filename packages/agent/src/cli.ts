#!/usr/bin/env node
import { hostname } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { assertRunAsPossible, ConfigError, loadConfig } from './config.js';
import { checkHandshake, startAgent } from './connection.js';
import { JournalError, journalFileFor, openJournal } from './journal.js';
import { createLogger, type Logger } from './log.js';
import { InsecureServerError, printable } from './net.js';
import { RegisterError, register } from './register.js';
import { DEFAULT_STATE_FILE, describeState, loadStateFile, StateFileError } from './state.js';
import { readTokenFromStdin, TokenInputError } from './token-input.js';
import { AGENT_VERSION } from './version.js';

/**
 * `bulwark-agent` (CLI-1): register, run, status. Human output on stdout, errors on stderr, and a
 * non-zero exit on any failure. `run` logs JSON lines to stdout for the supervisor.
 *
 * Exit codes: 0 ok (or stopped by SIGTERM/SIGINT); 1 bad input, unreadable/unsafe state or config, or
 * an error nothing handled; 2 `status` could not complete a handshake; 3 the server revoked this agent
 * (restarting will not help).
 */

const EXIT_FAILURE = 1;
const EXIT_HANDSHAKE_FAILED = 2;
const EXIT_REVOKED = 3;

/** How long stopping after an unhandled error may take before the process exits anyway. */
const FAILURE_STOP_MS = 10_000;

const out = (line: string) => process.stdout.write(`${line}\n`);
const err = (line: string) => process.stderr.write(`${line}\n`);

/** Errors whose message is written for an operator; anything else is a bug and says so. */
const OPERATOR_ERRORS = [
  StateFileError,
  ConfigError,
  RegisterError,
  InsecureServerError,
  InvalidArgumentError,
  JournalError,
  TokenInputError,
];

function notEmpty(what: string) {
  return (value: string) => {
    if (value.trim() === '') throw new InvalidArgumentError(`${what} must not be empty`);
    return value;
  };
}

/**
 * The token from exactly one place. Standard input and the environment keep it out of `ps` and shell
 * history; `--token` on the command line still works (scripts rely on it) but says what it costs.
 */
async function registrationToken(options: { token?: string; tokenStdin?: boolean }, command: Command) {
  if (options.tokenStdin) {
    if (options.token !== undefined)
      throw new InvalidArgumentError(
        '--token-stdin and --token (or BULWARK_REGISTRATION_TOKEN) both give a token; use one',
      );
    return readTokenFromStdin();
  }
  if (options.token === undefined)
    throw new InvalidArgumentError(
      'a registration token is needed: set BULWARK_REGISTRATION_TOKEN, or pipe it in with --token-stdin',
    );
  if (command.getOptionValueSource('token') === 'cli')
    err(
      'bulwark-agent: warning: a token on the command line is visible to other users (ps) and kept in shell history; ' +
        'prefer BULWARK_REGISTRATION_TOKEN or --token-stdin',
    );
  return options.token;
}

async function registerCommand(
  options: {
    server: string;
    token?: string;
    tokenStdin?: boolean;
    name?: string;
    state: string;
    caFile?: string;
    fingerprint?: string;
    hostname?: string;
  },
  command: Command,
): Promise<void> {
  const token = await registrationToken(options, command);
  const name = options.name ?? hostname().toLowerCase().split('.')[0] ?? '';
  const state = await register({
    server: options.server,
    token,
    name,
    stateFile: options.state,
    ...(options.hostname ? { hostname: options.hostname } : {}),
    ...(options.caFile ? { caFile: options.caFile } : {}),
    ...(options.fingerprint ? { fingerprint256: options.fingerprint } : {}),
  });
  const shown = describeState(state);
  out(`registered agent ${shown.agentId} (${shown.name}) in org ${shown.org}`);
  out(`state file: ${options.state} (mode 0600; keep it private, it holds the agent's keys)`);
  out(`pinned server key: ${shown.serverKey}`);
}

/**
 * The last resort for an error nothing caught. Node's default prints a bare stack trace past the
 * logger and its redaction, and kills the daemon with commands running; going on would leave an agent
 * in an unknown state taking commands. So: one line through the redacting logger, then the ordinary
 * stop (the connection closed, running commands stopped and journaled interrupted) bounded in time,
 * then exit 1 for the supervisor to restart a fresh process.
 */
function exitOnUnhandledErrors(logger: Logger, stop: () => Promise<unknown>): void {
  let failing = false;
  const fail = (kind: 'uncaughtException' | 'unhandledRejection') => (error: unknown) => {
    // However the stop ends, the process does not exit with 0.
    process.exitCode = EXIT_FAILURE;
    if (failing) {
      logger.error('another unhandled error while stopping', { kind, err: error });
      return;
    }
    failing = true;
    logger.error('unhandled error; stopping', { kind, err: error });
    setTimeout(() => {
      logger.error('stopping timed out; exiting', { timeoutMs: FAILURE_STOP_MS });
      process.exit(EXIT_FAILURE);
    }, FAILURE_STOP_MS).unref();
    stop().catch((stopError: unknown) => {
      logger.error('stopping failed', { err: stopError });
      process.exit(EXIT_FAILURE);
    });
  };
  process.on('uncaughtException', fail('uncaughtException'));
  process.on('unhandledRejection', fail('unhandledRejection'));
}

async function runCommand(options: { config: string }): Promise<void> {
  const config = loadConfig(options.config);
  assertRunAsPossible(config);
  const state = await loadStateFile(config.stateFile);
  const logger = createLogger();
  // Opening the journal kills and records as interrupted whatever a previous run left running (CMD-6).
  const journal = await openJournal(journalFileFor(config.stateFile), { logger });
  const agent = startAgent({
    state,
    services: config.services,
    actions: config.actions,
    allowedRoots: config.allowedRoots,
    journal,
    ...(config.tls ? { tls: config.tls } : {}),
    logger,
  });
  const stop = () => {
    void agent.stop();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  exitOnUnhandledErrors(logger, () => agent.stop());
  const outcome = await agent.done.finally(() => journal.close());
  process.off('SIGTERM', stop);
  process.off('SIGINT', stop);
  if (outcome.kind === 'revoked') {
    err(`bulwark-agent: this agent was revoked by the server (${outcome.message}); register a new one`);
    process.exitCode = EXIT_REVOKED;
  }
}

async function statusCommand(options: { config: string; timeout: number }): Promise<void> {
  const config = loadConfig(options.config);
  const state = await loadStateFile(config.stateFile);
  const shown = describeState(state);
  out(`agent:      ${shown.agentId}`);
  out(`name:       ${shown.name}`);
  out(`org:        ${shown.org}`);
  out(`server:     ${shown.server}`);
  out(`server key: ${shown.serverKey} (pinned)`);
  out(`state file: ${config.stateFile}`);
  // Handshake problems are reported on the line below; its log lines would only repeat them.
  const quiet = createLogger({ level: 'error', write: () => {} });
  const check = await checkHandshake({
    state,
    ...(config.tls ? { tls: config.tls } : {}),
    logger: quiet,
    timeoutMs: options.timeout * 1000,
  });
  if (check.ok) {
    out(`handshake:  ok (heartbeat every ${check.welcome.heartbeatSeconds} s)`);
  } else {
    out(`handshake:  FAILED: ${printable(check.reason)}`);
    process.exitCode = EXIT_HANDSHAKE_FAILED;
  }
}

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 300)
    throw new InvalidArgumentError('expected whole seconds, 1 to 300');
  return n;
}

export function buildProgram(): Command {
  const program = new Command('bulwark-agent')
    .description(
      'The Bulwark agent: connects outbound to a Bulwark server and reports the services it looks after',
    )
    .version(AGENT_VERSION)
    .showHelpAfterError()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });

  program
    .command('register')
    .description(
      'register this host with a server using a one-time registration token; writes the state file',
    )
    .requiredOption(
      '--server <url>',
      'the server URL, e.g. https://bulwark.example.com',
      notEmpty('--server'),
    )
    // The environment variable and standard input keep the token out of `ps` and shell history.
    .addOption(
      new Option('--token <token>', 'a registration token (bwr_…) from the console; prefer the environment')
        .env('BULWARK_REGISTRATION_TOKEN')
        .argParser(notEmpty('--token')),
    )
    .option(
      '--token-stdin',
      'read the registration token from standard input (the first line; asked for without echo at a terminal)',
    )
    .option('--name <name>', "the agent's name (default: this host's short name)")
    .option('--state <file>', 'where to write the state file', DEFAULT_STATE_FILE)
    .option('--hostname <hostname>', 'hostname reported to the server (default: this host)')
    .option('--ca-file <file>', 'PEM CA bundle to trust for the server instead of the system CAs')
    .option('--fingerprint <sha256>', "pin the server certificate's SHA-256 fingerprint")
    .action(registerCommand);

  program
    .command('run')
    .description('connect to the server and stay connected (stop with SIGTERM or SIGINT)')
    .requiredOption('-c, --config <file>', 'the agent.yaml configuration file')
    .action(runCommand);

  program
    .command('status')
    .description("show this agent's identity and whether a handshake with the server succeeds now")
    .requiredOption('-c, --config <file>', 'the agent.yaml configuration file')
    .option('--timeout <seconds>', 'how long to wait for the handshake', positiveSeconds, 10)
    .action(statusCommand);

  return program;
}

buildProgram()
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    const known = OPERATOR_ERRORS.some((type) => error instanceof type);
    const message = error instanceof Error ? error.message : String(error);
    err(`bulwark-agent: ${known ? message : `unexpected error: ${message}`}`);
    process.exitCode = EXIT_FAILURE;
  });
