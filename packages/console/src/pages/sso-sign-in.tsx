import { useState } from 'react';
import { api } from '../api';
import { CurrentPasswordField, ErrorNote, InputField, useSubmit } from '../components/ui';
import { useSession } from '../session';
import type { SessionView } from '../types';

/** Why a sign-in through the identity provider ended on this page, in words (docs/sso.md). */
const REFUSALS: Record<string, string> = {
  sso_state_unknown: 'That sign-in was already finished or took too long. Start again.',
  sso_browser_mismatch: 'That sign-in was started in another browser. Start again here.',
  sso_provider_error: 'Your identity provider did not sign you in. Try again, or ask your administrator.',
  sso_provider_refused: "Your identity provider's answer could not be trusted. Ask your administrator.",
  sso_provider_timeout: 'Your identity provider did not answer in time. Try again in a moment.',
  sso_provider_unreachable: 'Your identity provider could not be reached. Try again in a moment.',
  sso_provider_blocked:
    "This server is not allowed to reach your identity provider's address. Ask your administrator.",
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
  sso_connection_kind: 'That sign-in connection does not work this way. Start again from this page.',
  sso_connection_unknown: 'That sign-in connection is gone or switched off. Start again from this page.',
  sso_domain_not_allowed:
    'Accounts of your email domain cannot join through this connection. Ask to be invited.',
  saml_unsolicited:
    'Your identity provider sent a sign-in nobody started here, and this organization does not accept those. Start the sign-in from this page.',
  saml_replayed: 'That answer from your identity provider was used already. Start again.',
  saml_response_refused: "Your identity provider's answer could not be trusted. Ask your administrator.",
  saml_wrong_recipient:
    'Your identity provider sent its answer for another address. Ask your administrator to check the ACS URL.',
  saml_no_assertion: 'Your identity provider did not say who you are. Try again, or ask your administrator.',
  invalid_credentials: 'The user name or password is not correct.',
  account_disabled: 'This account is disabled.',
};

export const ssoRefusalText = (code: string) =>
  REFUSALS[code] ?? 'Signing in through your identity provider did not work. Try again.';

interface Offered {
  id: string;
  name: string;
  kind: 'oidc' | 'ldap' | 'saml';
  startUrl: string;
  /** The organization, when found from an email address's domain. */
  org?: string;
}

/** What a lookup found: the connections, and whether it started from an email address. */
interface Found {
  byEmail: boolean;
  connections: Offered[];
}

/**
 * Sign in through an organization's identity provider (SSO-1, SSO-2, SSO-3): a work email address
 * finds the organization that verified its domain, or the organization is named; its connections
 * are offered. OIDC and SAML answer where to send the browser, and the provider sends it back
 * signed in; an LDAP directory checks a user name and password typed here. Part of the sign-in
 * page's chunk.
 */
export function SsoSignIn({ returnTo }: { returnTo: string }) {
  const [query, setQuery] = useState('');
  const [found, setFound] = useState<Found | undefined>();
  const [looking, setLooking] = useState(false);
  const [lookupError, setLookupError] = useState<unknown>();
  // Leaving for the provider: stays busy, as the page is about to go.
  const { busy, error, run } = useSubmit();
  const lookUp = async () => {
    setLooking(true);
    setLookupError(undefined);
    setFound(undefined);
    const typed = query.trim();
    try {
      const byEmail = typed.includes('@');
      const path = byEmail
        ? `/api/auth/sso/discover?email=${encodeURIComponent(typed)}`
        : `/api/auth/sso/orgs/${encodeURIComponent(typed.toLowerCase())}`;
      setFound({ byEmail, connections: (await api<{ connections: Offered[] }>('GET', path)).connections });
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
  const org = found?.connections.find((connection) => connection.org)?.org;
  return (
    <section aria-labelledby="sso-heading" className="sso">
      <h2 id="sso-heading">Single sign-on</h2>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void lookUp();
        }}
      >
        <InputField
          label="Work email or organization"
          hint="Your work email address finds your organization's sign-in; or type the organization's short name."
          value={query}
          onValue={setQuery}
          required
        />
        <button type="submit" disabled={looking || busy}>
          Continue
        </button>
      </form>
      {found?.connections.length === 0 && (
        <p role="status">
          {found.byEmail
            ? 'No organization offers single sign-on for this email address. Sign in with your email and password, or type the name of your organization.'
            : 'This organization has no single sign-on. Use your email and password.'}
        </p>
      )}
      {org && <p>Your organization: {org}</p>}
      {found?.connections.map((connection) =>
        connection.kind === 'ldap' ? (
          <DirectorySignIn key={connection.id} connection={connection} />
        ) : (
          <button
            key={connection.id}
            type="button"
            className="primary"
            disabled={busy}
            onClick={() => void start(connection)}
          >
            Sign in with {connection.name}
          </button>
        ),
      )}
      <ErrorNote error={lookupError ?? error} />
    </section>
  );
}

/**
 * An LDAP / Active Directory connection: the directory checks the user name and password, the
 * server answers with a session cookie, and the session is then read like after a password sign-in.
 */
function DirectorySignIn({ connection }: { connection: Offered }) {
  const { adopt } = useSession();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const { busy, error, run } = useSubmit();
  const submit = () =>
    run(async () => {
      await api<{ status: 'signed_in' }>('POST', connection.startUrl, { username, password });
      adopt(await api<SessionView>('GET', '/api/auth/session'));
    });
  return (
    <form
      aria-label={connection.name}
      onSubmit={(event) => {
        event.preventDefault();
        void submit();
      }}
    >
      <h3>{connection.name}</h3>
      <InputField
        label="User name"
        hint={`Your user name at ${connection.name}`}
        autoComplete="username"
        value={username}
        onValue={setUsername}
        required
      />
      <CurrentPasswordField label="Password" value={password} onValue={setPassword} />
      <ErrorNote error={error} />
      <button type="submit" className="primary" disabled={busy}>
        {busy ? 'Signing in…' : `Sign in with ${connection.name}`}
      </button>
    </form>
  );
}
