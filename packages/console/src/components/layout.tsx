import { lazy, Suspense, useId, useState } from 'react';
import { Link, NavLink, Outlet, useMatch, useNavigate, useParams } from 'react-router';
import { LiveProvider } from '../live';
import { AccessProvider, useAccess, useSession, useSignedIn } from '../session';
import { ApprovalsBadge } from './approvals-badge';
import { NotificationsBell } from './notifications';

/**
 * The first thing a keyboard reaches on every screen (WCAG 2.4.1): past the header and sections,
 * straight to the screen's content. Hidden until focused.
 */
function SkipLink() {
  return (
    <a href="#main" className="skip-link">
      Skip to content
    </a>
  );
}

/** Where to go from a screen the organization refused: the person's other organizations, or their profile. */
function WaysOn({ current }: { current: string }) {
  const view = useSignedIn();
  const others = view.memberships.filter((m) => m.slug !== current);
  return (
    <nav aria-label="Ways on">
      <ul>
        {others.map((m) => (
          <li key={m.orgId}>
            <Link to={`/orgs/${encodeURIComponent(m.slug)}`}>Go to {m.name}</Link>
          </li>
        ))}
        <li>
          <Link to="/profile">Your profile</Link>
        </li>
      </ul>
    </nav>
  );
}

const SECTIONS: Array<{ path: string; label: string; permission?: string }> = [
  { path: '', label: 'Dashboard' },
  { path: 'agents', label: 'Agents', permission: 'agents:read' },
  { path: 'services', label: 'Services', permission: 'services:read' },
  { path: 'commands', label: 'Commands', permission: 'commands:read' },
  { path: 'bulk-runs', label: 'Bulk runs', permission: 'commands:read' },
  { path: 'approvals', label: 'Approvals', permission: 'approvals:decide' },
  { path: 'audit', label: 'Audit log', permission: 'audit:read' },
  { path: 'members', label: 'Members', permission: 'members:read' },
  { path: 'invitations', label: 'Invitations', permission: 'members:invite' },
  { path: 'teams', label: 'Teams', permission: 'teams:read' },
  { path: 'roles', label: 'Roles', permission: 'roles:read' },
  { path: 'secrets', label: 'Secrets', permission: 'secrets:read' },
  { path: 'api-keys', label: 'API keys', permission: 'apikeys:read' },
  { path: 'security', label: 'Security', permission: 'org:read' },
];

// A chunk of its own, fetched only on a refusal: the first load stays what the dashboard needs.
const NoAccess = lazy(() => import('./dead-end').then((module) => ({ default: module.NoAccess })));

/**
 * The screen, or, when the person's role lacks the permission its section needs (an address typed or
 * shared), a dead end saying so within the frame, with the way back, instead of a screen whose every
 * request is refused.
 */
function SectionScreen() {
  const access = useAccess();
  const at = useMatch('/orgs/:org/:section/*')?.params.section;
  const section = SECTIONS.find((s) => s.path !== '' && s.path === at);
  if (!section?.permission || access.can(section.permission)) return <Outlet />;
  return (
    <Suspense fallback={null}>
      <NoAccess
        title={`You do not have access to ${section.label}`}
        reason={`Your role in this organization does not give the permission “${section.permission}”.`}
      />
    </Suspense>
  );
}

function OrgSwitcher({ current }: { current: string }) {
  const view = useSignedIn();
  const navigate = useNavigate();
  const id = useId();
  if (view.memberships.length < 2) return <span className="org-name">{current}</span>;
  return (
    <span className="org-switcher">
      <label htmlFor={id} className="visually-hidden">
        Organization
      </label>
      <select id={id} value={current} onChange={(event) => navigate(`/orgs/${event.target.value}`)}>
        {view.memberships.map((m) => (
          <option key={m.orgId} value={m.slug}>
            {m.name}
          </option>
        ))}
      </select>
    </span>
  );
}

function Navigation({ org, onNavigate }: { org: string; onNavigate: () => void }) {
  const access = useAccess();
  return (
    <nav aria-label="Sections">
      <ul>
        {SECTIONS.filter((s) => !s.permission || access.can(s.permission)).map((section) => (
          <li key={section.path}>
            <NavLink
              to={`/orgs/${org}/${section.path}`}
              end={section.path === ''}
              className="sidebar-link"
              onClick={onNavigate}
            >
              {section.label}
              {section.path === 'approvals' && (
                <>
                  {' '}
                  <ApprovalsBadge org={org} />
                </>
              )}
            </NavLink>
          </li>
        ))}
      </ul>
    </nav>
  );
}

/** The frame of every organization screen: header, sections, and the screen. */
export function OrgLayout() {
  const { org = '' } = useParams();
  const view = useSignedIn();
  const { logout } = useSession();
  const [menuOpen, setMenuOpen] = useState(false);
  // One's own screens open even where the organization refuses the person (until they enrol a
  // second factor, say): they are how to get in.
  const profile = useMatch('/orgs/:org/profile');
  const password = useMatch('/orgs/:org/change-password');
  const personal = Boolean(profile ?? password);
  return (
    <div className="shell">
      <SkipLink />
      <header className="topbar">
        <Link to={`/orgs/${org}`} className="brand">
          Bulwark
        </Link>
        <OrgSwitcher current={org} />
        <button
          type="button"
          className="menu-toggle"
          aria-expanded={menuOpen}
          aria-controls="sidebar"
          onClick={() => setMenuOpen(!menuOpen)}
        >
          Menu
        </button>
        <span className="spacer" />
        <NotificationsBell />
        <Link to={`/orgs/${encodeURIComponent(org)}/profile`}>
          {view.user.displayName || view.user.email}
        </Link>
        <button type="button" onClick={() => void logout()}>
          Sign out
        </button>
      </header>
      <AccessProvider
        org={org}
        failed={(notice) => (
          <div className="body">
            <main id="main" tabIndex={-1}>
              {notice}
              {personal ? <Outlet /> : <WaysOn current={org} />}
            </main>
          </div>
        )}
      >
        <LiveProvider org={org}>
          <div className="body">
            <aside id="sidebar" className={menuOpen ? 'open' : ''}>
              <Navigation org={org} onNavigate={() => setMenuOpen(false)} />
            </aside>
            <main id="main" tabIndex={-1}>
              <SectionScreen />
            </main>
          </div>
        </LiveProvider>
      </AccessProvider>
    </div>
  );
}

/** A screen outside any organization (profile): the same header, no sections. */
export function PlainLayout() {
  const view = useSignedIn();
  const { logout } = useSession();
  const home = view.memberships[0] ? `/orgs/${view.memberships[0].slug}` : '/';
  return (
    <div className="shell">
      <SkipLink />
      <header className="topbar">
        <Link to={home} className="brand">
          Bulwark
        </Link>
        <span className="spacer" />
        <NotificationsBell />
        <Link to="/profile">{view.user.displayName || view.user.email}</Link>
        <button type="button" onClick={() => void logout()}>
          Sign out
        </button>
      </header>
      <main id="main" className="narrow" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}

/** A screen anyone may reach (no such page): the signed-in frame when signed in, else a bare one. */
export function OpenLayout() {
  const { state } = useSession();
  if (state.status === 'signed-in') return <PlainLayout />;
  return (
    <div className="shell">
      <SkipLink />
      <header className="topbar">
        <Link to="/login" className="brand">
          Bulwark
        </Link>
      </header>
      <main id="main" className="narrow" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}
