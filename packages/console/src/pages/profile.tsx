import { useState } from 'react';
import { api } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { ErrorNote, Loaded, useLoad, When } from '../components/ui';
import { useSignedIn } from '../session';
import { PasswordForm } from './change-password';
import { TwoFactor } from './two-factor';

interface SessionRow {
  id: string;
  current: boolean;
  ip: string | null;
  userAgent: string | null;
  device: { browser: string | null; os: string | null; type: string };
  createdAt: string;
  lastSeenAt: string;
  expiresAt: string;
}

/** "Firefox 128 on Ubuntu (desktop)": what a person recognises, parsed by the server. */
function deviceName(session: SessionRow): string {
  const { browser, os, type } = session.device;
  if (!browser && !os)
    return session.userAgent ? `A program (${session.userAgent.slice(0, 40)})` : 'An unknown device';
  const kind = type === 'unknown' ? '' : ` (${type})`;
  return `${browser ?? 'A browser'}${os ? ` on ${os}` : ''}${kind}`;
}

function Sessions({ generation }: { generation: number }) {
  const sessions = useLoad(() => api<{ sessions: SessionRow[] }>('GET', '/api/auth/sessions'), [generation]);
  const [revokeError, setRevokeError] = useState<unknown>();
  const [busy, setBusy] = useState<string | undefined>();
  return (
    <section aria-labelledby="sessions-heading">
      <h2 id="sessions-heading">Your sessions</h2>
      <ErrorNote error={sessions.error ?? revokeError} />
      <Loaded load={sessions} what="your sessions">
        {(data) => (
          <DataTable
            label="Your sessions"
            columns={['Device', 'Address', 'Signed in', 'Last seen']}
            actions
            rows={data.sessions}
          >
            {(session) => (
              <tr key={session.id}>
                <td title={session.userAgent ?? undefined}>{deviceName(session)}</td>
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
                    <RowButton
                      danger
                      target={`the session of ${deviceName(session)} from ${session.ip ?? 'an unknown address'}`}
                      disabled={busy === session.id}
                      onClick={async () => {
                        setBusy(session.id);
                        setRevokeError(undefined);
                        try {
                          await api('DELETE', `/api/auth/sessions/${encodeURIComponent(session.id)}`);
                          sessions.reload();
                        } catch (failure) {
                          setRevokeError(failure);
                        } finally {
                          setBusy(undefined);
                        }
                      }}
                    >
                      Revoke
                    </RowButton>
                  )}
                </td>
              </tr>
            )}
          </DataTable>
        )}
      </Loaded>
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

      <TwoFactor />

      <Sessions generation={changed} />
    </section>
  );
}
