#!/usr/bin/env node
import { createWriteStream, existsSync, openSync } from 'node:fs';
import { userInfo } from 'node:os';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { EXPORT_FORMATS, type ExportFormat } from './audit/audit.export.js';
import { auditFilters, createAuditStore } from './audit/audit.store.js';
import { type AuditActor, OUTCOMES, type Outcome } from './audit/audit.types.js';
import { checkWitness, witnessLines } from './audit/witness.js';
import { API_KEY_VARIABLE, callApi, SERVER_VARIABLE } from './cli-api.js';
import { type Config, describeConfig, loadConfig } from './config.js';
import { openCore } from './core.js';
import { openDatabase } from './db/database.js';
import { migrateToLatest } from './db/migrate.js';
import type { MigrationContext } from './db/migrations/index.js';
import { AppError } from './errors.js';
import { AdminError, createAdminService } from './identity/admin.service.js';
import { createPasswordHasher } from './identity/password-hasher.js';
import { createPasswords } from './identity/passwords.js';
import { createPersonalDataService } from './identity/personal-data.service.js';
import { createLogger } from './logging.js';
import { backupCommands } from './ops/backup.cli.js';
import { exitOnUnhandledErrors } from './ops/last-resort.js';
import { createLocalKeyProvider } from './secrets/key-provider.js';
import {
  addMasterKey,
  KeyRotationError,
  rewrapDataKeys,
  rotateDataKeys,
  scopesOf,
} from './secrets/key-rotation.js';
import { assertPrivateFile, reloadMasterKeys } from './secrets/master-key.js';
import {
  createWorkloadIdentityService,
  DEFAULT_OVERLAP_MS,
  DEFAULT_PUBLISH_DELAY_MS,
  WorkloadKeyRotationError,
} from './secrets/workload-identity.service.js';
import { createWorkloadIdentityKeysStore } from './secrets/workload-identity-keys.store.js';
import { VERSION } from './version.js';

/** The `bulwark` command (CLI-1). Human output on stdout, progress and errors on stderr, non-zero exit on any failure. */

class CliError extends Error {}

const out = (line: string) => process.stdout.write(`${line}\n`);
const err = (line: string) => process.stderr.write(`${line}\n`);

function configFrom(command: Command): Config {
  const { config } = command.optsWithGlobals<{ config?: string }>();
  return loadConfig(config ? { configFile: config } : {});
}

/** Commands that read an existing installation must not create an empty database by accident. */
function requireExistingDatabase(config: Config): void {
  if (config.database.kind === 'sqlite' && !existsSync(config.database.file)) {
    throw new CliError(
      `no database at ${config.database.file}; start the server once or run: bulwark migrate`,
    );
  }
}

/** Quiet logs for one-shot commands: only problems, to stderr, so stdout stays the command's output. */
const cliLogger = () => createLogger({ level: 'warn', destination: process.stderr, name: 'bulwark-cli' });

function throttled(report: (line: string) => void, everyMs = 1000): (line: string) => void {
  let last = 0;
  return (line) => {
    const now = Date.now();
    if (now - last >= everyMs) {
      last = now;
      report(line);
    }
  };
}

function parseTime(value: string): number {
  const ms = Date.parse(value);
  if (Number.isNaN(ms))
    throw new InvalidArgumentError('expected an ISO-8601 date or time, e.g. 2026-01-31T00:00:00Z');
  return ms;
}

