import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { CliError, out, withInstallation } from '../cli-support.js';
import type { Config } from '../config.js';
import type { CoreServices } from '../core.js';
import { assertPrivateFile } from '../secrets/master-key.js';
import type { AuditActor } from './audit.types.js';
import { INSTANCE_CHAIN } from './audit.types.js';
import { createAuditedTransactions } from './audited-transaction.js';
import { SinkInputSchema, SinkNameSchema } from './sinks.input.js';
import type { SinkInput, SinkView } from './sinks.service.js';
import { instanceSinkOwner } from './sinks.service.js';

/**
 * `bulwark audit sinks …`: the audit sinks of the instance chain (AUD-6), the events that belong to no
 * organization (sign-ins before an org is known, key rotations, integrity failures). Configured on
 * the host only: no organization's API reaches them. The running server delivers them, like an org's.
 */

interface AddOptions {
  name: string;
  webhook?: string;
  syslog?: string;
  caFile?: string;
  serverName?: string;
  facility?: number;
  file?: boolean;
  otlp?: string;
  headersFile?: string;
  from: 'start' | 'now';
  personalData?: boolean;
}

/** The server's own sinks service, for the instance (the sinks module loads only when a sinks command runs). */
async function instanceSinks(core: CoreServices, config: Config) {
  const [{ createSinksServiceFor }, { createGuardedFetch, outboundPolicyOf }] = await Promise.all([
    import('./sinks.js'),
    import('../net/outbound.js'),
  ]);
  return createSinksServiceFor({
    config,
    database: core.database,
    dataKeys: core.dataKeys,
    transact: createAuditedTransactions(core.audit),
    fetch: createGuardedFetch(outboundPolicyOf(config)),
    outboundPolicy: outboundPolicyOf(config),
    clock: Date.now,
  }).service;
}

function withInstanceSinks<T>(
  command: Command,
  work: (sinks: Awaited<ReturnType<typeof instanceSinks>>, actor: AuditActor) => Promise<T>,
): Promise<T> {
  return withInstallation(command, async (core, actor, config) =>
    work(await instanceSinks(core, config), actor),
  );
}

/** `host:port`, an IPv6 address in brackets. */
function hostAndPort(value: string): { host: string; port: number } {
  const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(value);
  if (!match) throw new InvalidArgumentError('expected host:port, e.g. siem.example.com:6514');
  return { host: match[1]!, port: Number(match[2]) };
}

/** Collector headers (an API key) come from a private file of `Name: value` lines, never an argument. */
function headersFrom(file: string): Record<string, string> {
  assertPrivateFile(file, 'headers file');
  const headers: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new CliError(`${file}: expected "Name: value" lines`);
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return headers;
}

/** Exactly one destination, checked as the API checks it: the same messages for the same mistakes. */
function sinkInputOf(options: AddOptions): SinkInput {
  const chosen = (['webhook', 'syslog', 'file', 'otlp'] as const).filter(
    (kind) => options[kind] !== undefined,
  );
  if (chosen.length !== 1)
    throw new CliError('give exactly one destination: --webhook, --syslog, --file or --otlp');
  let raw: unknown;
  switch (chosen[0]) {
    case 'webhook':
      raw = { kind: 'webhook', url: options.webhook };
      break;
    case 'otlp':
      raw = {
        kind: 'otlp',
        url: options.otlp,
        ...(options.headersFile ? { headers: headersFrom(options.headersFile) } : {}),
      };
      break;
    case 'file':
      raw = { kind: 'file' };
      break;
    case 'syslog': {
      if (!options.caFile) throw new CliError('--syslog needs --ca-file: the CA that signed the receiver');
      raw = {
        kind: 'syslog',
        ...hostAndPort(options.syslog!),
        caPem: readFileSync(options.caFile, 'utf8'),
        ...(options.serverName ? { serverName: options.serverName } : {}),
        ...(options.facility !== undefined ? { facility: options.facility } : {}),
      };
      break;
    }
  }
  const parsed = SinkInputSchema.safeParse(raw);
  if (!parsed.success)
    throw new CliError(
      // The field only: a header's name is part of the path, and a misplaced value may be in it.
      parsed.error.issues.map((issue) => `${String(issue.path[0] ?? 'sink')}: ${issue.message}`).join('; '),
    );
  return parsed.data;
}

