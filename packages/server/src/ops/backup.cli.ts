import { createWriteStream, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { cliActor, cliLogger, configFrom, err, out } from '../cli-support.js';
import type { Config } from '../config.js';
import { openCore } from '../core.js';
import { createLocalKeyProvider, type MasterKeyProvider } from '../secrets/key-provider.js';
import { assertPrivateFile, reloadMasterKeys } from '../secrets/master-key.js';
import {
  type BackupProgress,
  createBackupService,
  restoreBackup,
  sweepBackupScratch,
} from './backup.service.js';
import { stanzaTypesOf } from './backup-envelope.js';

/**
 * `bulwark backup create|restore` (PLAT-7, CLI-1). The passphrase never comes as an argument (it
 * would show in the process list and shell history): from BULWARK_BACKUP_PASSPHRASE or a private
 * file. Progress goes to stderr, the result to stdout; any failure exits non-zero (cli.ts).
 */

export const PASSPHRASE_VARIABLE = 'BULWARK_BACKUP_PASSPHRASE';
/** scrypt slows guessing; it cannot save a short passphrase. */
export const MIN_PASSPHRASE_LENGTH = 12;

export class BackupCliError extends Error {}

function throttled(report: (line: string) => void, everyMs = 1000): (line: string, force?: boolean) => void {
  let last = 0;
  return (line, force) => {
    const now = Date.now();
    if (force || now - last >= everyMs) {
      last = now;
      report(line);
    }
  };
}

/** What a crashed backup or restore left (a plaintext database copy, a pgpass), now removed. */
const reportSwept = (files: string[]) => {
  for (const file of files) err(`removed ${file}, left by a backup or restore that did not finish`);
};

const mib = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

function progressReporter(): (progress: BackupProgress) => void {
  const report = throttled(err);
  return (progress) => {
    if (progress.phase === 'snapshot')
      report(`snapshot: ${progress.pagesDone} of ${progress.pagesTotal} pages`, progress.pagesDone === 0);
    else report(`${progress.phase === 'write' ? 'written' : 'read'}: ${mib(progress.bytes)}`);
  };
}

function passphraseOf(options: { passphraseFile?: string }): string | undefined {
  let passphrase: string | undefined;
  if (options.passphraseFile) {
    assertPrivateFile(options.passphraseFile, 'passphrase file');
    passphrase = readFileSync(options.passphraseFile, 'utf8').replace(/\r?\n$/, '');
  } else {
    passphrase = process.env[PASSPHRASE_VARIABLE] || undefined;
  }
  if (passphrase !== undefined && passphrase.length < MIN_PASSPHRASE_LENGTH)
    throw new BackupCliError(`the backup passphrase must be at least ${MIN_PASSPHRASE_LENGTH} characters`);
  return passphrase;
}

/** The installation's master keys when it has some; never generated here (a new key would open nothing). */
function existingMasterKeys(config: Config): MasterKeyProvider | undefined {
  if (!config.masterKey && !existsSync(config.masterKeyFile)) return undefined;
  const source = { fromEnv: config.masterKey, file: config.masterKeyFile };
  return createLocalKeyProvider(reloadMasterKeys(source), () => reloadMasterKeys(source));
}

async function create(
  options: { output: string; passphraseFile?: string; keyring: boolean },
  command: Command,
): Promise<void> {
  const config = configFrom(command);
  const passphrase = passphraseOf(options);
  if (!options.keyring && passphrase === undefined)
    throw new BackupCliError(`--no-keyring needs a passphrase (${PASSPHRASE_VARIABLE} or --passphrase-file)`);
  if (config.database.kind === 'sqlite' && !existsSync(config.database.file))
    throw new BackupCliError(`no database at ${config.database.file}; nothing to back up`);
  reportSwept(sweepBackupScratch(config));
  let fd: number;
  try {
    // A backup describes the whole installation: private to its owner, and never over another file.
    fd = openSync(options.output, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST')
      throw new BackupCliError(`${options.output} already exists; backups never overwrite a file`);
    throw error;
  }
  const core = await openCore(config, cliLogger());
  let done = false;
  try {
    const service = createBackupService({ config, masterKeys: core.masterKeys, audit: core.audit });
    const backup = await service.create({
      keyring: options.keyring,
      passphrase,
      actor: cliActor(),
      onProgress: progressReporter(),
    });
    let bytes = 0;
    backup.stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    await pipeline(backup.stream, createWriteStream('', { fd }));
    done = true;
    const rows = Object.values(backup.manifest.tables).reduce((a, b) => a + b, 0);
    err(`written: ${mib(bytes)}`);
    out(
      `backup written to ${options.output}: ${bytes} bytes, ${Object.keys(backup.manifest.tables).length} tables, ${rows} rows (${backup.manifest.database}, migration ${backup.manifest.migration}); sessions left out`,
    );
    out(
      `opens with: ${[options.keyring && 'the master key', passphrase !== undefined && 'the passphrase'].filter(Boolean).join(' or ')}`,
    );
    err('The master key is not in the backup: keep the key file too, apart from the backup.');
  } finally {
    // Half a backup is refused on restore anyway; leave nothing that looks like one.
    if (!done) rmSync(options.output, { force: true });
    await core.audit.close();
    await core.database.close();
  }
}

async function restore(file: string, options: { passphraseFile?: string }, command: Command): Promise<void> {
  const config = configFrom(command);
  if (!existsSync(file)) throw new BackupCliError(`no backup at ${file}`);
  const passphrase = passphraseOf(options);
  reportSwept(sweepBackupScratch(config));
  const masterKeys = existingMasterKeys(config);
  const stanzas = await stanzaTypesOf(file);
  if (passphrase === undefined && !(masterKeys && stanzas.includes('keyring')))
    throw new BackupCliError(
      stanzas.includes('scrypt')
        ? `this backup needs its passphrase (${PASSPHRASE_VARIABLE} or --passphrase-file)${stanzas.includes('keyring') ? ', or the master key it was made with' : ''}`
        : `this backup opens only with the master key it was made with; put its key file at ${config.masterKeyFile} (or set BULWARK_MASTER_KEY)`,
    );
  const result = await restoreBackup(config, {
    file,
    passphrase,
    masterKeys,
    onProgress: progressReporter(),
  });
  const rows = Object.values(result.manifest.tables).reduce((a, b) => a + b, 0);
  out(
    `restored ${Object.keys(result.manifest.tables).length} tables, ${rows} rows from a backup of ${new Date(result.manifest.createdAt).toISOString()} (Bulwark ${result.manifest.bulwarkVersion}); opened with the ${result.openedBy === 'keyring' ? 'master key' : 'passphrase'}`,
  );
  if (!masterKeys) {
    err(
      `No master key here: the data is restored, but secrets, second factors and server keys open only once the backed-up installation's key file is at ${config.masterKeyFile} (or in BULWARK_MASTER_KEY).`,
    );
    return;
  }
  // Opening the installation proves the master key opens its keys (the audit signing key among
  // them), applies any newer migrations, and records the restore in the restored log.
  const core = await openCore(config, cliLogger());
  try {
    await core.audit.record({
      orgId: null,
      actor: cliActor(),
      action: 'backup.restored',
      target: { type: 'instance', id: 'instance' },
      outcome: 'success',
      details: {
        database: result.manifest.database,
        madeAt: result.manifest.createdAt,
        madeBy: result.manifest.bulwarkVersion,
        openedWith: result.openedBy,
      },
    });
  } finally {
    await core.audit.close();
    await core.database.close();
  }
  out('the master key opens the restored keys; sessions were not restored: everyone signs in again');
}

export function backupCommands(program: Command): void {
  const backup = program
    .command('backup')
    .description('encrypted backups of the whole installation (PLAT-7)');
  backup
    .command('create')
    .description(
      `write an encrypted, consistent snapshot (sessions left out) to a new file; for the master key, and for a passphrase from ${PASSPHRASE_VARIABLE} or --passphrase-file`,
    )
    .requiredOption('-o, --output <file>', 'the new backup file (mode 0600; never overwritten)')
    .option('--passphrase-file <file>', 'read the passphrase from this private (0600) file')
    .option('--no-keyring', 'do not wrap it for the master key: only the passphrase opens it')
    .action(create);
  backup
    .command('restore')
    .description(
      'restore a backup into an empty data directory or an empty PostgreSQL database; refuses a backup that fails authentication',
    )
    .argument('<file>', 'the backup file')
    .option('--passphrase-file <file>', 'read the passphrase from this private (0600) file')
    .action(restore);
}