async function serve(command: Command): Promise<void> {
  const config = configFrom(command);
  // Loaded here, not at the top: the HTTP server and every route are only for `serve`.
  const { startServer } = await import('./main.js');
  const server = await startServer(config);
  // The log destination is asynchronous: exit only once its last lines are written.
  const exit = (code: number) => server.logger.flush(() => process.exit(code));
  exitOnUnhandledErrors({
    logger: server.logger,
    close: server.close,
    timeoutMs: config.shutdownTimeoutMs,
    exit,
  });
  let signalled = false;
  const stop = (signal: NodeJS.Signals) => {
    if (signalled) return;
    signalled = true;
    server.logger.info({ signal }, 'shutting down');
    const deadline = setTimeout(() => {
      server.logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown timed out; exiting');
      exit(1);
    }, config.shutdownTimeoutMs);
    deadline.unref();
    server.close().then(
      () => exit(0),
      (error) => {
        server.logger.error({ err: error }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function migrate(command: Command): Promise<void> {
  const config = configFrom(command);
  const database = openDatabase(config);
  try {
    const applied = await migrateToLatest(database, {
      onWaitForLock: () => err('waiting for another process to finish migrating the database'),
      ...existingMasterKeys(config),
    });
    out(applied.length === 0 ? 'database is up to date' : `applied: ${applied.join(', ')}`);
  } finally {
    await database.close();
  }
}

/**
 * The master key, when this installation has one, for migrations that seal what the database holds
 * (0017). Never made here: a key generated by a migration would seal nothing the server could open.
 */
function existingMasterKeys(config: Config): { context?: MigrationContext } {
  const source = { fromEnv: config.masterKey, file: config.masterKeyFile };
  if (!config.masterKey && !existsSync(config.masterKeyFile)) return {};
  const masterKeys = createLocalKeyProvider(reloadMasterKeys(source), () => reloadMasterKeys(source));
  return { context: { credentials: { masterKeys, clock: Date.now } } };
}

function configCheck(command: Command): void {
  const config = configFrom(command);
  for (const line of describeConfig(config)) out(line);
  if (!config.masterKey && existsSync(config.masterKeyFile))
    assertPrivateFile(config.masterKeyFile, 'master key file');
  if (config.tls) assertPrivateFile(config.tls.keyFile, 'TLS private key');
  out('configuration is valid');
}

async function auditVerify(options: { org?: string; witness?: string[] }, command: Command): Promise<void> {
  const config = configFrom(command);
  requireExistingDatabase(config);
  const core = await openCore(config, cliLogger());
  try {
    const progress = throttled(err);
    const chains = options.org ? [options.org] : await core.audit.chains();
    let broken = 0;
    let events = 0;
    for (const chainId of chains) {
      const result = await core.audit.verify(chainId, (n) => progress(`verifying ${chainId}: ${n} events…`));
      events += result.events;
      const from = result.anchorSeq === undefined ? '' : `, from signed anchor at seq ${result.anchorSeq}`;
      if (result.ok) {
        out(
          `ok      ${chainId}: ${result.events} events, ${result.checkpoints} signed checkpoints matched${from}`,
        );
      } else {
        broken++;
        const b = result.broken!;
        out(
          `BROKEN  ${chainId}: first broken link at seq ${b.seq}${b.eventId ? ` (event ${b.eventId})` : ''}: ${b.reason}`,
        );
      }
    }
    if (options.witness && options.witness.length > 0) {
      // AUD-6: a sink's copy catches a tail deleted with its checkpoints, which the database cannot.
      const witness = await checkWitness(
        createAuditStore(core.database.db, core.database.dialect),
        await core.serverKeys.publicKeys('audit-checkpoint'),
        witnessLines(options.witness),
        options.org,
      );
      if (witness.unreadable > 0) err(`witness: skipped ${witness.unreadable} lines that are not JSON`);
      if (witness.ok) {
        out(
          `ok      witness: ${witness.checkpoints} signed checkpoints and ${witness.events} events found in the database`,
        );
      } else {
        broken++;
        const p = witness.problem!;
        out(`BROKEN  witness: ${p.chain} at seq ${p.seq}: ${p.reason}`);
      }
    }
    if (broken > 0)
      throw new CliError(`audit log verification failed: ${broken} of ${chains.length} chains broken`);
    out(`audit log verified: ${chains.length} chains, ${events} events`);
  } finally {
    await core.audit.close();
    await core.database.close();
  }
}

interface ExportOptions {
  org: string;
  format: ExportFormat;
  output?: string;
  since?: number;
  until?: number;
  action?: string;
  actor?: string;
  target?: string;
  outcome?: Outcome;
}

function openNewPrivateFile(file: string): number {
  try {
    return openSync(file, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new CliError(`${file} already exists; exports never overwrite a file, choose a new name`);
    }
    throw error;
  }
}

async function auditExport(options: ExportOptions, command: Command): Promise<void> {
  const config = configFrom(command);
  requireExistingDatabase(config);
  const core = await openCore(config, cliLogger());
  try {
    const filters = auditFilters(options);
    // An export holds IPs and identities: the file is private to its owner and never overwrites one.
    const destination = options.output
      ? createWriteStream('', { fd: openNewPrivateFile(options.output) })
      : process.stdout;
    const progress = throttled(err);
    let total = 0;
    const chunks = await core.audit.openExport({
      chainId: options.org,
      filters,
      format: options.format,
      actor: { type: 'system', id: 'cli', display: `cli:${userInfo().username}` },
      onProgress: (rows) => {
        total = rows;
        progress(`exported ${rows} events…`);
      },
    });
    await pipeline(Readable.from(chunks), destination, { end: destination !== process.stdout });
    err(
      `exported ${total} events of ${options.org} as ${options.format}${options.output ? ` to ${options.output}` : ''}`,
    );
  } finally {
    await core.audit.close();
    await core.database.close();
  }
}

/** Runs an admin operation against the installation's database, with the OS user as the audited actor. */
async function withAdmin<T>(
  command: Command,
  work: (admin: ReturnType<typeof createAdminService>) => Promise<T>,
): Promise<T> {
  const config = configFrom(command);
  requireExistingDatabase(config);
  const core = await openCore(config, cliLogger());
  try {
    const admin = createAdminService({
      db: core.database.db,
      passwords: createPasswords({ hasher: createPasswordHasher({}), dataKeys: core.dataKeys }),
      audit: core.audit,
      actor: { type: 'system', id: 'cli', display: `cli:${userInfo().username}` },
    });
    return await work(admin);
  } catch (error) {
    if (error instanceof AdminError) throw new CliError(error.message);
    throw error;
  } finally {
    await core.audit.close();
    await core.database.close();
  }
}

/** Opens the installation for a `bulwark keys` command, with the OS user as the audited actor. */
async function withKeys<T>(
  command: Command,
  work: (core: Awaited<ReturnType<typeof openCore>>, actor: AuditActor) => Promise<T>,
): Promise<T> {
  const config = configFrom(command);
  requireExistingDatabase(config);
  const core = await openCore(config, cliLogger());
  try {
    return await work(core, { type: 'system', id: 'cli', display: `cli:${userInfo().username}` });
  } catch (error) {
    if (error instanceof KeyRotationError) throw new CliError(error.message);
    throw error;
  } finally {
    await core.audit.close();
    await core.database.close();
  }
}

function keysCommands(program: Command): void {
  const keys = program.command('keys').description('the keyring: master key and data keys (SEC-1, SEC-2)');
  keys
    .command('rotate')
    .description(
      'make a new master key (kept in the key file above the old ones) and re-wrap every data key with it; safe while servers run',
    )
    .action((_options, command: Command) => {
      const config = configFrom(command);
      requireExistingDatabase(config);
      try {
        addMasterKey({ fromEnv: config.masterKey, file: config.masterKeyFile });
      } catch (error) {
        if (error instanceof KeyRotationError) throw new CliError(error.message);
        throw error;
      }
      return withKeys(command, async (core, actor) => {
        const result = await rewrapDataKeys({ dataKeys: core.dataKeys, audit: core.audit, actor });
        out(
          `new master key ${core.masterKeys.currentKeyId()}; ${result.rewrapped} data keys re-wrapped with it`,
        );
        err('The previous master keys stay in the key file: backups made before now need them.');
      });
    });
  keys
    .command('rewrap')
    .description(
      're-wrap every data key not yet under the current master key (finishes an interrupted rotate)',
    )
    .action((_options, command: Command) =>
      withKeys(command, async (core, actor) => {
        const result = await rewrapDataKeys({ dataKeys: core.dataKeys, audit: core.audit, actor });
        out(
          `${result.rewrapped} data keys re-wrapped; ${result.alreadyCurrent} already under ${core.masterKeys.currentKeyId()}`,
        );
      }),
    );
  keys
    .command('rotate-data')
    .description(
      'retire data keys and make new ones; values move to the new key when next written or read (lazily)',
    )
    .option('--org <slug>', "one organization's data key")
    .option('--all', "every organization's data key and the instance's")
    .action((options: { org?: string; all?: boolean }, command: Command) =>
      withKeys(command, async (core, actor) => {
        const scopes = await scopesOf(core.database.db, options);
        for (const { scope, keyId } of await rotateDataKeys({
          dataKeys: core.dataKeys,
          audit: core.audit,
          actor,
          scopes,
        }))
          out(`${scope}: new data key ${keyId}`);
      }),
    );
  const seconds = (value: string) => {
    if (!/^\d{1,9}$/.test(value)) throw new InvalidArgumentError('expected a whole number of seconds');
    return Number(value) * 1000;
  };
  keys
    .command('rotate-workload-identity')
    .description(
      'make a new workload-identity signing key (SEC-4): published in the JWKS at once, signing after the publish delay; the old key leaves the JWKS after the overlap',
    )
    .option(
      '--publish-delay <seconds>',
      'how long the new key is published before it signs',
      seconds,
      DEFAULT_PUBLISH_DELAY_MS,
    )
    .option(
      '--overlap <seconds>',
      'how long older keys stay in the JWKS after the new key starts signing',
      seconds,
      DEFAULT_OVERLAP_MS,
    )
    .option('--revoke-previous', 'for a leaked key: sign with the new key now and delete the old ones now')
    .action(
      (options: { publishDelay: number; overlap: number; revokePrevious?: boolean }, command: Command) =>
        withKeys(command, async (core, actor) => {
          const issuer = createWorkloadIdentityService({
            store: createWorkloadIdentityKeysStore(core.database.db),
            dataKeys: core.dataKeys,
            issuer: undefined,
            audiences: [],
            clock: Date.now,
          });
          try {
            const result = await issuer.rotate({
              publishDelayMs: options.publishDelay,
              overlapMs: options.overlap,
              revokePrevious: options.revokePrevious === true,
              audit: core.audit,
              actor,
            });
            out(
              `new workload-identity key ${result.keyId}: published now, signs from ${new Date(result.signsFrom).toISOString()}`,
            );
            out(
              options.revokePrevious
                ? `${result.previousKeys} older key(s) deleted: out of the JWKS now, for good (after restoring an older backup, revoke again)`
                : `${result.previousKeys} older key(s) leave the JWKS at ${new Date(result.previousRetireAt).toISOString()}`,
            );
          } catch (error) {
            if (error instanceof WorkloadKeyRotationError) throw new CliError(error.message);
            throw error;
          }
        }),
    );
  keys
    .command('status')
    .description('the master key in use and every data key: scope, status, which master key wraps it')
    .action((_options, command: Command) =>
      withKeys(command, async (core) => {
        out(`master key: ${core.masterKeys.currentKeyId()} (${core.masterKeys.name})`);
        for (const row of await core.dataKeys.list())
          out(`${row.scope.padEnd(34)} ${row.id}  ${row.status.padEnd(7)}  wrapped by ${row.master_key_id}`);
      }),
    );
}

function printOneTimePassword(email: string, password: string): void {
  out(`email:     ${email}`);
  out(`password:  ${password}`);
  err('This one-time password is shown only now; it must be changed at first sign-in.');
}

function adminCommands(program: Command): void {
  const admin = program
    .command('admin')
    .description('local recovery: users, organizations, passwords, sessions');
  admin
    .command('create-user')
    .description(
      'create a user with a one-time password (printed once), optionally a member of an organization',
    )
    .requiredOption('--email <email>', 'email address')
    .option('--name <name>', 'display name')
    .option('--org <slug>', 'make the user a member of this organization')
    .option('--role <role>', 'role in that organization (built-in name or custom role id)', 'viewer')
    .action((options: { email: string; name?: string; org?: string; role: string }, command: Command) =>
      withAdmin(command, async (service) => {
        const { user, password } = await service.createUser({
          email: options.email,
          ...(options.name ? { displayName: options.name } : {}),
          ...(options.org ? { org: options.org, role: options.role } : {}),
        });
        printOneTimePassword(user.email, password);
      }),
    );
  admin
    .command('create-org')
    .description('create an organization with an existing user as its owner')
    .requiredOption('--name <name>', 'organization name')
    .option('--slug <slug>', 'URL name (default: from the name)')
    .requiredOption('--owner <email>', 'email of the first owner')
    .option('--mfa-optional', 'create it with the "MFA required" policy off (warned and recorded)')
    .action(
      (options: { name: string; slug?: string; owner: string; mfaOptional?: boolean }, command: Command) =>
        withAdmin(command, async (service) => {
          const org = await service.createOrg({
            name: options.name,
            ownerEmail: options.owner,
            mfaRequired: !options.mfaOptional,
            ...(options.slug ? { slug: options.slug } : {}),
          });
          out(`created organization ${org.slug} (${org.id})`);
          if (options.mfaOptional)
            err('warning: members of this organization may work without a second factor');
        }),
    );
  admin
    .command('reset-password')
    .description('set a new one-time password (printed once) and end every session of the user')
    .requiredOption('--email <email>', 'email address')
    .action((options: { email: string }, command: Command) =>
      withAdmin(command, async (service) => {
        const { password, sessionsEnded } = await service.resetPassword(options.email);
        printOneTimePassword(options.email.toLowerCase(), password);
        err(`ended ${sessionsEnded} session(s)`);
      }),
    );
  for (const [name, status] of [
    ['disable-user', 'disabled'],
    ['enable-user', 'active'],
  ] as const) {
    admin
      .command(name)
      .description(
        status === 'disabled'
          ? 'disable an account and end all its sessions at once'
          : 're-enable an account',
      )
      .requiredOption('--email <email>', 'email address')
      .action((options: { email: string }, command: Command) =>
        withAdmin(command, async (service) => {
          const { sessionsEnded } = await service.setStatus(options.email, status);
          out(
            `${options.email.toLowerCase()} is ${status}${sessionsEnded ? `; ended ${sessionsEnded} session(s)` : ''}`,
          );
        }),
      );
  }
  admin
    .command('end-sessions')
    .description("end a user's sessions, or everyone's with --all")
    .option('--email <email>', 'the user whose sessions end')
    .option('--all', 'end every session of every user')
    .action((options: { email?: string; all?: boolean }, command: Command) =>
      withAdmin(command, async (service) => {
        if (!options.email === !options.all) throw new CliError('give exactly one of --email or --all');
        const ended = await service.endSessions(options.all ? { everyone: true } : { email: options.email! });
        out(`ended ${ended} session(s)`);
      }),
    );
  admin
    .command('erase-user')
    .description(
      "erase a person (DATA-2): delete their account, sessions and memberships and shred their PII key, so the audit log's record of them can no longer be read; cannot be undone",
    )
    .requiredOption('--email <email>', 'email address')
    .action(async (options: { email: string }, command: Command) => {
      const config = configFrom(command);
      requireExistingDatabase(config);
      const core = await openCore(config, cliLogger());
      try {
        const erased = await createPersonalDataService({
          db: core.database.db,
          audit: core.audit,
          pii: core.pii,
          clock: Date.now,
        }).eraseByEmail(options.email, { type: 'system', id: 'cli', display: `cli:${userInfo().username}` });
        out(
          `erased ${erased.userId}: ${erased.memberships} membership(s), ${erased.sessionsEnded} session(s) ended, ${erased.shredded} PII key(s) shredded`,
        );
      } catch (error) {
        if (error instanceof AppError) throw new CliError(error.message);
        throw error;
      } finally {
        await core.audit.close();
        await core.database.close();
      }
    });
}

export function buildProgram(): Command {
  const program = new Command('bulwark')
    .description('Bulwark control plane')
    .version(VERSION)
    .option('-c, --config <file>', 'configuration file (YAML or JSON); the environment overrides it')
    .showHelpAfterError();

  program
    .command('serve')
    .description('start the control plane (applies pending migrations first)')
    .action((_options, command: Command) => serve(command));

  program
    .command('migrate')
    .description('apply pending database migrations under the migration lock')
    .action((_options, command: Command) => migrate(command));

  program
    .command('config')
    .description('configuration tools')
    .command('check')
    .description('validate the configuration and print it, secrets masked')
    .action((_options, command: Command) => configCheck(command));

  const audit = program.command('audit').description('audit log tools');
  audit
    .command('verify')
    .description('verify the hash chains and signed checkpoints; exits 1 naming the first broken link')
    .option('--org <id>', 'verify one chain (an organization id, or "instance"); default: all')
    .option(
      '--witness <files...>',
      "also check an audit sink's NDJSON copy (file sink output, saved webhook bodies): every signed checkpoint and event in it must still be in the database",
    )
    .action(auditVerify);
  audit
    .command('export')
    .description('stream a chain as NDJSON or CSV (the export itself is audited)')
    .requiredOption('--org <id>', 'the chain to export: an organization id, or "instance"')
    .addOption(new Option('--format <format>', 'output format').choices(EXPORT_FORMATS).default('ndjson'))
    .option('-o, --output <file>', 'write to a new file (mode 0600) instead of stdout')
    .option('--since <time>', 'events at or after this ISO-8601 time', parseTime)
    .option('--until <time>', 'events before this ISO-8601 time', parseTime)
    .option('--action <action>', 'only this action, e.g. audit.exported')
    .option('--actor <id>', 'only events by this actor id')
    .option('--target <id>', 'only events on this target id')
    .addOption(new Option('--outcome <outcome>', 'only this outcome').choices(OUTCOMES))
    .action(auditExport);

  program
    .command('api')
    .description(
      `one call to the HTTP API with the API key in ${API_KEY_VARIABLE} (never an argument: it would show in the process list); prints the answer, exits 1 on an error status`,
    )
    .argument('<method>', 'GET, POST, PUT, PATCH or DELETE')
    .argument('<path>', 'e.g. /api/orgs/acme/agents')
    .option('--server <url>', `the server's URL (default: ${SERVER_VARIABLE})`)
    .option('--data <json>', 'the JSON body')
    .action(async (method: string, path: string, options: { server?: string; data?: string }) => {
      const { status, body } = await callApi({ method, path, ...options, env: process.env });
      if (status >= 400) {
        err(body);
        throw new CliError(`the server answered ${status}`);
      }
      out(body);
    });

  adminCommands(program);
  keysCommands(program);
  backupCommands(program);
  return program;
}

buildProgram()
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    // Configuration, master key and verification failures all carry a message written for an operator;
    // one that wraps a driver's error (the database unreachable) adds the driver's own words.
    let root: unknown = error;
    while (root instanceof Error && root.cause instanceof Error) root = root.cause;
    if (root instanceof AggregateError && root.message === '') root = root.errors[0];
    const message = error instanceof Error ? error.message : String(error);
    const detail = root instanceof Error && !message.includes(root.message) ? ` (${root.message})` : '';
    err(`bulwark: ${message}${detail}`);
    process.exitCode = 1;
  });
