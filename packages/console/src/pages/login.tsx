import { useState } from 'react';
import { Navigate, useLocation } from 'react-router';
import { CurrentPasswordField, ErrorNote, InputField, useSubmit } from '../components/ui';
import { useSession } from '../session';
import { SsoSignIn, ssoRefusalText } from './sso-sign-in';

/** Sign in. Part of the first chunk: it is what everyone loads first. */
export function LoginPage() {
  const { state, login } = useSession();
  const location = useLocation();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const { busy, error, run } = useSubmit();
  const from = (location.state as { from?: string } | null)?.from ?? '/';
  // Where the identity provider's redirect lands when single sign-on did not work, and why.
  const ssoError = new URLSearchParams(location.search).get('ssoError');
  if (state.status === 'signed-in') return <Navigate to={from} replace />;
  if (state.status === 'second-factor') return <SecondFactorForm />;
  return (
    <main id="main" className="login">
      <h1>Sign in to Bulwark</h1>
      {state.status === 'anonymous' && state.notice && <p className="notice">{state.notice}</p>}
      {ssoError && (
        <p className="notice error" role="alert">
          {ssoRefusalText(ssoError)}
        </p>
      )}
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
      <SsoSignIn returnTo={from} />
    </main>
  );
}

/** The second step, after a right password: a passkey, a code from an authenticator, or a recovery code. */
function SecondFactorForm() {
  const { verifyCode, verifyPasskey, logout } = useSession();
  const [code, setCode] = useState('');
  const { busy, error, run } = useSubmit();
  return (
    <main id="main" className="login">
      <h1>Two-factor authentication</h1>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void run(() => verifyCode(code));
        }}
      >
        <p>Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>
        <InputField label="Code" autoComplete="one-time-code" value={code} onValue={setCode} required />
        <ErrorNote error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Checking…' : 'Verify'}
        </button>
        <button type="button" disabled={busy} onClick={() => void run(verifyPasskey)}>
          Use a passkey
        </button>
        <button type="button" onClick={() => void logout()}>
          Sign out
        </button>
      </form>
    </main>
  );
}
