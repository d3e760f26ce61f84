import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import path from 'node:path';
import { pipeline as pipe, Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { AccessService } from '../access/access.service.js';
import { isAllowed } from '../access/authorize.js';
import type { AuditService } from '../audit/audit.service.js';
import type { AuditActor, AuditRequestContext } from '../audit/audit.types.js';
import type { Config } from '../config.js';
import { migrations } from '../db/migrations/index.js';
import { acrossOrgs } from '../db/org-scope.js';
import type { MasterKeyProvider } from '../secrets/key-provider.js';
import { VERSION } from '../version.js';
import type { BackupStore } from './backup.store.js';
import { BackupAuthenticationError, CHUNK_BYTES, createSealer, openHeader } from './backup-envelope.js';
import {
  assertEmptyPostgres,
  BackupTargetError,
  checkSqliteCopy,
  dumpPostgres,
  EXCLUDED_TABLES,
  privateScratchFile,
  restorePostgres,
  snapshotSqlite,
  sweepScratchFiles,
} from './backup-snapshot.js';

/**
 * Backups (PLAT-7): an encrypted, consistent snapshot of the whole installation, streamed both ways.
 * The plaintext inside the envelope is `u32 manifest length ‖ manifest JSON ‖ database`, the
 * database being a SQLite file or a pg_dump custom-format archive. Nothing in it is a plaintext
 * credential: sessions and other live bearer material are left out, and everything else is hashed
 * or sealed under data keys that only the master key (never in a backup) opens. docs/backups.md.
 */

export const BACKUP_FORMAT = 1;
const MAX_MANIFEST_BYTES = 1024 * 1024;

export interface BackupManifest {
  format: number;
  bulwarkVersion: string;
  /** The newest migration the database had. */
  migration: string;
  database: 'sqlite' | 'postgres';
  createdAt: number;
  /** Rows of every table as restored; the excluded tables are there with 0 rows. */
  tables: Record<string, number>;
  excludedTables: string[];
}

export type BackupProgress =
  | { phase: 'snapshot'; pagesDone: number; pagesTotal: number }
  | { phase: 'write' | 'read'; bytes: number };

export interface CreateBackupRequest {
  /** Wrap the file key under the master key too (the default for the CLI); off: passphrase only. */
  keyring: boolean;
  passphrase?: string | undefined;
  actor: AuditActor;
  context?: AuditRequestContext;
  onProgress?: (progress: BackupProgress) => void;
  /**
   * A download: the stream ends with an error once its reader has taken nothing for this long, so a
   * client that stops reading cannot hold pg_dump's snapshot (and the scratch copy) open forever.
   */
  idleTimeoutMs?: number;
}

export interface CreatedBackup {
  manifest: BackupManifest;
  /** The encrypted backup; reading it to the end removes the scratch copy. */
  stream: Readable;
  /** Its exact size when known in advance (SQLite), for Content-Length and the audit record. */
  size: number | undefined;
}

export interface RestoreRequest {
  file: string;
  passphrase?: string | undefined;
  masterKeys?: MasterKeyProvider | undefined;
  onProgress?: (progress: BackupProgress) => void;
}

function sealedSize(headerBytes: number, plaintextBytes: number): number {
  const chunks = Math.max(1, Math.ceil(plaintextBytes / CHUNK_BYTES));
  return headerBytes + plaintextBytes + chunks * 16;
}

function frame(manifest: BackupManifest): Buffer {
  const json = Buffer.from(JSON.stringify(manifest));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  return Buffer.concat([length, json]);
}

/** Counts bytes as they pass, for progress. */
function counter(report: ((bytes: number) => void) | undefined): Transform {
  let bytes = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback) {
      bytes += chunk.length;
      report?.(bytes);
      done(null, chunk);
    },
  });
}

/** Takes the manifest off the front of the plaintext and passes the database bytes on. */
class ManifestSplitter extends Transform {
  manifest: BackupManifest | undefined;
  private head: Buffer = Buffer.alloc(0);
  constructor(private readonly check: (manifest: BackupManifest) => void) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      done(null, this.splitOff(chunk));
    } catch (error) {
      done(
        error instanceof BackupTargetError
          ? error
          : new BackupTargetError('the backup has no valid manifest'),
      );
    }
  }
  /** What of `chunk` is database bytes, once the manifest is complete. */
  private splitOff(chunk: Buffer): Buffer | undefined {
    if (this.manifest) return chunk;
    this.head = Buffer.concat([this.head, chunk]);
    if (this.head.length < 4) return undefined;
    const length = this.head.readUInt32BE(0);
    if (length > MAX_MANIFEST_BYTES) throw new BackupTargetError('the backup has no valid manifest');
    if (this.head.length < 4 + length) return undefined;
    const manifest = JSON.parse(this.head.subarray(4, 4 + length).toString('utf8')) as BackupManifest;
    this.check(manifest);
    this.manifest = manifest;
    const rest = this.head.subarray(4 + length);
    this.head = Buffer.alloc(0);
    return rest.length > 0 ? rest : undefined;
  }
  override _flush(done: TransformCallback): void {
    done(this.manifest ? null : new BackupTargetError('the backup has no valid manifest'));
  }
}

