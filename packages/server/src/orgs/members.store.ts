import type { Kysely } from 'kysely';
import { afterCursor, type Cursor, containsAny, type SortOrder } from '../db/keyset.js';
import type { DB, UserStatus } from '../db/schema.js';

/** The columns the members list sorts by. */
export type MemberSortColumn =
  | 'users.email'
  | 'users.display_name'
  | 'memberships.role'
  | 'memberships.created_at';

export interface MemberListQuery {
  /** Found in the email or the display name. */
  text?: string;
  role?: string;
  status?: UserStatus;
  order: SortOrder<MemberSortColumn>;
  from?: Cursor;
  limit: number;
}

/** The members list, a page at a time (ACC-5); every query names its organization. */
export function createMembersStore(db: Kysely<DB>) {
  return {
    page: (orgId: string, q: MemberListQuery) => {
      let query = db
        .selectFrom('memberships')
        .innerJoin('users', 'users.id', 'memberships.user_id')
        .select([
          'users.id',
          'users.email',
          'users.display_name',
          'users.status',
          'memberships.role',
          'memberships.created_at',
        ])
        .where('memberships.org_id', '=', orgId);
      if (q.text) query = query.where(containsAny(['users.email', 'users.display_name'], q.text));
      if (q.role) query = query.where('memberships.role', '=', q.role);
      if (q.status) query = query.where('users.status', '=', q.status);
      if (q.from) query = query.where(afterCursor(q.order.column, 'users.id', q.order.direction, q.from));
      return query
        .orderBy(q.order.column, q.order.direction)
        .orderBy('users.id', q.order.direction)
        .limit(q.limit)
        .execute();
    },
  };
}

export type MembersStore = ReturnType<typeof createMembersStore>;
