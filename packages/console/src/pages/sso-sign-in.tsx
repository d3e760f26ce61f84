import { useState } from 'react';
import { api } from '../api';
import { ErrorNote, InputField, useSubmit } from '../components/ui';

/** Why a sign-in through the identity provider ended on this page, in words (docs/sso.md). */
const REFUSALS: Record<string, string> = {
  sso_state_unknown: 'That sign-in was already finished or took too long. Start again.',
  sso_browser_mismatch: 'That sign-in was started in another browser. Start again here.',
  sso_provider_error: 'Your identity provider did not sign you in. Try again, or ask your administrator.',
  sso_provider_refused: "Your identity provider's answer could not be trusted. Ask your administrator.",
  sso_provider_timeout: 'Your identity provider did not answer in time. Try again in a moment.',
  sso_provider_unreachable: 'Your identity provider could not be reached. Try again in a moment.',
  sso_account_exists:
    'An account with your email address exists and is not linked to your identity provider. Sign in with its password, or ask your administrator.',
  sso_no_email: 'Your identity provider did not share your email address. Ask your administrator.',
  sso_email_unverified: 'Your identity provider has not verified your email address.',
  sso_not_provisioned: 'You have no access here yet. Ask your administrator to invite you.',
  sso_identity_integrity: 'Your account link is not valid. Ask your administrator.',
  sso_role_gone: 'The sign-in connection is misconfigured. Ask your administrator.',
  sso_strength_insufficient:
    'This organization needs a stronger sign-in at your identity provider (for example with a second factor).',
  sso_reauthentication_stale: 'Your identity provider did not ask for your credentials again. Try again.',
  sso_reauthentication_other_person: 'You signed in at your identity provider as someone else.',
  sso_connection_mismatch: 'That answer came back for another sign-in connection. Start again.',
  sso_domain_not_allowed:
    'Accounts of your email domain cannot join through this connection. Ask to be invited.',
  account_disabled: 'This account is disabled.',
};

export const ssoRefusalText = (code: string) =>
  REFUSALS[code] ?? 'Signing in through your identity provider did not work. Try again.';

interface Offered {
  id: string;
  name: string;
  startUrl: string;
}

/**
 * Sign in through an organization's identity provider (SSO-1): the organization names its
 * connections, the chosen one answers where to send the browser, and the provider sends it back
 * signed in. Part of the sign-in page's chunk.
 */
export function SsoSignIn({ returnTo }: { returnTo: string }) {
  const [org, setOrg] = useState('');
  const [offered, setOffered] = useState<Offered[] | undefined>();
  const [looking, setLooking] = useState(false);
  const [lookupError, setLookupError] = useState<unknown>();
  // Leaving for the provider: stays busy, as the page is about to go.
  const { busy, error, run } = useSubmit();
  const lookUp = async () => {
    setLooking(true);
    setLookupError(undefined);
    try {
      const slug = encodeURIComponent(org.trim().toLowerCase());
      setOffered((await api<{ connections: Offered[] }>('GET', `/api/auth/sso/orgs/${slug}`)).connections);
    } catch (failure) {
      setLookupError(failure);
    } finally {
      setLooking(false);
    }
  };
  const start = (connection: Offered) =>
    run(async () => {
      const { location } = await api<{ location: string }>(
        'POST',
        `${connection.startUrl}?returnTo=${encodeURIComponent(returnTo)}`,
      );
      window.location.assign(location);
    });
  return (
    <section aria-labelledby="sso-heading" className="sso">
      <h2 id="sso-heading">Single sign-on</h2>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void lookUp();
        }}
      >
        <InputField label="Organization" autoComplete="organization" value={org} onValue={setOrg} required />
        <button type="submit" disabled={looking || busy}>
          Continue
        </button>
      </form>
      {offered?.length === 0 && <p>This organization has no single sign-on. Use your email and password.</p>}
      {offered?.map((connection) => (
        <button
          key={connection.id}
          type="button"
          className="primary"
          disabled={busy}
          onClick={() => void start(connection)}
        >
          Sign in with {connection.name}
        </button>
      ))}
      <ErrorNote error={lookupError ?? error} />
    </section>
  );
}
