import { randomBytes } from 'node:crypto';
import type { Compilable, CompiledQuery, Kysely, QueryResult } from 'kysely';
import type { DB } from './schema.js';

/**
 * A query on a hot path, compiled once. Kysely rebuilds and recompiles a query tree on each call,
 * which cost the members list more than its SQL did (bench/api-read) and made up much of what the
 * audit log's writer allocated per batch (bench/fleet's connect phase): such queries build once, with
 * placeholders standing in for the arguments, and each call only swaps the real values into the
 * compiled parameters. The SQL, and the prepared statement the driver caches for it, are then the
 * same on every call.
 *
 * `build` must use each argument as a plain bound value (compared, inserted, matched); anything else
 * (an argument spliced into SQL text, split, or transformed) is refused when the query is compiled.
 * The arguments are an object's properties, or an array's elements (a multi-row insert).
 */
export interface CompiledOnce<Args, Row> {
  /** `on`: the transaction to run in (by default, the database it was compiled for). */
  all(args: Args, on?: Kysely<DB>): Promise<Row[]>;
  first(args: Args, on?: Kysely<DB>): Promise<Row | undefined>;
  /** For writes: the driver's result (affected rows), rather than rows. */
  execute(args: Args, on?: Kysely<DB>): Promise<QueryResult<Row>>;
}

type Slot = { arg: string } | { value: unknown };

export function compiledOnce<Args extends object, Row>(
  db: Kysely<DB>,
  build: (args: Args) => Compilable<Row>,
): CompiledOnce<Args, Row> {
  let compiled: { query: CompiledQuery<Row>; slots: Slot[] } | undefined;

  function compile() {
    // Unique per query and process, so that no real value can be mistaken for a placeholder.
    const marker = `\u0000arg-${randomBytes(8).toString('hex')}:`;
    const used = new Set<string>();
    const placeholders = new Proxy({} as Args, {
      get(_target, key) {
        used.add(String(key));
        return `${marker}${String(key)}`;
      },
    });
    const query = build(placeholders).compile();
    const slots = query.parameters.map((parameter): Slot => {
      if (typeof parameter !== 'string' || !parameter.includes(marker)) return { value: parameter };
      const arg = parameter.slice(marker.length);
      if (!parameter.startsWith(marker) || !used.has(arg)) {
        throw new Error(`a compiled-once query used an argument other than as a bound value: ${query.sql}`);
      }
      return { arg };
    });
    const bound = new Set(slots.flatMap((slot) => ('arg' in slot ? [slot.arg] : [])));
    const unbound = [...used].filter((arg) => !bound.has(arg));
    if (unbound.length > 0 || query.sql.includes(marker)) {
      throw new Error(
        `a compiled-once query used ${unbound.join(', ') || 'an argument'} outside its bound values`,
      );
    }
    return { query, slots };
  }

  function execute(args: Args, on: Kysely<DB> = db): Promise<QueryResult<Row>> {
    compiled ??= compile();
    const { query, slots } = compiled;
    const values = args as Record<string, unknown>;
    const parameters = slots.map((slot) => ('arg' in slot ? values[slot.arg] : slot.value));
    return on.executeQuery<Row>({ ...query, parameters });
  }

  return {
    execute,
    all: async (args, on) => (await execute(args, on)).rows,
    first: async (args, on) => (await execute(args, on)).rows[0],
  };
}
