import { lazy, type ReactNode, Suspense, useEffect, useRef, useState } from 'react';
import { BrowserRouter, Navigate, Route, Routes, useLocation } from 'react-router';
import { api, setStepUpPrompt } from './api';
import { OpenLayout, OrgLayout, PlainLayout } from './components/layout';
import { CurrentPasswordField, DialogActions, InputField, Loading, Modal } from './components/ui';
import { LoginPage } from './pages/login';
import { passkeyProof } from './passkeys';
import { SessionProvider, useSession } from './session';
import type { SessionView } from './types';

// Every screen but sign-in is its own chunk: the first load carries only what the login page needs.
const ChangePasswordPage = lazy(() => import('./pages/change-password'));
const DashboardPage = lazy(() => import('./pages/dashboard'));
const AgentsPage = lazy(() => import('./pages/agents'));
const AgentPage = lazy(() => import('./pages/agent'));
const ServiceHistoryPage = lazy(() => import('./pages/service-history'));
const ServicesPage = lazy(() => import('./pages/services'));
const RunActionPage = lazy(() => import('./pages/run-action'));
const CommandsPage = lazy(() => import('./pages/commands'));
const CommandPage = lazy(() => import('./pages/command'));
const BulkRunsPage = lazy(() => import('./pages/bulk-runs'));
const BulkRunPage = lazy(() => import('./pages/bulk-run'));
const ApprovalsPage = lazy(() => import('./pages/approvals'));
const AuditPage = lazy(() => import('./pages/audit'));
const MembersPage = lazy(() => import('./pages/members'));
const InvitationsPage = lazy(() => import('./pages/invitations'));
const AcceptInvitationPage = lazy(() => import('./pages/accept-invitation'));
const TeamsPage = lazy(() => import('./pages/teams'));
const RolesPage = lazy(() => import('./pages/roles'));
const ProfilePage = lazy(() => import('./pages/profile'));
const SecretsPage = lazy(() => import('./pages/secrets'));
const ApiKeysPage = lazy(() => import('./pages/api-keys'));
const SecurityPage = lazy(() => import('./pages/security'));
const NotFoundPage = lazy(() => import('./pages/not-found'));

/**
 * The re-authentication the server asks for before privileged work (step-up): shown over whatever
 * screen asked, and the request is sent again once the password is re-proved.
 */
function StepUpHost() {
  const { adopt, state } = useSession();
  const mfaEnrolled = state.status === 'signed-in' && state.view.user.mfaEnrolled;
  const [pending, setPending] = useState<((done: boolean) => void) | undefined>();
  const [password, setPassword] = useState('');
  const [code, setCode] = useState('');
  const [error, setError] = useState<unknown>();
  const pendingRef = useRef(pending);
  pendingRef.current = pending;
  useEffect(() => {
    setStepUpPrompt(
      () =>
        new Promise<boolean>((resolve) => {
          setPassword('');
          setCode('');
          setError(undefined);
          setPending(() => resolve);
        }),
    );
    return () => setStepUpPrompt(undefined);
  }, []);
  if (!pending) return null;
  const finish = (done: boolean) => {
    pending(done);
    setPending(undefined);
  };
  /** Re-proves with the password and the second factor the person chose. */
  const confirm = async (secondFactor: () => Promise<object>) => {
    try {
      adopt(await api<SessionView>('POST', '/api/auth/reauth', { password, ...(await secondFactor()) }));
      finish(true);
    } catch (failure) {
      setError(failure);
    }
  };
  return (
    <Modal title="Confirm it is you" onClose={() => finish(false)}>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          void confirm(async () => (mfaEnrolled ? { code } : {}));
        }}
      >
        <p>
          This action needs a recent sign-in. Enter your password
          {mfaEnrolled ? ', then a code from your authenticator or use a passkey,' : ''} to continue.
        </p>
        <CurrentPasswordField label="Password" value={password} onValue={setPassword} />
        {mfaEnrolled && (
          <>
            <InputField label="Code" autoComplete="one-time-code" value={code} onValue={setCode} />
            <button
              type="button"
              disabled={password === ''}
              onClick={() => void confirm(async () => ({ passkey: await passkeyProof() }))}
            >
              Confirm with a passkey
            </button>
          </>
        )}
        <DialogActions error={error} submitLabel="Confirm" onCancel={() => finish(false)} />
      </form>
    </Modal>
  );
}

