import { ID_BODY_PATTERN } from '@bulwark/protocol';
import { z } from 'zod';
import { defineRoute, type RouteDefinition } from '../http/route.js';
import { Done, done, idOf, iso, Timestamp } from '../http/schemas.js';
import { SELF_PERMISSION, sessionOf } from '../identity/session-guard.js';
import { NOTIFICATION_KINDS, type NotificationsService, PAGE_SIZE } from './notifications.service.js';

const MAX_PAGE = 100;

const NotificationId = idOf('ntf');

const NotificationItem = z.object({
  id: z.string(),
  kind: z.enum(NOTIFICATION_KINDS),
  title: z.string(),
  body: z.string(),
  createdAt: Timestamp,
  readAt: Timestamp.nullable(),
});

/** `u.<id>` or `r.<id>`: where the next page starts, among the unread or the read ones. */
const Cursor = z
  .string()
  .regex(new RegExp(`^[ur]\\.ntf_${ID_BODY_PATTERN}$`), 'is not a cursor this API gave out');

/** The inbox (NOTIFY-1): every route answers only about the signed-in person's own notifications. */
export function notificationsRoutes(notifications: NotificationsService): RouteDefinition[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/api/notifications',
      operationId: 'listMyNotifications',
      summary: 'Your notifications, unread first then newest first, a page at a time, with the unread count',
      tags: ['notifications'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'read',
      query: z.strictObject({
        cursor: Cursor.optional(),
        limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(PAGE_SIZE),
      }),
      response: {
        200: z.object({
          notifications: z.array(NotificationItem),
          nextCursor: z.string().nullable(),
          unread: z.number().int(),
        }),
      },
      handler: async ({ principal, query }) => {
        const page = await notifications.list(sessionOf(principal).userId, query.cursor, query.limit);
        return {
          notifications: page.notifications.map((row) => ({
            id: row.id,
            kind: row.kind as (typeof NOTIFICATION_KINDS)[number],
            title: row.title,
            body: row.body,
            createdAt: iso(Number(row.created_at)),
            readAt: row.read_at === null ? null : iso(Number(row.read_at)),
          })),
          nextCursor: page.nextCursor,
          unread: page.unread,
        };
      },
    }),

    defineRoute({
      method: 'GET',
      url: '/api/notifications/unread-count',
      operationId: 'countMyUnreadNotifications',
      summary: 'How many of your notifications are unread (the number on the console’s bell)',
      tags: ['notifications'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'read',
      response: { 200: z.object({ unread: z.number().int() }) },
      handler: async ({ principal }) => ({
        unread: await notifications.unreadCount(sessionOf(principal).userId),
      }),
    }),

    defineRoute({
      method: 'POST',
      url: '/api/notifications/:notification/read',
      operationId: 'markMyNotificationRead',
      summary: 'Mark one of your notifications read; another person’s is not found',
      tags: ['notifications'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'write',
      params: z.strictObject({ notification: NotificationId }),
      response: { 200: Done },
      handler: async ({ principal, params }) => {
        await notifications.markRead(sessionOf(principal).userId, params.notification);
        return done;
      },
    }),

    defineRoute({
      method: 'POST',
      url: '/api/notifications/read-all',
      operationId: 'markAllMyNotificationsRead',
      summary: 'Mark all your notifications read',
      tags: ['notifications'],
      access: { permission: SELF_PERMISSION },
      rateLimit: 'write',
      response: { 200: z.object({ marked: z.number().int() }) },
      handler: async ({ principal }) => ({
        marked: await notifications.markAllRead(sessionOf(principal).userId),
      }),
    }),
  ];
}
