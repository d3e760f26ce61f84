import type { ReactNode } from 'react';
import { CopyButton, DialogActions, Field, Modal, useSubmit } from './ui';

// Only the org pages' dialogs use these: this module stays out of the first chunk (see app.tsx).

/**
 * A dialog that is one form ("New team", "Change role", …): the fields are the children, and
 * submitting runs `onSubmit` (see DialogForm). `onSubmit` closes the dialog itself when it is done.
 */
export function FormDialog(props: {
  title: string;
  submitLabel: string;
  canSubmit?: boolean;
  onSubmit: () => Promise<void>;
  onClose: () => void;
  children: ReactNode;
}) {
  return (
    <Modal title={props.title} onClose={props.onClose}>
      <DialogForm
        submitLabel={props.submitLabel}
        canSubmit={props.canSubmit}
        onSubmit={props.onSubmit}
        onCancel={props.onClose}
      >
        {props.children}
      </DialogForm>
    </Modal>
  );
}

/**
 * The form inside a FormDialog: fields, then the error and Cancel/submit. Submitting runs
 * `onSubmit` with useSubmit's busy state and error. On its own for a dialog that stays open to
 * show something else once the form is sent (the new invitation's link).
 */
export function DialogForm(props: {
  submitLabel: string;
  canSubmit?: boolean;
  onSubmit: () => Promise<void>;
  onCancel: () => void;
  children: ReactNode;
}) {
  const { busy, error, run } = useSubmit();
  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        void run(props.onSubmit);
      }}
    >
      {props.children}
      <DialogActions
        error={error}
        busy={busy}
        submitLabel={props.submitLabel}
        canSubmit={props.canSubmit}
        onCancel={props.onCancel}
      />
    </form>
  );
}

/**
 * Something shown this once (an invitation link, an API key's token): the notice says why and for
 * whom, the field holds it to select or copy. Closing loses it for good.
 */
export function ShownOnceDialog(props: {
  title: string;
  notice: ReactNode;
  label: string;
  value: string;
  copyLabel: string;
  onClose: () => void;
}) {
  return (
    <Modal title={props.title} onClose={props.onClose}>
      <p className="notice">{props.notice}</p>
      <Field label={props.label}>{(id) => <input id={id} readOnly value={props.value} />}</Field>
      <div className="actions">
        <CopyButton text={props.value} label={props.copyLabel} />
        <button type="button" className="primary" onClick={props.onClose}>
          Done
        </button>
      </div>
    </Modal>
  );
}
