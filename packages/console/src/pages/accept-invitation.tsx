import { useState } from 'react';
import { Link, useLocation, useNavigate } from 'react-router';
import { api } from '../api';
import { ErrorNote, Field, Loading } from '../components/ui';
import { useSession } from '../session';
import type { SessionView } from '../types';

/** The token from `?token=…` or from the fragment (`#…`), where the server's own links put it. */
function tokenOf(location: { search: string; hash: string }): string {
  const query = new URLSearchParams(location.search).get('token');
  if (query) return query;
  const fragment = location.hash.replace(/^#/, '');
  try {
    return new URLSearchParams(fragment).get('token') ?? decodeURIComponent(fragment);
  } catch {
    return ''; // a mangled link: answered as "no invitation in it"
  }
}

function AcceptSignedIn({ token, view }: { token: string; view: SessionView }) {
  const { adopt, logout } = useSession();
  const navigate = useNavigate();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  return (
    <>
      <p>
        You are signed in as <strong>{view.user.email}</strong>. The invitation must have been sent to this
        email.
      </p>
      <ErrorNote error={error} />
      <div className="actions">
        <button
          type="button"
          className="primary"
          disabled={busy}
          onClick={async () => {
            setBusy(true);
            setError(undefined);
            try {
              const joined = await api<{ slug: string }>('POST', '/api/invitations/accept-signed-in', {
                token,
              });
              // The session's list of organizations predates the new membership.
              adopt(await api<SessionView>('GET', '/api/auth/session'));
              navigate(`/orgs/${encodeURIComponent(joined.slug)}`, { replace: true });
            } catch (failure) {
              setError(failure);
              setBusy(false);
            }
          }}
        >
          Accept invitation
        </button>
        <button type="button" onClick={() => void logout()} disabled={busy}>
          Sign out to accept with a new account
        </button>
      </div>
    </>
  );
}

function AcceptWithNewAccount({ token, from }: { token: string; from: string }) {
  const { adopt } = useSession();
  const navigate = useNavigate();
  const [displayName, setDisplayName] = useState('');
  const [password, setPassword] = useState('');
  const [again, setAgain] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const mismatch = again.length > 0 && again !== password ? 'The two passwords differ.' : undefined;
  return (
    <form
      onSubmit={async (event) => {
        event.preventDefault();
        if (mismatch) return;
        setBusy(true);
        setError(undefined);
        try {
          adopt(await api<SessionView>('POST', '/api/invitations/accept', { token, displayName, password }));
          navigate('/', { replace: true });
        } catch (failure) {
          setError(failure);
          setBusy(false);
        }
      }}
    >
      <p>Create your account to join. Your email is the one the invitation was sent to.</p>
      <Field label="Display name">
        {(id) => (
          <input
            id={id}
            autoComplete="name"
            maxLength={100}
            value={displayName}
            onChange={(e) => setDisplayName(e.target.value)}
            required
          />
        )}
      </Field>
      <Field label="Password" hint="8 to 256 characters; common or easily guessed passwords are refused.">
        {(id, describedBy) => (
          <input
            id={id}
            type="password"
            autoComplete="new-password"
            minLength={8}
            maxLength={256}
            aria-describedby={describedBy}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            required
          />
        )}
      </Field>
      <Field label="Password again" error={mismatch}>
        {(id, describedBy) => (
          <input
            id={id}
            type="password"
            autoComplete="new-password"
            aria-describedby={describedBy}
            aria-invalid={mismatch ? true : undefined}
            value={again}
            onChange={(e) => setAgain(e.target.value)}
            required
          />
        )}
      </Field>
      <ErrorNote error={error} />
      <button type="submit" className="primary" disabled={busy || Boolean(mismatch)}>
        {busy ? 'Creating your account…' : 'Create account and join'}
      </button>
      <p className="muted">
        Already have an account?{' '}
        <Link to="/login" state={{ from }}>
          Sign in
        </Link>
        , and you will come back here to accept.
      </p>
    </form>
  );
}

/** Public: the invitee may not have an account yet. */
export default function AcceptInvitationPage() {
  const { state } = useSession();
  const location = useLocation();
  const token = tokenOf(location);
  return (
    <main id="main" className="login">
      <h1>Accept an invitation</h1>
      {!token ? (
        <p className="notice error" role="alert">
          This link has no invitation in it. Open the link from your invitation again, whole.
        </p>
      ) : state.status === 'loading' ? (
        <Loading what="your session" />
      ) : state.status === 'signed-in' ? (
        <AcceptSignedIn token={token} view={state.view} />
      ) : (
        <AcceptWithNewAccount token={token} from={location.pathname + location.search + location.hash} />
      )}
    </main>
  );
}
