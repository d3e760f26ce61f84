import type { ReactNode } from 'react';

/**
 * The console's list tables, written out the same way on every list page before: a table named by
 * `label` (screen readers and the end-to-end tests find it by that name) in the wrapper that
 * scrolls it sideways on a phone, one column heading each, and an "Actions" column last when the
 * person may act on the rows. With `empty`, that note stands instead of a table with no rows.
 * `children` renders one row (a <tr> with its key).
 */
export function DataTable<T>(props: {
  label: string;
  columns: readonly string[];
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
    <div className="table-wrap">
      <table aria-label={props.label}>
        <thead>
          <tr>
            {props.columns.map((column) => (
              <th key={column} scope="col">
                {column}
              </th>
            ))}
            {props.actions && (
              <th scope="col">
                {props.quietActionsHeading ? <span className="visually-hidden">Actions</span> : 'Actions'}
              </th>
            )}
          </tr>
        </thead>
        <tbody>{props.rows.map((row) => props.children(row))}</tbody>
      </table>
    </div>
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
