import { useState } from 'react';
import { renderSVG } from 'uqr';
import { api } from '../api';
import { DataTable, RowButton } from '../components/data-table';
import { CopyButton, ErrorNote, InputField, Loaded, useLoad, useSubmit, When } from '../components/ui';
import { addPasskey } from '../passkeys';
import { useSession } from '../session';
import type { FactorChange, SessionView } from '../types';

interface Factor {
  id: string;
  type: 'totp' | 'webauthn';
  name: string;
  createdAt: string;
  lastUsedAt: string | null;
}

interface Enrolment {
  factorId: string;
  secret: string;
  uri: string;
}

/** Recovery codes, shown once: each stands in for the authenticator one time. */
function RecoveryCodes({ codes }: { codes: string[] }) {
  return (
    <div className="notice" role="status">
      <p>
        Your recovery codes. Keep them somewhere safe: each works once if you lose your authenticator, and
        they are not shown again.
      </p>
      <ul aria-label="Recovery codes" className="codes">
        {codes.map((code) => (
          <li key={code}>
            <code>{code}</code>
          </li>
        ))}
      </ul>
      <div className="actions">
        <CopyButton text={codes.join('\n')} label="Copy the codes" />
        <button type="button" onClick={() => saveCodes(codes)}>
          Download as a text file
        </button>
      </div>
    </div>
  );
}

/**
 * Saves the codes as a file the browser downloads: a Blob URL followed by a link, which is a download
 * and not a script, so the strict CSP (no inline script) allows it. The codes never leave the browser.
 */
function saveCodes(codes: string[]) {
  const text = `Bulwark recovery codes for ${window.location.host}\nEach works once.\n\n${codes.join('\n')}\n`;
  const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = 'bulwark-recovery-codes.txt';
  link.click();
  // After the click the browser holds its own reference; the URL can go.
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

/** Scanning the QR code (or typing the secret) into an app, then confirming with its first code. */
function AddAuthenticator({ onAdded }: { onAdded: (change: FactorChange) => void }) {
  const [enrolment, setEnrolment] = useState<Enrolment | undefined>();
  const [code, setCode] = useState('');
  // Two steps, two submissions: a finished step stays busy (the parent remounts this form after).
  const start = useSubmit();
  const { busy, error, run } = useSubmit();
  if (!enrolment)
    return (
      <>
        <ErrorNote error={start.error} />
        <button
          type="button"
          disabled={start.busy}
          onClick={() =>
            void start.run(async () =>
              setEnrolment(await api<Enrolment>('POST', '/api/auth/mfa/totp', { name: 'Authenticator app' })),
            )
          }
        >
          Add an authenticator app
        </button>
      </>
    );
  // Rendered here from the otpauth URI: the secret never goes to a third-party QR service.
  const qr = `data:image/svg+xml;utf8,${encodeURIComponent(renderSVG(enrolment.uri))}`;
  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        void run(async () => {
          const confirmed = await api<FactorChange>(
            'POST',
            `/api/auth/mfa/totp/${encodeURIComponent(enrolment.factorId)}/confirm`,
            { code },
          );
          onAdded(confirmed);
        });
      }}
    >
      <p>Scan this code with your authenticator app, then enter the 6-digit code it shows.</p>
      <img src={qr} alt="QR code of the authenticator secret" width={192} height={192} />
      <p>
        Or type this secret into the app: <code data-testid="totp-secret">{enrolment.secret}</code>
      </p>
      <InputField
        label="Code from the app"
        autoComplete="one-time-code"
        inputMode="numeric"
        value={code}
        onValue={setCode}
        required
      />
      <ErrorNote error={error} />
      <button type="submit" className="primary" disabled={busy}>
        Confirm
      </button>
    </form>
  );
}

const FACTOR_TYPES: Record<Factor['type'], string> = { totp: 'Authenticator app', webauthn: 'Passkey' };

/** Creates a passkey on this device (or a security key), named so it can be told apart later. */
function AddPasskey({ onAdded }: { onAdded: (change: FactorChange) => void }) {
  const [name, setName] = useState('Passkey');
  const { busy, error, run } = useSubmit();
  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        void run(async () => onAdded(await addPasskey(name)));
      }}
    >
      <InputField label="Passkey name" value={name} onValue={setName} maxLength={64} required />
      <ErrorNote error={error} />
      <button type="submit" disabled={busy}>
        {busy ? 'Waiting for your passkey…' : 'Add a passkey'}
      </button>
    </form>
  );
}

