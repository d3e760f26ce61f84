/**
 * How deeply a JSON request body may nest arrays and objects. Code that walks a value recursively
 * (canonical JSON for request hashes and signatures, the audit guard) would exhaust the stack on a
 * body a few tens of thousands of levels deep, which fits easily in the body size limit; no request
 * of this API needs more than a handful of levels, and an action's params get this many.
 */
export const MAX_JSON_DEPTH = 64;

/** Whether `value` nests arrays or objects deeper than `max` levels. Iterative, so it cannot exhaust the stack itself. */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const pending: Array<{ item: object; depth: number }> = [];
  if (value !== null && typeof value === 'object') pending.push({ item: value, depth: 1 });
  for (let next = pending.pop(); next; next = pending.pop()) {
    if (next.depth > max) return true;
    for (const child of Object.values(next.item))
      if (child !== null && typeof child === 'object') pending.push({ item: child, depth: next.depth + 1 });
  }
  return false;
}
