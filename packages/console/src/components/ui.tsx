import {
  type InputHTMLAttributes,
  type ReactNode,
  useCallback,
  useEffect,
  useId,
  useRef,
  useState,
} from 'react';
import { ApiError } from '../api';

/** Loads data for a screen; `reload` runs it again (after a change, or on a live update). */
export function useLoad<T>(load: () => Promise<T>, deps: readonly unknown[]) {
  const [data, setData] = useState<T | undefined>();
  const [error, setError] = useState<unknown>();
  const [generation, setGeneration] = useState(0);
  // biome-ignore lint/correctness/useExhaustiveDependencies: the caller names what the load depends on.
  useEffect(() => {
    let current = true;
    load().then(
      (value) => {
        if (!current) return;
        setData(value);
        setError(undefined);
      },
      (failure: unknown) => current && setError(failure),
    );
    return () => {
      current = false;
    };
  }, [...deps, generation]);
  const reload = useCallback(() => setGeneration((n) => n + 1), []);
  return { data, error, reload };
}

/**
 * Sends a form: `busy` from the start of `run` until it fails, and the failure in `error` to show
 * (cleared on the next try). On success `busy` stays set: every form using this goes away then (its
 * dialog closes, or the screen moves on), and must not be sent twice meanwhile.
 */
export function useSubmit() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const run = async (send: () => Promise<void>) => {
    setBusy(true);
    setError(undefined);
    try {
      await send();
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  };
  return { busy, error, run };
}

export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  return 'Something went wrong. Try again.';
}

/** An error as the person can act on it: the server's message, and which fields it names. */
export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const fields = error instanceof ApiError ? error.fields : [];
  return (
    <div className="notice error" role="alert">
      <p>{messageOf(error)}</p>
      {fields.length > 0 && (
        <ul>
          {fields.map((field) => (
            <li key={field.path}>
              <code>{field.path.replace(/^body\./, '')}</code>: {field.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" aria-live="polite">
      Loading {what}…
    </p>
  );
}

/**
 * What a screen shows of one `useLoad`: "Loading …" until the data first arrives (nothing once the
 * load failed: the screen shows the error with its own ErrorNote, often merged with others), then
 * the content. Every list page had these same two conditions.
 */
export function Loaded<T>(props: {
  load: { data: T | undefined; error: unknown };
  what: string;
  children: (data: T) => ReactNode;
}) {
  if (props.load.data !== undefined) return props.children(props.load.data);
  return props.load.error ? null : <Loading what={props.what} />;
}

/** A labelled input; the label is always there for screen readers and at every width. */
export function Field(props: {
  label: string;
  hint?: string;
  error?: string | undefined;
  children: (id: string, describedBy: string | undefined) => ReactNode;
}) {
  const id = useId();
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const describedBy = [props.hint ? hintId : '', props.error ? errorId : ''].filter(Boolean).join(' ');
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      {props.children(id, describedBy || undefined)}
      {props.hint && (
        <small id={hintId} className="muted">
          {props.hint}
        </small>
      )}
      {props.error && (
        <small id={errorId} className="field-error">
          {props.error}
        </small>
      )}
    </div>
  );
}

/**
 * A Field holding one plain <input>, the most common field: the label, hint and error are wired to
 * it, and `onValue` gets the new text. Any other input attribute passes through.
 */
export function InputField({
  label,
  hint,
  error,
  onValue,
  ...input
}: {
  label: string;
  hint?: string;
  error?: string | undefined;
  onValue: (value: string) => void;
} & Omit<InputHTMLAttributes<HTMLInputElement>, 'id' | 'onChange' | 'aria-describedby'>) {
  return (
    <Field label={label} hint={hint} error={error}>
      {(id, describedBy) => (
        <input id={id} aria-describedby={describedBy} {...input} onChange={(e) => onValue(e.target.value)} />
      )}
    </Field>
  );
}

/** A password the person already has (to sign in, or to prove it is them again). */
export function CurrentPasswordField(props: {
  label: string;
  value: string;
  onValue: (password: string) => void;
}) {
  return (
    <InputField
      label={props.label}
      type="password"
      autoComplete="current-password"
      value={props.value}
      onValue={props.onValue}
      required
    />
  );
}

/**
 * A modal dialog (the browser's own <dialog>: focus moves into it, Escape closes it, the page
 * behind is inert). Open while mounted.
 */
export function Modal(props: { title: string; onClose: () => void; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.close();
  }, []);
  return (
    <dialog
      ref={ref}
      aria-labelledby={titleId}
      onCancel={(event) => {
        event.preventDefault();
        props.onClose();
      }}
    >
      <h2 id={titleId} className="dialog-title">
        {props.title}
      </h2>
      {props.children}
    </dialog>
  );
}

/** The end of a form in a dialog: its error, then Cancel and the submit button. */
export function DialogActions(props: {
  error: unknown;
  busy?: boolean;
  submitLabel: string;
  /** False keeps the submit button disabled (the form is not complete yet). */
  canSubmit?: boolean;
  onCancel: () => void;
}) {
  const busy = props.busy ?? false;
  return (
    <>
      <ErrorNote error={props.error} />
      <div className="actions">
        <button type="button" onClick={props.onCancel} disabled={busy}>
          Cancel
        </button>
        <button type="submit" className="primary" disabled={busy || props.canSubmit === false}>
          {props.submitLabel}
        </button>
      </div>
    </>
  );
}

/** Asks before something that cannot be undone; names exactly what will happen. */
export function ConfirmDialog(props: {
  title: string;
  children: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  onConfirm: () => Promise<void>;
  onClose: () => void;
}) {
  const { busy, error, run } = useSubmit();
  return (
    <Modal title={props.title} onClose={props.onClose}>
      {props.children}
      <ErrorNote error={error} />
      <div className="actions">
        <button type="button" onClick={props.onClose} disabled={busy}>
          Cancel
        </button>
        <button
          type="button"
          className={props.danger ? 'danger' : 'primary'}
          disabled={busy}
          onClick={() =>
            run(async () => {
              await props.onConfirm();
              props.onClose();
            })
          }
        >
          {props.confirmLabel}
        </button>
      </div>
    </Modal>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge status-${status}`}>{status.replaceAll('_', ' ')}</span>;
}

export function RiskBadge({ risk }: { risk: string }) {
  return <span className={`badge risk-${risk}`}>{risk}</span>;
}

export function Labels({ labels }: { labels: Record<string, string> }) {
  const entries = Object.entries(labels);
  if (entries.length === 0) return <span className="muted">none</span>;
  return (
    <ul className="labels">
      {entries.map(([key, value]) => (
        <li key={key}>
          <code>
            {key}={value}
          </code>
        </li>
      ))}
    </ul>
  );
}

export function When({ at }: { at: string | null }) {
  if (!at) return <span className="muted">never</span>;
  return <time dateTime={at}>{new Date(at).toLocaleString()}</time>;
}

/** Copies text to the clipboard, saying so for screen readers. */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      onClick={async () => {
        await navigator.clipboard.writeText(text).catch(() => undefined);
        setCopied(true);
      }}
    >
      {copied ? 'Copied' : label}
      <span className="visually-hidden" aria-live="polite">
        {copied ? ' (copied to the clipboard)' : ''}
      </span>
    </button>
  );
}

/** Parses "key=value, key=value" as labels; null when malformed. */
export function parseLabelText(text: string): Record<string, string> | null {
  const labels: Record<string, string> = {};
  for (const part of text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const at = part.indexOf('=');
    if (at <= 0) return null;
    labels[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return labels;
}
