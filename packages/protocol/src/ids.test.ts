import { describe, expect, it } from 'vitest';
import { isId, newId } from './ids.js';

describe('newId', () => {
  it('produces a prefixed 26-character Crockford body that isId accepts', () => {
    const id = newId('evt');
    expect(id).toMatch(/^evt_[0-9A-HJKMNP-TV-Z]{26}$/);
    expect(isId(id, 'evt')).toBe(true);
    expect(isId(id, 'key')).toBe(false);
    expect(isId('evt_01ILLEGALCHARSUUUUUUUUUUUU', 'evt')).toBe(false);
  });

  it('sorts by creation time across milliseconds', () => {
    const ids = [5, 1_700_000_000_000, 1_700_000_000_001, 2 ** 47].map((t) => newId('evt', t));
    expect([...ids].sort()).toEqual(ids);
  });

  it('does not repeat within one millisecond', () => {
    const seen = new Set(Array.from({ length: 10_000 }, () => newId('req', 1)));
    expect(seen.size).toBe(10_000);
  });
});
