import { useState } from 'react';
import { useNavigate } from 'react-router';
import { api } from '../api';
import { NewPasswordFields, useNewPassword } from '../components/new-password';
import { ErrorNote, Field } from '../components/ui';
import { useSession, useSignedIn } from '../session';
import type { SessionView } from '../types';

/** Change one's password; forced before anything else after a generated or reset password. */
export function PasswordForm({ onChanged }: { onChanged: () => void }) {
  const { adopt } = useSession();
  const [current, setCurrent] = useState('');
  const newPassword = useNewPassword();
  const { password: next, mismatch } = newPassword;
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  return (
    <form
      onSubmit={async (event) => {
        event.preventDefault();
        if (mismatch) return;
        setBusy(true);
        setError(undefined);
        try {
          adopt(
            await api<SessionView>('POST', '/api/auth/password', {
              currentPassword: current,
              newPassword: next,
            }),
          );
          onChanged();
        } catch (failure) {
          setError(failure);
        } finally {
          setBusy(false);
        }
      }}
    >
      <Field label="Current password">
        {(id) => (
          <input
            id={id}
            type="password"
            autoComplete="current-password"
            value={current}
            onChange={(e) => setCurrent(e.target.value)}
            required
          />
        )}
      </Field>
      <NewPasswordFields label="New password" state={newPassword} />
      <ErrorNote error={error} />
      <button type="submit" className="primary" disabled={busy || Boolean(mismatch)}>
        Change password
      </button>
    </form>
  );
}

export default function ChangePasswordPage() {
  const view = useSignedIn();
  const navigate = useNavigate();
  return (
    <section>
      <h1>Choose a new password</h1>
      {view.user.passwordChangeRequired && (
        <p className="notice">Your password was set for you. Choose your own before you go on.</p>
      )}
      <PasswordForm onChanged={() => navigate('/', { replace: true })} />
    </section>
  );
}
