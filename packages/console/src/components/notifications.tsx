import { useCallback, useEffect, useId, useState } from 'react';
import { useLocation } from 'react-router';
import { api } from '../api';
import { ErrorNote, When } from './ui';

export interface NotificationItem {
  id: string;
  kind: string;
  title: string;
  body: string;
  createdAt: string;
  readAt: string | null;
}

interface NotificationPage {
  notifications: NotificationItem[];
  nextCursor: string | null;
  unread: number;
}

/** The bell in the header (NOTIFY-1): the unread count, and a panel of one's own notifications. */
export function NotificationsBell() {
  const panelId = useId();
  const [open, setOpen] = useState(false);
  const [unread, setUnread] = useState(0);
  const [page, setPage] = useState<NotificationPage | undefined>();
  const [error, setError] = useState<unknown>();

  const recount = useCallback(() => {
    api<{ unread: number }>('GET', '/api/notifications/unread-count').then(
      (answer) => setUnread(answer.unread),
      // A missed count is not worth an alert; the next one will do.
      () => undefined,
    );
  }, []);

  // Counted again at every move to another screen: fresh enough for news about one's own account,
  // without a timer that keeps asking from a window left open (and whose session may have ended).
  const { pathname } = useLocation();
  // biome-ignore lint/correctness/useExhaustiveDependencies: the screen changing is the reason to count.
  useEffect(() => {
    recount();
  }, [recount, pathname]);

  const load = useCallback(async (cursor?: string) => {
    setError(undefined);
    try {
      const next = await api<NotificationPage>(
        'GET',
        `/api/notifications${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      setUnread(next.unread);
      setPage((before) =>
        cursor && before
          ? { ...next, notifications: [...before.notifications, ...next.notifications] }
          : next,
      );
    } catch (failure) {
      setError(failure);
    }
  }, []);

  const markRead = async (id: string) => {
    try {
      await api('POST', `/api/notifications/${encodeURIComponent(id)}/read`);
      const at = new Date().toISOString();
      setPage(
        (before) =>
          before && {
            ...before,
            notifications: before.notifications.map((n) =>
              n.id === id ? { ...n, readAt: n.readAt ?? at } : n,
            ),
          },
      );
      recount();
    } catch (failure) {
      setError(failure);
    }
  };

  const markAllRead = async () => {
    try {
      await api('POST', '/api/notifications/read-all');
      await load();
    } catch (failure) {
      setError(failure);
    }
  };

  return (
    <div className="notifications">
      <button
        type="button"
        className="bell"
        aria-expanded={open}
        aria-controls={panelId}
        onClick={() => {
          if (!open) void load();
          setOpen(!open);
        }}
      >
        <svg className="icon" viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">
          <path
            fill="currentColor"
            d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"
          />
        </svg>{' '}
        Notifications
        {unread > 0 && (
          <span className="count-badge">
            {unread}
            <span className="visually-hidden"> unread</span>
          </span>
        )}
      </button>
      <section id={panelId} className="notifications-panel" hidden={!open} aria-label="Notifications">
        <div className="panel-head">
          <h2>Notifications</h2>
          <button type="button" onClick={() => void markAllRead()} disabled={unread === 0}>
            Mark all read
          </button>
        </div>
        <ErrorNote error={error} />
        {page && page.notifications.length === 0 && <p className="muted">Nothing to tell you yet.</p>}
        <ul className="notification-list">
          {page?.notifications.map((n) => (
            <li key={n.id} className={n.readAt ? 'read' : 'unread'}>
              <p className="notification-title">
                {!n.readAt && <span className="badge">New</span>} {n.title}
              </p>
              {n.body && <p>{n.body}</p>}
              <p className="muted">
                <When at={n.createdAt} />
                {!n.readAt && (
                  <>
                    {' '}
                    <button type="button" className="link" onClick={() => void markRead(n.id)}>
                      Mark read<span className="visually-hidden">: {n.title}</span>
                    </button>
                  </>
                )}
              </p>
            </li>
          ))}
        </ul>
        {page?.nextCursor && (
          <button type="button" onClick={() => void load(page.nextCursor ?? undefined)}>
            Show older
          </button>
        )}
      </section>
    </div>
  );
}
