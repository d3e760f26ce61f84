import type { Database as BetterSqliteDatabase } from 'better-sqlite3';

/**
 * Reads that every request repeats (the session, the caller's access, a list the console polls) may be
 * answered from memory, but only while the database is provably unchanged since they were read: a
 * revoked session or a lost role must stop working on the very next request (docs/access.md), even
 * when the change came from another process (the CLI).
 *
 * On SQLite that proof is cheap and exact. A generation is two numbers of the server's connection:
 * - `PRAGMA data_version`, which changes whenever another connection (another process, the CLI)
 *   commits to the file;
 * - `total_changes()`, the rows this connection has inserted, updated or deleted since it opened,
 *   which counts every write of this process, whatever path it took, and never goes back (a rolled
 *   back write still counts, which only costs a miss).
 * Two equal generations mean that nothing was written in between. A value is stored with the
 * generation read BEFORE it was loaded, so a write that races the load makes it stale, never wrong.
 *
 * PostgreSQL, where several instances share the database, has no such number: there the reader
 * answers undefined and every read goes to the database.
 */
export interface Generation {
  readonly dataVersion: number;
  readonly ownChanges: number;
}

/** The database's generation now; undefined when it cannot be known, and then nothing is reused. */
export type GenerationReader = () => Generation | undefined;

export const noGenerations: GenerationReader = () => undefined;

export function sqliteGenerations(connection: BetterSqliteDatabase): GenerationReader {
  const dataVersion = connection.prepare('pragma data_version').pluck();
  const ownChanges = connection.prepare('select total_changes()').pluck();
  return () => {
    try {
      return { dataVersion: dataVersion.get() as number, ownChanges: ownChanges.get() as number };
    } catch {
      // A closed connection, or one busy with an open iterator: not knowing means not reusing.
      return undefined;
    }
  };
}

const sameGeneration = (a: Generation, b: Generation) =>
  a.dataVersion === b.dataVersion && a.ownChanges === b.ownChanges;

interface Entry<V> {
  generation: Generation;
  value: V;
  weight: number;
}

export interface ReadCacheLimits<V> {
  maxEntries: number;
  /** With `weigh`: the most the stored values may weigh together (say, bytes of JSON). */
  maxWeight?: number;
  weigh?: (value: V) => number;
}

/**
 * Values keyed by what they were read for, each valid only at the generation it was read at. Bounded:
 * past its limits, the oldest entries go first. Stale entries are replaced when next asked for.
 */
export class ReadCache<V> {
  readonly #entries = new Map<string, Entry<V>>();
  readonly #limits: ReadCacheLimits<V>;
  #weight = 0;

  constructor(limits: ReadCacheLimits<V>) {
    this.#limits = limits;
  }

  /** The value stored for `key` if the database is still at the generation it was read at. */
  lookup(key: string, generation: Generation | undefined): V | undefined {
    if (!generation) return undefined;
    const entry = this.#entries.get(key);
    return entry && sameGeneration(entry.generation, generation) ? entry.value : undefined;
  }

  /** Stores a value read at `generation` (read before the value was). */
  store(key: string, generation: Generation | undefined, value: V): void {
    if (!generation) return;
    const weight = this.#limits.weigh?.(value) ?? 0;
    const { maxEntries, maxWeight = Number.POSITIVE_INFINITY } = this.#limits;
    this.#delete(key);
    if (weight > maxWeight) return;
    while (this.#entries.size >= maxEntries || this.#weight + weight > maxWeight) {
      this.#delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(key, { generation, value, weight });
    this.#weight += weight;
  }

  #delete(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    this.#weight -= entry.weight;
  }

  /** The stored value, or `load()`'s, stored for next time. */
  async through(key: string, generation: Generation | undefined, load: () => Promise<V>): Promise<V> {
    const hit = this.lookup(key, generation);
    if (hit !== undefined) return hit;
    const value = await load();
    // Nothing found is not kept: made-up keys (forged tokens, unknown slugs) must not push out real entries.
    if (value !== undefined) this.store(key, generation, value);
    return value;
  }

  get size(): number {
    return this.#entries.size;
  }
}
