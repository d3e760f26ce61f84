import { useId, useState } from 'react';
import { Link, NavLink, Outlet, useNavigate, useParams } from 'react-router';
import { AccessProvider, useAccess, useSession, useSignedIn } from '../session';

const SECTIONS: Array<{ path: string; label: string; permission?: string }> = [
  { path: '', label: 'Dashboard' },
  { path: 'agents', label: 'Agents', permission: 'agents:read' },
  { path: 'services', label: 'Services', permission: 'services:read' },
  { path: 'commands', label: 'Commands', permission: 'commands:read' },
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
  return (
    <AccessProvider org={org}>
      <div className="shell">
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
          <Link to="/profile">{view.user.displayName || view.user.email}</Link>
          <button type="button" onClick={() => void logout()}>
            Sign out
          </button>
        </header>
        <div className="body">
          <aside id="sidebar" className={menuOpen ? 'open' : ''}>
            <Navigation org={org} onNavigate={() => setMenuOpen(false)} />
          </aside>
          <main id="main">
            <Outlet />
          </main>
        </div>
      </div>
    </AccessProvider>
  );
}

/** A screen outside any organization (profile): the same header, no sections. */
export function PlainLayout() {
  const view = useSignedIn();
  const { logout } = useSession();
  const home = view.memberships[0] ? `/orgs/${view.memberships[0].slug}` : '/';
  return (
    <div className="shell">
      <header className="topbar">
        <Link to={home} className="brand">
          Bulwark
        </Link>
        <span className="spacer" />
        <button type="button" onClick={() => void logout()}>
          Sign out
        </button>
      </header>
      <main id="main" className="narrow">
        <Outlet />
      </main>
    </div>
  );
}