/** Your second factors (MFA-1 to MFA-3): add an authenticator or a passkey, remove one, renew recovery codes. */
export function TwoFactor() {
  const { adopt } = useSession();
  const [generation, setGeneration] = useState(0);
  const [codes, setCodes] = useState<string[] | undefined>();
  const [otherSessions, setOtherSessions] = useState(0);
  const [actionError, setActionError] = useState<unknown>();
  const [acting, setActing] = useState(false);
  /** Runs one button's request at a time; its failure shows above the table. */
  const act = async (work: () => Promise<void>) => {
    setActing(true);
    setActionError(undefined);
    try {
      await work();
    } catch (failure) {
      setActionError(failure);
    } finally {
      setActing(false);
    }
  };
  const status = useLoad(
    () => api<{ factors: Factor[]; recoveryCodesLeft: number }>('GET', '/api/auth/mfa'),
    [generation],
  );
  const changed = async (change: FactorChange) => {
    setCodes(change.recoveryCodes);
    setOtherSessions(change.otherSessions);
    setGeneration((n) => n + 1);
    // Enrolment changes what the session may reach (the organization's MFA policy).
    adopt(await api<SessionView>('GET', '/api/auth/session'));
  };
  return (
    <section aria-labelledby="mfa-heading">
      <h2 id="mfa-heading">Two-factor authentication</h2>
      {codes && <RecoveryCodes codes={codes} />}
      {otherSessions > 0 && (
        <div className="notice" role="status">
          <p>
            {otherSessions === 1 ? 'You have one other session' : `You have ${otherSessions} other sessions`}{' '}
            signed in. Changing a factor does not sign them out; if one might not be you, end them.
          </p>
          <button
            type="button"
            disabled={acting}
            onClick={() =>
              act(async () => {
                await api('DELETE', '/api/auth/sessions');
                setOtherSessions(0);
              })
            }
          >
            End the other sessions
          </button>
        </div>
      )}
      <ErrorNote error={status.error ?? actionError} />
      <Loaded load={status} what="your factors">
        {(data) => (
          <>
            {data.factors.length === 0 ? (
              <p>No second factor yet. Organizations that require one open only once you add it.</p>
            ) : (
              <>
                <DataTable
                  label="Your second factors"
                  columns={['Name', 'Kind', 'Added', 'Last used']}
                  actions
                  rows={data.factors}
                >
                  {(factor) => (
                    <tr key={factor.id}>
                      <td>{factor.name}</td>
                      <td>{FACTOR_TYPES[factor.type]}</td>
                      <td>
                        <When at={factor.createdAt} />
                      </td>
                      <td>
                        {factor.lastUsedAt ? (
                          <When at={factor.lastUsedAt} />
                        ) : (
                          <span className="muted">never</span>
                        )}
                      </td>
                      <td>
                        <RowButton
                          danger
                          target={factor.name}
                          disabled={acting}
                          onClick={() =>
                            act(async () => {
                              await changed(
                                await api<FactorChange>(
                                  'DELETE',
                                  `/api/auth/mfa/factors/${encodeURIComponent(factor.id)}`,
                                ),
                              );
                            })
                          }
                        >
                          Remove
                        </RowButton>
                      </td>
                    </tr>
                  )}
                </DataTable>
                <p>
                  Recovery codes left: {data.recoveryCodesLeft}.{' '}
                  <button
                    type="button"
                    disabled={acting}
                    onClick={() =>
                      act(async () => {
                        const renewed = await api<{ recoveryCodes: string[] }>(
                          'POST',
                          '/api/auth/mfa/recovery-codes',
                        );
                        setCodes(renewed.recoveryCodes);
                        setGeneration((n) => n + 1);
                      })
                    }
                  >
                    New recovery codes
                  </button>
                </p>
              </>
            )}
            <AddAuthenticator key={generation} onAdded={(change) => void changed(change)} />
            <AddPasskey key={`passkey-${generation}`} onAdded={(change) => void changed(change)} />
          </>
        )}
      </Loaded>
    </section>
  );
}
