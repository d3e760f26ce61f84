import { z } from 'zod';
import { type Cursor, decodeCursor, encodeCursor } from '../db/keyset.js';
import { ValidationError } from '../errors.js';

/**
 * What the console's lists share in their query strings: search text, and the cursor `after` that
 * continues a list where its previous page ended (db/keyset.ts).
 */

/** Search text as a person types it in a search box, bounded. */
export const SearchText = z.string().trim().min(1).max(100);

/** A cursor as sent back: the `next` of the previous page, base64url (or an id, see below). */
export const CursorText = z
  .string()
  .max(1400)
  .describe('The `next` of the previous page, unchanged; valid only with the same sort');

const isCreationOrder = (sort: string) => sort === 'created' || sort === '-created';

/**
 * The cursor in `raw`, or 422 naming `field`. Under creation order the cursor is the last row's id
 * itself (ids sort by creation), which is what these lists answered before they could be sorted.
 */
export function cursorFrom(
  sort: string,
  raw: string | undefined,
  idPrefix: string,
  field = 'query.after',
): Cursor | undefined {
  if (raw === undefined) return undefined;
  if (isCreationOrder(sort)) {
    if (new RegExp(`^${idPrefix}_[0-9A-Za-z]{1,60}$`).test(raw)) return { value: raw, id: raw };
  } else {
    const cursor = decodeCursor(sort, raw);
    if (cursor) return cursor;
  }
  throw new ValidationError([
    { path: field, message: 'is not a cursor of this list in this order; start from the first page' },
  ]);
}

export const cursorText = (sort: string, cursor: Cursor): string =>
  isCreationOrder(sort) ? cursor.id : encodeCursor(sort, cursor);
