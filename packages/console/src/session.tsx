import { createContext, type ReactNode, useCallback, useContext, useEffect, useMemo, useState } from 'react';
import { Link } from 'react-router';
import { ApiError, api, orgPath, setCsrfToken, setSignedOutHandler } from './api';
import { passkeyProof } from './passkeys';
import type { MyAccess, SessionView, SignInStatus } from './types';

type SessionState =
  | { status: 'loading' }
  | { status: 'anonymous'; notice?: string }
  /** The password was right; the server waits for a code before anything else opens. */
  | { status: 'second-factor'; view: SessionView }
  | { status: 'signed-in'; view: SessionView };

interface SessionApi {
  state: SessionState;
  /** Takes the session the server answered with (sign-in, password change, re-authentication). */
  adopt(view: SessionView): void;
  login(email: string, password: string): Promise<void>;
  /** The second step of signing in: a code from an authenticator, or a recovery code. */
  verifyCode(code: string): Promise<void>;
  /** The second step of signing in with a passkey on this device. */
  verifyPasskey(): Promise<void>;
  logout(): Promise<void>;
}

const SessionContext = createContext<SessionApi | undefined>(undefined);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<SessionState>({ status: 'loading' });

  const adopt = useCallback((view: SessionView) => {
    setCsrfToken(view.csrfToken);
    setState({ status: view.secondFactorRequired ? 'second-factor' : 'signed-in', view });
  }, []);

  useEffect(() => {
    setSignedOutHandler(() => {
      setCsrfToken(undefined);
      setState({ status: 'anonymous', notice: 'Your session has ended. Sign in again.' });
    });
    // The status route answers "not signed in" with a 200: a signed-out visit logs no failed request.
    api<SignInStatus>('GET', '/api/auth/status').then(
      (status) => (status.signedIn ? adopt(status.session) : setState({ status: 'anonymous' })),
      (error: unknown) => {
        console.warn('session check failed', error);
        setState({ status: 'anonymous' });
      },
    );
    return () => setSignedOutHandler(undefined);
  }, [adopt]);

  const value = useMemo<SessionApi>(
    () => ({
      state,
      adopt,
      async login(email, password) {
        adopt(await api<SessionView>('POST', '/api/auth/login', { email, password }));
      },
      async verifyCode(code) {
        adopt(await api<SessionView>('POST', '/api/auth/mfa/verify', { code }));
      },
      async verifyPasskey() {
        adopt(await api<SessionView>('POST', '/api/auth/mfa/verify', { passkey: await passkeyProof() }));
      },
      async logout() {
        await api('POST', '/api/auth/logout').catch(() => undefined);
        setCsrfToken(undefined);
        setState({ status: 'anonymous' });
      },
    }),
    [state, adopt],
  );
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionApi {
  const session = useContext(SessionContext);
  if (!session) throw new Error('useSession outside SessionProvider');
  return session;
}

/** The signed-in session; only for screens behind the sign-in gate. */
export function useSignedIn(): SessionView {
  const { state } = useSession();
  if (state.status !== 'signed-in') throw new Error('useSignedIn on a screen that is not signed in');
  return state.view;
}

/**
 * What the caller may do in an organization, from the server's decision point (`access/me`). Controls
 * are shown or disabled from it; the server still decides every request. A permission held only
 * within a label scope counts as "may": whether a given agent is in scope is the server's answer.
 */
export interface OrgAccess {
  slug: string;
  name: string;
  role: string;
  can(permission: string): boolean;
}

const AccessContext = createContext<OrgAccess | undefined>(undefined);

export function AccessProvider({
  org,
  children,
  failed = (notice) => notice,
}: {
  org: string;
  children: ReactNode;
  /** Where the refusal is shown: the layout keeps its frame and offers a way on (a dead end never is one). */
  failed?: (notice: ReactNode) => ReactNode;
}) {
  const [access, setAccess] = useState<MyAccess | undefined>();
  const { logout } = useSession();
  const [failure, setFailure] = useState<
    { message: string; needsFactor: boolean; needsSso: boolean } | undefined
  >();
  useEffect(() => {
    setAccess(undefined);
    setFailure(undefined);
    api<MyAccess>('GET', orgPath(org, '/access/me')).then(setAccess, (error: unknown) =>
      setFailure({
        message:
          error instanceof ApiError && error.status === 404
            ? `There is no organization “${org}”, or you are not a member of it.`
            : error instanceof ApiError
              ? error.message
              : 'The organization could not be loaded.',
        needsFactor: error instanceof ApiError && error.code === 'mfa_enrolment_required',
        needsSso: error instanceof ApiError && error.code === 'sso_required',
      }),
    );
  }, [org]);
  const value = useMemo<OrgAccess | undefined>(() => {
    if (!access) return undefined;
    const held = new Set([...access.permissions, ...access.scoped.flatMap((s) => s.permissions)]);
    return { slug: access.org.slug, name: access.org.name, role: access.role, can: (p) => held.has(p) };
  }, [access]);
  if (failure)
    return failed(
      <p className="notice error" role="alert">
        {failure.message}{' '}
        {failure.needsFactor && (
          <Link to={`/orgs/${encodeURIComponent(org)}/profile`}>Open your profile</Link>
        )}
        {failure.needsSso && (
          <button type="button" onClick={() => void logout()}>
            Sign out
          </button>
        )}
      </p>,
    );
  if (!value) return <p className="muted">Loading…</p>;
  return <AccessContext.Provider value={value}>{children}</AccessContext.Provider>;
}

export function useAccess(): OrgAccess {
  const access = useContext(AccessContext);
  if (!access) throw new Error('useAccess outside AccessProvider');
  return access;
}
