import { useState } from 'react';
import { api } from '../api';
import { ErrorNote, Loading, useLoad, When } from '../components/ui';
import { useSignedIn } from '../session';
import { PasswordForm } from './change-password';

interface SessionRow {
  id: string;
  current: boolean;
  ip: string | null;
  userAgent: string | null;
  createdAt: string;
  lastSeenAt: string;
  expiresAt: string;
}

function Sessions({ generation }: { generation: number }) {
  const { data, error, reload } = useLoad(
    () => api<{ sessions: SessionRow[] }>('GET', '/api/auth/sessions'),
    [generation],
  );
  const [revokeError, setRevokeError] = useState<unknown>();
  const [busy, setBusy] = useState<string | undefined>();
  return (
    <section aria-labelledby="sessions-heading">
      <h2 id="sessions-heading">Your sessions</h2>
      <ErrorNote error={error ?? revokeError} />
      {!data && !error && <Loading what="your sessions" />}
      {data && (
        <div className="table-wrap">
          <table aria-label="Your sessions">
            <thead>
              <tr>
                <th scope="col">Device</th>
                <th scope="col">Address</th>
                <th scope="col">Signed in</th>
                <th scope="col">Last seen</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {data.sessions.map((session) => (
                <tr key={session.id}>
                  <td>{session.userAgent ?? <span className="muted">unknown</span>}</td>
                  <td>{session.ip ?? <span className="muted">unknown</span>}</td>
                  <td>
                    <When at={session.createdAt} />
                  </td>
                  <td>
                    <When at={session.lastSeenAt} />
                  </td>
                  <td>
                    {session.current ? (
                      <span className="badge">This session</span>
                    ) : (
                      <button
                        type="button"
                        className="danger"
                        disabled={busy === session.id}
                        onClick={async () => {
                          setBusy(session.id);
                          setRevokeError(undefined);
                          try {
                            await api('DELETE', `/api/auth/sessions/${encodeURIComponent(session.id)}`);
                            reload();
                          } catch (failure) {
                            setRevokeError(failure);
                          } finally {
                            setBusy(undefined);
                          }
                        }}
                      >
                        Revoke
                        <span className="visually-hidden">
                          {' '}
                          the session from {session.ip ?? 'an unknown address'}
                        </span>
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export default function ProfilePage() {
  const { user } = useSignedIn();
  const [changed, setChanged] = useState(0);
  return (
    <section>
      <h1>Your profile</h1>
      <dl>
        <dt>Email</dt>
        <dd>{user.email}</dd>
        <dt>Display name</dt>
        <dd>{user.displayName || <span className="muted">none</span>}</dd>
      </dl>

      <section aria-labelledby="password-heading">
        <h2 id="password-heading">Change your password</h2>
        {changed > 0 && (
          <p className="notice" role="status">
            Your password was changed. Your other sessions have been ended.
          </p>
        )}
        {/* A new key empties the form once the change is done. */}
        <PasswordForm key={changed} onChanged={() => setChanged((n) => n + 1)} />
      </section>

      <Sessions generation={changed} />
    </section>
  );
}
