import { ID_BODY_PATTERN, type IdPrefix } from '@bulwark/protocol';
import { z } from 'zod';
import { BUILT_IN_ROLE_NAMES } from '../access/permissions.js';
import { EMAIL_SHAPE, SLUG_SHAPE } from '../shapes.js';

/** Request pieces many routes share: identifiers are checked for shape before any query runs. */

export const OrgSlug = z
  .string()
  .regex(SLUG_SHAPE, 'is not an organization slug')
  .describe('Organization slug');

export function idOf(prefix: IdPrefix) {
  return z
    .string()
    .regex(new RegExp(`^${prefix}_${ID_BODY_PATTERN}$`), `is not a ${prefix}_ identifier`)
    .describe(`${prefix}_ identifier`);
}

export const UserId = idOf('usr');
export const TeamId = idOf('tea');
export const RoleId = idOf('rol');
export const BindingId = idOf('rbd');
export const InvitationId = idOf('inv');
export const SessionId = idOf('ses');
export const AgentId = idOf('agt');
export const RegistrationTokenId = idOf('rgt');

/** A built-in role name or a custom role id. */
export const RoleRef = z
  .string()
  .regex(new RegExp(`^(${BUILT_IN_ROLE_NAMES.join('|')}|rol_${ID_BODY_PATTERN})$`), 'is not a role')
  .describe('Built-in role name or custom role id');

export const Email = z
  .string()
  .trim()
  .toLowerCase()
  .min(3)
  .max(254)
  .regex(EMAIL_SHAPE, 'is not an email address');

/** Names people choose (teams, roles): printable, trimmed, bounded. */
export const DisplayText = (max: number) =>
  z
    .string()
    .trim()
    .min(1)
    .max(max)
    .regex(/^[^\p{Cc}]+$/u, 'must not contain control characters');

export const Description = z
  .string()
  .trim()
  .max(500)
  .regex(/^[^\p{Cc}]*$/u, 'must not contain control characters');

/** Epoch milliseconds rendered ISO-8601 (DESIGN.md: store ms, render ISO). */
export const iso = (ms: number) => new Date(ms).toISOString();
export const Timestamp = z.string().describe('ISO-8601 UTC');

export const Done = z.object({ status: z.literal('done') });
export const done = { status: 'done' as const };
