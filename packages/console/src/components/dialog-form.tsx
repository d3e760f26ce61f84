import type { ReactNode } from 'react';
import { DialogActions, Modal, useSubmit } from './ui';

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
