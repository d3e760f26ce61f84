import { type ReactNode, useEffect, useId, useRef, useState } from 'react';
import { useLocation, useSearchParams } from 'react-router';
import { ScrollRegion } from './scroll-region';

/** A column heading; with `sort`, the key the server sorts by, and the heading becomes a button. */
export type Column = string | { label: string; sort?: string };

/** What a sortable table needs to know: the current `sort` (`key` or `-key`) and how to change it. */
export interface Sorting {
  sort: string;
  onSort: (sort: string) => void;
}

const labelOf = (column: Column) => (typeof column === 'string' ? column : column.label);

/**
 * The console's list tables, written out the same way on every list page before: a table named by
 * `label` (screen readers and the end-to-end tests find it by that name) in the wrapper that
 * scrolls it sideways on a phone, one column heading each, and an "Actions" column last when the
 * person may act on the rows. With `empty`, that note stands instead of a table with no rows.
 * `children` renders one row (a <tr> with its key).
 */
export function DataTable<T>(props: {
  label: string;
  columns: readonly Column[];
  /** With sortable columns: clicking a heading sorts by it, again reverses it. */
  sorting?: Sorting;
  /** Adds the trailing "Actions" column heading. */
  actions?: boolean;
  /** The "Actions" heading is for screen readers only (where the buttons speak for themselves). */
  quietActionsHeading?: boolean;
  rows: readonly T[];
  empty?: string;
  children: (row: T) => ReactNode;
}) {
  if (props.empty !== undefined && props.rows.length === 0) return <p className="muted">{props.empty}</p>;
  return (
    <ScrollRegion label={props.label}>
      <table aria-label={props.label}>
        <thead>
          <tr>
            {props.columns.map((column) => {
              const key = typeof column === 'string' ? undefined : column.sort;
              if (!key || !props.sorting)
                return (
                  <th key={labelOf(column)} scope="col">
                    {labelOf(column)}
                  </th>
                );
              const { sort, onSort } = props.sorting;
              const direction = sort === key ? 'ascending' : sort === `-${key}` ? 'descending' : 'none';
              return (
                <th key={labelOf(column)} scope="col" aria-sort={direction}>
                  <button
                    type="button"
                    className="sort-heading"
                    onClick={() => onSort(sort === key ? `-${key}` : key)}
                  >
                    {labelOf(column)}
                    <span aria-hidden="true">
                      {direction === 'ascending' ? ' ▲' : direction === 'descending' ? ' ▼' : ''}
                    </span>
                    <span className="visually-hidden">
                      {direction === 'ascending'
                        ? ', sorted ascending; sort descending'
                        : direction === 'descending'
                          ? ', sorted descending; sort ascending'
                          : ', sort'}
                    </span>
                  </button>
                </th>
              );
            })}
            {props.actions && (
              <th scope="col">
                {props.quietActionsHeading ? <span className="visually-hidden">Actions</span> : 'Actions'}
              </th>
            )}
          </tr>
        </thead>
        <tbody>{props.rows.map((row) => props.children(row))}</tbody>
      </table>
    </ScrollRegion>
  );
}

/**
 * A button acting on one row. Its visible text is the bare verb ("Edit"); `target` completes it for
 * screen readers ("Edit" + " payments"), so that each row's button has a name of its own.
 */
export function RowButton(props: {
  children: string;
  target: string;
  danger?: boolean;
  disabled?: boolean;
  onClick: () => void;
}) {
  return (
    <button
      type="button"
      className={props.danger ? 'danger' : undefined}
      disabled={props.disabled}
      onClick={props.onClick}
    >
      {props.children}
      <span className="visually-hidden"> {props.target}</span>
    </button>
  );
}

/**
 * A list's state kept in the URL (search, filters, sort, page), so that a link to it shows the same
 * list and a reload keeps it. The page is the server's cursor (`after`); the cursors of the pages
 * before it travel in the history entry, so "Previous" works after a reload too. Changing anything
 * but the page goes back to the first page.
 */
export function useListParams(defaults: Record<string, string>) {
  const [params, setParams] = useSearchParams();
  const location = useLocation();
  const earlier = ((location.state as { earlier?: string[] } | null)?.earlier ?? []).filter(
    (cursor) => typeof cursor === 'string',
  );
  const get = (name: string) => params.get(name) ?? defaults[name] ?? '';
  function set(changes: Record<string, string>) {
    const next = new URLSearchParams(params);
    for (const [name, value] of Object.entries(changes)) {
      if (value === '' || value === defaults[name]) next.delete(name);
      else next.set(name, value);
    }
    next.delete('after');
    setParams(next, { state: { earlier: [] } });
  }
  function page(after: string | undefined, stack: string[]) {
    const next = new URLSearchParams(params);
    if (after) next.set('after', after);
    else next.delete('after');
    setParams(next, { state: { earlier: stack } });
  }
  const after = params.get('after') ?? '';
  return {
    get,
    set,
    /** The query for the API: the list's parameters that are set, and the page. */
    query(extra: Record<string, string> = {}) {
      const query = new URLSearchParams(extra);
      for (const name of new Set([...Object.keys(defaults), ...params.keys()])) {
        const value = get(name);
        if (value !== '') query.set(name, value);
      }
      return query.toString();
    },
    /** Changes whenever the list to show changes: what a load depends on. */
    key: params.toString(),
    sorting: (fallback: string): Sorting => ({
      sort: get('sort') || fallback,
      onSort: (sort) => set({ sort }),
    }),
    pager: (next: string | null | undefined) => ({
      onFirst: after ? () => page(undefined, []) : undefined,
      onPrevious: after ? () => page(earlier.at(-1), earlier.slice(0, -1)) : undefined,
      onNext: next ? () => page(next, after ? [...earlier, after] : []) : undefined,
    }),
  };
}

/** First, previous and next page of a list paged by the server. */
export function Pager(props: {
  label: string;
  onFirst: (() => void) | undefined;
  onPrevious: (() => void) | undefined;
  onNext: (() => void) | undefined;
}) {
  if (!props.onFirst && !props.onNext) return null;
  return (
    <nav className="actions pager" aria-label={`${props.label} pages`}>
      <button type="button" disabled={!props.onFirst} onClick={props.onFirst}>
        First page
      </button>
      <button type="button" disabled={!props.onPrevious} onClick={props.onPrevious}>
        Previous page
      </button>
      <button type="button" disabled={!props.onNext} onClick={props.onNext}>
        Next page
      </button>
    </nav>
  );
}

/**
 * A search box that searches as the person stops typing (and at once on Enter), kept in step with
 * the URL when it changes under it (back, a link).
 */
export function SearchBox(props: { label: string; value: string; onSearch: (text: string) => void }) {
  const id = useId();
  const [text, setText] = useState(props.value);
  useEffect(() => setText(props.value), [props.value]);
  const { value } = props;
  // The latest callback, without restarting the typing pause on every render of the page.
  const onSearch = useRef(props.onSearch);
  onSearch.current = props.onSearch;
  useEffect(() => {
    if (text.trim() === value) return;
    const timer = setTimeout(() => onSearch.current(text.trim()), 400);
    return () => clearTimeout(timer);
  }, [text, value]);
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      <input
        id={id}
        type="search"
        value={text}
        maxLength={100}
        onChange={(event) => setText(event.target.value)}
        onKeyDown={(event) => {
          if (event.key === 'Enter') {
            event.preventDefault();
            onSearch.current(text.trim());
          }
        }}
      />
    </div>
  );
}