/** Sends anyone not signed in to sign in, and a forced password change before anything else. */
function Gate({ children }: { children: ReactNode }) {
  const { state } = useSession();
  const location = useLocation();
  if (state.status === 'loading') return <Loading what="your session" />;
  if (state.status === 'anonymous' || state.status === 'second-factor')
    return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  if (state.view.user.passwordChangeRequired && location.pathname !== '/change-password')
    return <Navigate to="/change-password" replace />;
  return children;
}

/** One's profile opens inside one's organization's frame (header and sections), so the way back is there. */
function ProfileHome() {
  const view = useSession().state;
  const first = view.status === 'signed-in' ? view.view.memberships[0] : undefined;
  if (first) return <Navigate to={`/orgs/${encodeURIComponent(first.slug)}/profile`} replace />;
  return <ProfilePage />;
}

function Home() {
  const { state } = useSession();
  if (state.status !== 'signed-in') return null;
  const first = state.view.memberships[0];
  if (!first)
    return <p className="notice">You are not a member of any organization yet. Ask for an invitation.</p>;
  return <Navigate to={`/orgs/${first.slug}`} replace />;
}

export function App() {
  return (
    <SessionProvider>
      <BrowserRouter>
        <StepUpHost />
        <Suspense fallback={<Loading what="the screen" />}>
          <Routes>
            <Route path="/login" element={<LoginPage />} />
            <Route path="/invitations/accept" element={<AcceptInvitationPage />} />
            <Route
              element={
                <Gate>
                  <PlainLayout />
                </Gate>
              }
            >
              <Route path="/" element={<Home />} />
              <Route path="/change-password" element={<ChangePasswordPage />} />
              <Route path="/profile" element={<ProfileHome />} />
            </Route>
            <Route
              path="/orgs/:org"
              element={
                <Gate>
                  <OrgLayout />
                </Gate>
              }
            >
              <Route index element={<DashboardPage />} />
              <Route path="agents" element={<AgentsPage />} />
              <Route path="agents/:agent" element={<AgentPage />} />
              <Route path="services/:agent/:service" element={<ServiceHistoryPage />} />
              <Route path="services" element={<ServicesPage />} />
              <Route path="services/:agent/:service/:action" element={<RunActionPage />} />
              <Route path="commands" element={<CommandsPage />} />
              <Route path="commands/:command" element={<CommandPage />} />
              <Route path="bulk-runs" element={<BulkRunsPage />} />
              <Route path="bulk-runs/:run" element={<BulkRunPage />} />
              <Route path="approvals" element={<ApprovalsPage />} />
              <Route path="audit" element={<AuditPage />} />
              <Route path="members" element={<MembersPage />} />
              <Route path="invitations" element={<InvitationsPage />} />
              <Route path="teams" element={<TeamsPage />} />
              <Route path="roles" element={<RolesPage />} />
              <Route path="secrets" element={<SecretsPage />} />
              <Route path="api-keys" element={<ApiKeysPage />} />
              <Route path="security" element={<SecurityPage />} />
              <Route path="profile" element={<ProfilePage />} />
              <Route path="change-password" element={<ChangePasswordPage />} />
              <Route path="*" element={<NotFoundPage />} />
            </Route>
            <Route element={<OpenLayout />}>
              <Route path="*" element={<NotFoundPage />} />
            </Route>
          </Routes>
        </Suspense>
      </BrowserRouter>
    </SessionProvider>
  );
}
