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

/** `body.newPassword` → "New password", `body.params.port` → "Port", `body.items[2].name` → "Name (item 3)". */
export function fieldLabel(path: string): string {
  const parts = path.split('.').filter((part) => !['body', 'query', 'params'].includes(part));
  const last = parts.at(-1) ?? path;
  const indexed = /^(.*)\[(\d+)\]$/.exec(last);
  const name = indexed ? indexed[1]! : last;
  const words = name
    .replace(/\[\d+\]/g, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/[_-]+/g, ' ')
    .trim()
    .toLowerCase();
  const label = words ? words[0]!.toUpperCase() + words.slice(1) : 'This field';
  const item = /\[(\d+)\]/.exec(parts.join('.'));
  return item ? `${label} (item ${Number(item[1]) + 1})` : label;
}

/**
 * The validator's terse words said as what to do. The server's own messages are already written for
 * people ("is not your current password"); the schema validator's ("Too small: expected string to
 * have >=1 characters") are not.
 */
export function plainProblem(message: string): string {
  const rules: Array<[RegExp, (m: RegExpExecArray) => string]> = [
    [/^Too small: expected string to have >=1 characters?/, () => 'is required: fill it in'],
    [
      /^Too small: expected string to have >=(\d+) characters?/,
      (m) => `is too short: use at least ${m[1]} characters`,
    ],
    [
      /^Too big: expected string to have <=(\d+) characters?/,
      (m) => `is too long: use at most ${m[1]} characters`,
    ],
    [/^Too small: expected number to be >=?(-?[\d.]+)/, (m) => `is too small: use ${m[1]} or more`],
    [/^Too big: expected number to be <=?(-?[\d.]+)/, (m) => `is too large: use ${m[1]} or less`],
    [/^Too small: expected array to have >=(\d+) items?/, (m) => `needs at least ${m[1]} chosen`],
    [/^Invalid input: expected \w+, received undefined/, () => 'is required: fill it in'],
    [/^Invalid input: expected (number|int)/, () => 'must be a whole number'],
    [/^Invalid (email|input: expected email)/i, () => 'must be an email address, like name@example.com'],
    [/^Invalid option: expected one of (.*)$/, (m) => `must be one of ${m[1]!.replaceAll('|', ', ')}`],
    [/^Invalid string: must match pattern/, () => 'is not in the expected form'],
  ];
  for (const [pattern, say] of rules) {
    const match = pattern.exec(message);
    if (match) return say(match);
  }
  return message;
}

/** "Current password is not your current password." — a field problem as one sentence naming the field. */
export function fieldSentence(label: string, message: string): string {
  const said = plainProblem(message).trim();
  const sentence = /^[a-z]/.test(said) ? `${label} ${said}` : `${label}: ${said}`;
  return /[.!?]$/.test(sentence) ? sentence : `${sentence}.`;
}

const squash = (text: string) => text.toLowerCase().replace(/[^a-z0-9]/g, '');

/**
 * An error as the person can act on it: what went wrong in words and, for each field the server
 * names, the field by its label on this form (found beside the note, or given in `labels`) and what
 * to change.
 */
export function ErrorNote({ error, labels = {} }: { error: unknown; labels?: Record<string, string> }) {
  const ref = useRef<HTMLDivElement>(null);
  const [formLabels, setFormLabels] = useState<string[]>([]);
  const fields = error instanceof ApiError ? error.fields : [];
  // biome-ignore lint/correctness/useExhaustiveDependencies: the labels are read again for each new error.
  useEffect(() => {
    const form = ref.current?.closest('form, dialog, section');
    setFormLabels(
      form ? [...form.querySelectorAll('label')].map((label) => label.textContent?.trim() ?? '') : [],
    );
  }, [error]);
  if (!error) return null;
  const labelOf = (path: string) => {
    const given = labels[path] ?? labels[path.replace(/^(body|query|params)\./, '')];
    if (given) return given;
    const guessed = fieldLabel(path);
    // The form's own label when one reads as the field's name ("Expires in (days)" for expiresInDays).
    return formLabels.find((label) => label && squash(label).startsWith(squash(guessed))) ?? guessed;
  };
  const validation = error instanceof ApiError && error.code === 'validation_failed' && fields.length > 0;
  return (
    <div className="notice error" role="alert" ref={ref}>
      <p>{validation ? 'Some of what you entered needs a change:' : messageOf(error)}</p>
      {fields.length > 0 && (
        <ul>
          {fields.map((field) => (
            <li key={field.path}>{fieldSentence(labelOf(field.path), field.message)}</li>
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
