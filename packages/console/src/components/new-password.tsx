import { useState } from 'react';
import { Field } from './ui';

/** A new password typed twice; `mismatch` says why it cannot be sent yet. */
export function useNewPassword() {
  const [password, setPassword] = useState('');
  const [again, setAgain] = useState('');
  const mismatch = again.length > 0 && again !== password ? 'The two passwords differ.' : undefined;
  return { password, again, setPassword, setAgain, mismatch };
}

/** The two fields of a new password, with the policy the server applies as a hint. */
export function NewPasswordFields({
  label,
  state,
}: {
  label: string;
  state: ReturnType<typeof useNewPassword>;
}) {
  return (
    <>
      <Field label={label} hint="8 to 256 characters; common or easily guessed passwords are refused.">
        {(id, describedBy) => (
          <input
            id={id}
            type="password"
            autoComplete="new-password"
            minLength={8}
            maxLength={256}
            aria-describedby={describedBy}
            value={state.password}
            onChange={(e) => state.setPassword(e.target.value)}
            required
          />
        )}
      </Field>
      <Field label={`${label} again`} error={state.mismatch}>
        {(id, describedBy) => (
          <input
            id={id}
            type="password"
            autoComplete="new-password"
            aria-describedby={describedBy}
            aria-invalid={state.mismatch ? true : undefined}
            value={state.again}
            onChange={(e) => state.setAgain(e.target.value)}
            required
          />
        )}
      </Field>
    </>
  );
}