const knownMigrations = new Set(Object.keys(migrations));

/**
 * Says no more than that: the slug of the organization the caller is missing from is not theirs to
 * learn (it would be in the 403 and in their organization's audit log).
 */
export class NotInstanceOwnerError extends Error {
  constructor() {
    super(
      'a backup holds every organization of this installation, and you do not hold backups:manage in all of them',
    );
    this.name = 'NotInstanceOwnerError';
  }
}

/** Where backups and restores put their scratch files: beside a SQLite database, or in the data directory. */
function scratchDirsOf(config: Pick<Config, 'database' | 'dataDir'>): string[] {
  return [config.dataDir, ...(config.database.kind === 'sqlite' ? [path.dirname(config.database.file)] : [])];
}

/**
 * At start (server, `bulwark backup create|restore`): removes the scratch files a crashed backup or
 * restore left behind, a plaintext copy of the database or the database password among them.
 */
export function sweepBackupScratch(config: Pick<Config, 'database' | 'dataDir'>): string[] {
  return sweepScratchFiles(scratchDirsOf(config));
}

export function createBackupService(deps: {
  config: Pick<Config, 'database' | 'dataDir' | 'backingTls'>;
  masterKeys: MasterKeyProvider;
  audit: AuditService;
  /** For the API: whether a person holds `backups:manage` over the whole of an organization. */
  access?: Pick<AccessService, 'load'>;
  store?: BackupStore;
  clock?: () => number;
}) {
  const { config, masterKeys, audit } = deps;
  const clock = deps.clock ?? Date.now;

  function manifestOf(facts: { tables: Record<string, number>; migration: string }): BackupManifest {
    return {
      format: BACKUP_FORMAT,
      bulwarkVersion: VERSION,
      migration: facts.migration,
      database: config.database.kind,
      createdAt: clock(),
      tables: facts.tables,
      excludedTables: [...EXCLUDED_TABLES],
    };
  }

  return {
    /**
     * A backup holds every organization of the installation, so through the API only someone who
     * holds `backups:manage` over the whole of every organization may take one: the instance's
     * owner. An owner of one organization among others would otherwise carry away the rest (their
     * members, audit logs, command output). The CLI needs no such check: it runs on the host, with
     * the database and the master key at hand.
     */
    async assertInstanceOwner(userId: string): Promise<void> {
      const { access, store } = deps;
      if (!access || !store) throw new Error('the backup service was made without access checks');
      // Every organization's membership, though the request runs in one organization's scope.
      await acrossOrgs(async () => {
        for (const slug of await store.orgSlugs()) {
          const context = await access.load(slug, userId);
          if (!context || !isAllowed(context.access, 'backups:manage', { kind: 'org' }))
            throw new NotInstanceOwnerError();
        }
      });
    },

    /**
     * Takes the snapshot, records `backup.created` (refused if that record cannot be written, like
     * an audit export), and returns the encrypted stream. Nothing is held in memory but one chunk.
     */
    async create(request: CreateBackupRequest): Promise<CreatedBackup> {
      const sealer = await createSealer({
        ...(request.keyring ? { masterKeys } : {}),
        ...(request.passphrase !== undefined ? { passphrase: request.passphrase } : {}),
      });
      mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
      let manifest: BackupManifest;
      let database: () => AsyncGenerator<Buffer>;
      let size: number | undefined;
      let release: () => void;
      if (config.database.kind === 'sqlite') {
        // Beside the database: the same disk and the same private directory.
        const scratch = privateScratchFile(path.dirname(config.database.file), 'backup');
        release = () => rmSync(scratch, { force: true });
        try {
          manifest = manifestOf(
            await snapshotSqlite(config.database.file, scratch, (pagesDone, pagesTotal) =>
              request.onProgress?.({ phase: 'snapshot', pagesDone, pagesTotal }),
            ),
          );
        } catch (error) {
          release();
          throw error;
        }
        size = sealedSize(sealer.header.length, frame(manifest).length + statSync(scratch).size);
        database = async function* () {
          yield* createReadStream(scratch) as AsyncIterable<Buffer>;
        };
      } else {
        const dump = await dumpPostgres(config.database.url, config.dataDir, config.backingTls);
        manifest = manifestOf(dump.facts);
        release = () => dump.stop();
        database = async function* () {
          yield* dump.dump as AsyncIterable<Buffer>;
          await dump.finished;
        };
      }
      try {
        await audit.record({
          orgId: null,
          actor: request.actor,
          action: 'backup.created',
          target: { type: 'instance', id: 'instance' },
          outcome: 'success',
          ...(request.context ? { context: request.context } : {}),
          details: {
            database: manifest.database,
            recipients: [
              ...(request.keyring ? ['keyring'] : []),
              ...(request.passphrase !== undefined ? ['passphrase'] : []),
            ],
            tables: Object.keys(manifest.tables).length,
            rows: Object.values(manifest.tables).reduce((a, b) => a + b, 0),
            sizeBytes: size ?? null,
          },
        });
      } catch (error) {
        release();
        throw error;
      }
      async function* plaintext() {
        yield frame(manifest);
        yield* database();
      }
      // Runs only while the reader holds what it was given (from each yield until it asks for more):
      // the time pg_dump or the disk takes to produce a chunk never counts against the reader.
      let idle: NodeJS.Timeout | undefined;
      const waitForReader = () => {
        if (request.idleTimeoutMs === undefined) return;
        const ms = request.idleTimeoutMs;
        idle = setTimeout(
          () => stream.destroy(new Error(`the backup's reader took nothing for ${ms / 1000} s; ended`)),
          ms,
        );
      };
      const readerAsked = () => clearTimeout(idle);
      async function* sealed() {
        readerAsked();
        try {
          waitForReader();
          yield sealer.header;
          readerAsked();
          let written = sealer.header.length;
          // pipeline, not pipe: a failed snapshot (pg_dump exiting non-zero) must fail the stream, and
          // then the last chunk is never written, so the partial file is refused on restore.
          const encrypted = pipe(Readable.from(plaintext()), sealer.payload, () => {});
          for await (const chunk of encrypted as AsyncIterable<Buffer>) {
            written += chunk.length;
            request.onProgress?.({ phase: 'write', bytes: written });
            waitForReader();
            yield chunk;
            readerAsked();
          }
        } finally {
          readerAsked();
          release();
        }
      }
      const stream = Readable.from(sealed(), { objectMode: false });
      // A stream destroyed before its first read (a download aborted at once) never runs the
      // generator's finally: the scratch copy or pg_dump must go all the same.
      stream.once('close', () => {
        readerAsked();
        release();
      });
      // A reader that never starts is a stalled one too.
      waitForReader();
      return { manifest, stream, size };
    },
  };
}