function describe(sink: SinkView): string {
  const state = sink.enabled ? 'enabled' : 'disabled';
  const failing =
    sink.delivery.failures > 0 ? `, ${sink.delivery.failures} failure(s): ${sink.delivery.lastError}` : '';
  return `${sink.id}  ${sink.name}  ${sink.kind}  ${state}  delivered through #${sink.delivery.deliveredSeq}${failing}`;
}

export function auditSinksCommands(audit: Command): void {
  const sinks = audit
    .command('sinks')
    .description(
      `the audit sinks of the instance chain ("${INSTANCE_CHAIN}"): events of no organization, streamed like an org's (AUD-6)`,
    );
  sinks
    .command('list')
    .description("the instance's sinks and how far each has delivered")
    .action((_options, command: Command) =>
      withInstanceSinks(command, async (service) => {
        const all = await service.list(null);
        if (all.length === 0) out('no audit sinks for the instance chain');
        for (const sink of all) out(describe(sink));
      }),
    );
  sinks
    .command('add')
    .description('stream the instance chain (events and signed checkpoints) to one more destination')
    .requiredOption('--name <name>', 'a name for the sink', (value) => {
      const parsed = SinkNameSchema.safeParse(value);
      if (!parsed.success) throw new InvalidArgumentError(parsed.error.issues[0]!.message);
      return parsed.data;
    })
    .option('--webhook <url>', 'an HTTPS endpoint; the signing secret is printed once')
    .option('--syslog <host:port>', 'syslog (RFC 5424) over TLS')
    .option('--ca-file <file>', "syslog: PEM of the CA that signed the receiver's certificate")
    .option('--server-name <name>', "syslog: the name the receiver's certificate carries (default: the host)")
    .option('--facility <n>', 'syslog facility (default 13, log audit)', (value) => {
      if (!/^\d{1,2}$/.test(value)) throw new InvalidArgumentError('expected 0 to 23');
      return Number(value);
    })
    .option('--file', 'an NDJSON file in BULWARK_AUDIT_SINK_DIR')
    .option('--otlp <url>', "an OTLP/HTTP collector's logs endpoint")
    .option('--headers-file <file>', 'OTLP: a private file of "Name: value" header lines (an API key)')
    .addOption(
      new Option('--from <where>', 'deliver the chain from its first event, or from now')
        .choices(['start', 'now'])
        .default('start'),
    )
    .option(
      '--personal-data',
      "put people's email, name, IP and user agent in the lines (off: sealed and hashed only)",
    )
    .action((options: AddOptions, command: Command) =>
      withInstanceSinks(command, async (service, actor) => {
        const created = await service.create(instanceSinkOwner(actor), {
          name: options.name,
          config: sinkInputOf(options),
          from: options.from,
          personalData: options.personalData === true,
        });
        out(describe(created.sink));
        if (created.signingSecret)
          out(`signing secret (shown once, keep it with the receiver): ${created.signingSecret}`);
      }),
    );
  const change = (
    name: string,
    description: string,
    patch: { enabled?: boolean; rotateSigningSecret?: boolean },
  ) =>
    sinks
      .command(name)
      .description(description)
      .argument('<id>', 'the sink id (snk_…)')
      .action((id: string, _options, command: Command) =>
        withInstanceSinks(command, async (service, actor) => {
          const updated = await service.update(instanceSinkOwner(actor), id, patch);
          out(describe(updated.sink));
          if (updated.signingSecret) out(`new signing secret (shown once): ${updated.signingSecret}`);
        }),
      );
  change('disable', 'stop delivering to a sink, keeping its place in the chain', { enabled: false });
  change('enable', 'deliver to a sink again, from where it stopped', { enabled: true });
  change('rotate-secret', 'give a webhook a new signing secret', { rotateSigningSecret: true });
  sinks
    .command('test')
    .description('send one test line to a sink now and say what went wrong')
    .argument('<id>', 'the sink id (snk_…)')
    .action((id: string, _options, command: Command) =>
      withInstanceSinks(command, async (service, actor) => {
        const result = await service.test(instanceSinkOwner(actor), id);
        if (!result.ok) throw new CliError(`the sink refused the test line: ${result.problem}`);
        out('the sink took the test line');
      }),
    );
  sinks
    .command('remove')
    .description('stop streaming to a sink and forget it')
    .argument('<id>', 'the sink id (snk_…)')
    .action((id: string, _options, command: Command) =>
      withInstanceSinks(command, async (service, actor) => {
        await service.remove(instanceSinkOwner(actor), id);
        out(`removed ${id}`);
      }),
    );
}
