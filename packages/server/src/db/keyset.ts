import { type Expression, type SqlBool, sql } from 'kysely';

/**
 * Keyset paging for the console's lists, the same on SQLite and PostgreSQL. A page is read after the
 * last row of the previous one, (sort value, id) being unique and totally ordered, so a page costs the
 * same wherever it is in the list and rows inserted meanwhile neither repeat nor vanish from later
 * pages (as an OFFSET would make them).
 *
 * Sort columns come from a fixed list per list (`SortSpec`): the column named in SQL is always one
 * the code chose, never the text of the request.
 */

export type SortDirection = 'asc' | 'desc';

export interface SortOrder<Col extends string> {
  column: Col;
  direction: SortDirection;
}

export interface Cursor {
  value: string | number;
  id: string;
}

/** `name` ascending, `-name` descending: the values a route's `sort` parameter accepts. */
export function sortValues<const Keys extends readonly string[]>(keys: Keys) {
  return keys.flatMap((key) => [key, `-${key}`]) as Array<Keys[number] | `-${Keys[number]}`>;
}

export function sortOrderOf<Key extends string>(sort: Key | `-${Key}`): SortOrder<Key> {
  return sort.startsWith('-')
    ? { column: sort.slice(1) as Key, direction: 'desc' }
    : { column: sort as Key, direction: 'asc' };
}

/**
 * A cursor names the sort it belongs to, so one taken under another sort is refused rather than
 * silently resuming somewhere else. It holds only what the last row listed showed already.
 */
export function encodeCursor(sort: string, cursor: Cursor): string {
  return Buffer.from(JSON.stringify([sort, cursor.value, cursor.id])).toString('base64url');
}

/** The cursor, or null when it is not one this sort made (the route answers 422). */
export function decodeCursor(sort: string, raw: string): Cursor | null {
  if (!/^[A-Za-z0-9_-]{1,1400}$/.test(raw)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  if (!Array.isArray(parsed) || parsed.length !== 3) return null;
  const [of, value, id] = parsed as unknown[];
  if (of !== sort || typeof id !== 'string' || id.length > 64) return null;
  if (typeof value === 'string' ? value.length > 512 : !Number.isSafeInteger(value)) return null;
  return { value: value as string | number, id };
}

/** Rows after the cursor in (column, id) order, in the given direction. */
export function afterCursor(
  column: string,
  idColumn: string,
  direction: SortDirection,
  cursor: Cursor,
): Expression<SqlBool> {
  const op = sql.raw(direction === 'asc' ? '>' : '<');
  const col = sql.ref(column);
  const id = sql.ref(idColumn);
  return sql<SqlBool>`(${col} ${op} ${cursor.value} or (${col} = ${cursor.value} and ${id} ${op} ${cursor.id}))`;
}

/**
 * One page of the rows the caller may see. Rows are read in batches and those `keep` refuses (out of
 * the caller's label scope, or filtered on what only the running server knows) are skipped; the
 * reading goes on until a row beyond the page is found or the list ends. So whether there is a next
 * page, and where it starts, depend only on rows the caller may see: nothing in the answer tells how
 * many others there are, or where they sit.
 */
export async function visiblePage<Row>(options: {
  read: (from: Cursor | undefined, batch: number) => Promise<Row[]>;
  cursorOf: (row: Row) => Cursor;
  keep: (row: Row) => boolean;
  limit: number;
  from: Cursor | undefined;
  /** Rows read per query when some may be skipped. */
  batch: number;
}): Promise<{ rows: Row[]; next: Cursor | null }> {
  const { read, cursorOf, keep, limit } = options;
  const kept: Row[] = [];
  let from = options.from;
  for (;;) {
    const rows = await read(from, options.batch);
    for (const row of rows) {
      if (!keep(row)) continue;
      if (kept.length === limit) return { rows: kept, next: cursorOf(kept[limit - 1]!) };
      kept.push(row);
    }
    if (rows.length < options.batch) return { rows: kept, next: null };
    from = cursorOf(rows[rows.length - 1]!);
  }
}

/**
 * A case-insensitive "contains" on any of the columns. LIKE's wildcards typed by the user are
 * escaped, so `%` finds a percent sign rather than everything.
 */
export function containsAny(columns: readonly string[], text: string): Expression<SqlBool> {
  const pattern = `%${text.toLowerCase().replace(/[!%_]/g, '!$&')}%`;
  return sql<SqlBool>`(${sql.join(
    columns.map((column) => sql`lower(${sql.ref(column)}) like ${pattern} escape '!'`),
    sql` or `,
  )})`;
}