export type BackupService = ReturnType<typeof createBackupService>;

/**
 * Restores into an empty target: the database file must not exist (SQLite), or the database must
 * have no tables (PostgreSQL). The whole backup is decrypted and authenticated into a private
 * scratch file first; only then does anything reach the target.
 */
export async function restoreBackup(
  config: Pick<Config, 'database' | 'dataDir' | 'backingTls'>,
  request: RestoreRequest,
): Promise<{ manifest: BackupManifest; openedBy: string }> {
  const opened = await openHeader(request.file, {
    ...(request.masterKeys ? { masterKeys: request.masterKeys } : {}),
    ...(request.passphrase !== undefined ? { passphrase: request.passphrase } : {}),
  });
  const database = config.database;
  let scratchDir: string;
  let restoreUrl = '';
  if (database.kind === 'sqlite') {
    for (const suffix of ['', '-wal', '-journal'])
      if (existsSync(database.file + suffix))
        throw new BackupTargetError(
          `${database.file + suffix} exists; restore into a data directory without a database`,
        );
    scratchDir = path.dirname(database.file);
  } else {
    // The schema's owner creates what it restores, when there is one; the instances' next start grants
    // their own role row access to it (db/migrate.ts).
    restoreUrl = database.ownerUrl ?? database.url;
    await assertEmptyPostgres(restoreUrl, config.backingTls);
    scratchDir = config.dataDir;
  }
  mkdirSync(scratchDir, { recursive: true, mode: 0o700 });
  const scratch = privateScratchFile(scratchDir, 'restore');
  try {
    const splitter = new ManifestSplitter((manifest) => {
      if (manifest.format !== BACKUP_FORMAT)
        throw new BackupTargetError(`unknown backup format ${manifest.format}`);
      if (manifest.database !== database.kind)
        throw new BackupTargetError(
          `this is a ${manifest.database} backup; the configuration names a ${database.kind} database`,
        );
      if (manifest.migration && !knownMigrations.has(manifest.migration))
        throw new BackupTargetError(
          `the backup was made by a newer Bulwark (${manifest.bulwarkVersion}, migration ${manifest.migration}); restore it with that version`,
        );
    });
    await pipeline(
      createReadStream(request.file, { start: opened.payloadOffset }),
      counter((bytes) => request.onProgress?.({ phase: 'read', bytes })),
      opened.payload(),
      splitter,
      // r+: the scratch file was made empty and private (0600); keep it that way.
      createWriteStream(scratch, { flags: 'r+' }),
    );
    const manifest = splitter.manifest!;
    if (database.kind === 'sqlite') {
      checkSqliteCopy(scratch, manifest.tables);
      renameSync(scratch, database.file);
    } else {
      await restorePostgres(restoreUrl, scratch, scratchDir, manifest.tables, config.backingTls);
    }
    return { manifest, openedBy: opened.openedBy };
  } finally {
    rmSync(scratch, { force: true });
  }
}

export { BackupAuthenticationError, BackupTargetError };
