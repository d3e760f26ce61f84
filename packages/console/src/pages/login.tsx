import { useState } from 'react';
import { Navigate, useLocation } from 'react-router';
import { ErrorNote, Field } from '../components/ui';
import { useSession } from '../session';

/** Sign in. Part of the first chunk: it is what everyone loads first. */
export function LoginPage() {
  const { state, login } = useSession();
  const location = useLocation();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const from = (location.state as { from?: string } | null)?.from ?? '/';
  if (state.status === 'signed-in') return <Navigate to={from} replace />;
  return (
    <main id="main" className="login">
      <h1>Sign in to Bulwark</h1>
      {state.status === 'anonymous' && state.notice && <p className="notice">{state.notice}</p>}
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          setBusy(true);
          setError(undefined);
          try {
            await login(email, password);
          } catch (failure) {
            setError(failure);
            setBusy(false);
          }
        }}
      >
        <Field label="Email">
          {(id) => (
            <input
              id={id}
              type="email"
              autoComplete="username"
              value={email}
              onChange={(event) => setEmail(event.target.value)}
              required
            />
          )}
        </Field>
        <Field label="Password">
          {(id) => (
            <input
              id={id}
              type="password"
              autoComplete="current-password"
              value={password}
              onChange={(event) => setPassword(event.target.value)}
              required
            />
          )}
        </Field>
        <ErrorNote error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
