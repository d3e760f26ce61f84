import { Link, useParams } from 'react-router';
import { ApiError } from '../api';
import { useSession } from '../session';
import { ErrorNote } from './ui';

/** The way back from a dead end: the organization's dashboard, the console, or sign-in. */
function WayBack() {
  const { org } = useParams();
  const { state } = useSession();
  const back =
    org !== undefined
      ? { to: `/orgs/${encodeURIComponent(org)}`, label: 'Back to the dashboard' }
      : state.status === 'signed-in'
        ? { to: '/', label: 'Back to the console' }
        : { to: '/login', label: 'Go to sign in' };
  return (
    <p>
      <Link to={back.to}>{back.label}</Link>
    </p>
  );
}

/**
 * No such page (or no such thing: a command or an agent that is not there, or not yours to see, which
 * the server answers alike): said in words, inside the frame the person was in, with the way back.
 */
export function NotFound({ what = 'page' }: { what?: string }) {
  return (
    <section className="dead-end">
      <h1>There is no such {what}</h1>
      <p>
        The address may be mistyped, or what it pointed to was removed or is not yours to see. Check the
        address, or go back.
      </p>
      <WayBack />
    </section>
  );
}

/**
 * Not yours to open (the person's role lacks the permission): said in words, inside the frame, with
 * the way back, rather than a screen of refused requests.
 */
export function NoAccess({ title, reason }: { title: string; reason: string }) {
  return (
    <section className="dead-end">
      <h1>{title}</h1>
      <p>{reason} Ask an administrator of the organization if you need it.</p>
      <WayBack />
    </section>
  );
}

/** What a screen shows when what it is about could not be loaded: never a bare error without a way on. */
export function LoadFailed({ error, what }: { error: unknown; what: string }) {
  if (error instanceof ApiError && error.status === 404) return <NotFound what={what} />;
  if (error instanceof ApiError && error.status === 403)
    return <NoAccess title={`You do not have access to this ${what}`} reason={error.message} />;
  return (
    <section className="dead-end">
      <ErrorNote error={error} />
      <WayBack />
    </section>
  );
}
