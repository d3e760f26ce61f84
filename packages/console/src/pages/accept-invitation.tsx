import { useState } from 'react';
import { Link, useLocation, useNavigate } from 'react-router';
import { api } from '../api';
import { NewPasswordFields, useNewPassword } from '../components/new-password';
import { ErrorNote, InputField, Loading, useSubmit } from '../components/ui';
import { useSession } from '../session';
import type { SessionView } from '../types';

/**
 * The token, from the fragment where the server's links put it (a fragment is never sent to the
 * server, so it never reaches a log).
 */
function tokenOf(location: { hash: string }): string {
  try {
    return decodeURIComponent(location.hash.replace(/^#/, ''));
  } catch {
    return ''; // a mangled link: answered as "no invitation in it"
  }
}

function AcceptSignedIn({ token, view }: { token: string; view: SessionView }) {
  const { adopt, logout } = useSession();
  const navigate = useNavigate();
  const { busy, error, run } = useSubmit();
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
          onClick={() =>
            run(async () => {
              const joined = await api<{ slug: string }>('POST', '/api/invitations/accept-signed-in', {
                token,
              });
              // The session's list of organizations predates the new membership.
              adopt(await api<SessionView>('GET', '/api/auth/session'));
              navigate(`/orgs/${encodeURIComponent(joined.slug)}`, { replace: true });
            })
          }
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
  const newPassword = useNewPassword();
  const { password, mismatch } = newPassword;
  const { busy, error, run } = useSubmit();
  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        if (mismatch) return;
        void run(async () => {
          adopt(await api<SessionView>('POST', '/api/invitations/accept', { token, displayName, password }));
          navigate('/', { replace: true });
        });
      }}
    >
      <p>Create your account to join. Your email is the one the invitation was sent to.</p>
      <InputField
        label="Display name"
        autoComplete="name"
        maxLength={100}
        value={displayName}
        onValue={setDisplayName}
        required
      />
      <NewPasswordFields label="Password" state={newPassword} />
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
