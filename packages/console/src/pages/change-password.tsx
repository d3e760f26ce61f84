import { useState } from 'react';
import { useNavigate } from 'react-router';
import { api } from '../api';
import { NewPasswordFields, useNewPassword } from '../components/new-password';
import { CurrentPasswordField, ErrorNote, useSubmit } from '../components/ui';
import { useSession, useSignedIn } from '../session';
import type { SessionView } from '../types';

/** Change one's password; forced before anything else after a generated or reset password. */
export function PasswordForm({ onChanged }: { onChanged: () => void }) {
  const { adopt } = useSession();
  const [current, setCurrent] = useState('');
  const newPassword = useNewPassword();
  const { password: next, mismatch } = newPassword;
  const { busy, error, run } = useSubmit();
  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        if (mismatch) return;
        void run(async () => {
          adopt(
            await api<SessionView>('POST', '/api/auth/password', {
              currentPassword: current,
              newPassword: next,
            }),
          );
          onChanged();
        });
      }}
    >
      <CurrentPasswordField label="Current password" value={current} onValue={setCurrent} />
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
