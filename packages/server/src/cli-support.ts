import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import type { AuditActor } from './audit/audit.types.js';
import { type Config, loadConfig } from './config.js';
import { type CoreServices, openCore } from './core.js';
import { createLogger } from './logging.js';

/** What every `bulwark` command shares: its output streams, configuration, installation and actor. */

/** A failure written for the operator: printed as it is, exit status 1 (cli.ts). */
export class CliError extends Error {}

export const out = (line: string) => process.stdout.write(`${line}\n`);
export const err = (line: string) => process.stderr.write(`${line}\n`);

export function configFrom(command: Command): Config {
  const { config } = command.optsWithGlobals<{ config?: string }>();
  return loadConfig(config ? { configFile: config } : {});
}

/** Commands that read an existing installation must not create an empty database by accident. */
export function requireExistingDatabase(config: Config): void {
  if (config.database.kind === 'sqlite' && !existsSync(config.database.file)) {
    throw new CliError(
      `no database at ${config.database.file}; start the server once or run: bulwark migrate`,
    );
  }
}

/** Quiet logs for one-shot commands: only problems, to stderr, so stdout stays the command's output. */
export const cliLogger = () =>
  createLogger({ level: 'warn', destination: process.stderr, name: 'bulwark-cli' });

/** Who a CLI change is audited as: the operating-system user on the host. */
export const cliActor = (): AuditActor => ({
  type: 'system',
  id: 'cli',
  display: `cli:${userInfo().username}`,
});

/** Opens the existing installation for one command, and closes it however the command ends. */
export async function withInstallation<T>(
  command: Command,
  work: (core: CoreServices, actor: AuditActor, config: Config) => Promise<T>,
): Promise<T> {
  const config = configFrom(command);
  requireExistingDatabase(config);
  const core = await openCore(config, cliLogger());
  try {
    return await work(core, cliActor(), config);
  } finally {
    await core.audit.close();
    await core.database.close();
  }
}
