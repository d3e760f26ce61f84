import { randomBytes } from 'node:crypto';
import type { Compilable, CompiledQuery, Kysely } from 'kysely';
import type { DB } from './schema.js';

/**
 * A read that runs on every request, compiled once. Kysely rebuilds and recompiles a query tree on
 * each call, which cost the members list more than its SQL did (bench/api-read): the hot reads of a
 * request build their query once, with placeholders standing in for the arguments, and each call
 * only swaps the real values into the compiled parameters. The SQL, and the prepared statement the
 * driver caches for it, are then the same on every call.
 *
 * `build` must use each argument as a plain bound value (compared, inserted, matched); anything else
 * (an argument spliced into SQL text, split, or transformed) is refused when the query is compiled.
 */
export interface CompiledOnce<Args, Row> {
  all(args: Args): Promise<Row[]>;
  first(args: Args): Promise<Row | undefined>;
}

type Slot = { arg: string } | { value: unknown };

export function compiledOnce<Args extends Record<string, unknown>, Row>(
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

  async function all(args: Args): Promise<Row[]> {
    compiled ??= compile();
    const { query, slots } = compiled;
    const parameters = slots.map((slot) => ('arg' in slot ? args[slot.arg] : slot.value));
    const result = await db.executeQuery<Row>({ ...query, parameters });
    return result.rows;
  }

  return {
    all,
    first: async (args) => (await all(args))[0],
  };
}
