import { useState } from 'react';
import { Navigate, useLocation } from 'react-router';
import { CurrentPasswordField, ErrorNote, InputField, useSubmit } from '../components/ui';
import { useSession } from '../session';

/** Sign in. Part of the first chunk: it is what everyone loads first. */
export function LoginPage() {
  const { state, login } = useSession();
  const location = useLocation();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const { busy, error, run } = useSubmit();
  const from = (location.state as { from?: string } | null)?.from ?? '/';
  if (state.status === 'signed-in') return <Navigate to={from} replace />;
  return (
    <main id="main" className="login">
      <h1>Sign in to Bulwark</h1>
      {state.status === 'anonymous' && state.notice && <p className="notice">{state.notice}</p>}
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void run(() => login(email, password));
        }}
      >
        <InputField
          label="Email"
          type="email"
          autoComplete="username"
          value={email}
          onValue={setEmail}
          required
        />
        <CurrentPasswordField label="Password" value={password} onValue={setPassword} />
        <ErrorNote error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
