import { scimPatch } from 'scim-patch';
import { type Filter, filter as matcher, parse as parseFilter } from 'scim2-parse-filter';
import { z } from 'zod';
import { MAX_PAGE, SCIM, ScimError } from './scim-resources.js';

/**
 * What Bulwark reads of the bodies identity providers send. A provider sends far more than Bulwark
 * keeps (Entra ID's enterprise extension, Okta's locale and profile attributes): unknown attributes are
 * ignored, as RFC 7643 §2 lets a service provider do; what it keeps is checked strictly.
 */

/** Entra ID has sent booleans as the strings "True" and "False". */
const ScimBoolean = z.union([
  z.boolean(),
  z
    .string()
    .regex(/^(true|false)$/i, 'is not true or false')
    .transform((text) => text.toLowerCase() === 'true'),
]);

const Email = z.string().trim().toLowerCase().max(254).email();

const UserBody = z.object({
  userName: z.string().trim().min(1).max(254),
  externalId: z.string().max(256).nullish(),
  displayName: z.string().trim().max(100).nullish(),
  name: z
    .object({
      formatted: z.string().trim().max(100).nullish(),
      givenName: z.string().trim().max(100).nullish(),
      familyName: z.string().trim().max(100).nullish(),
    })
    .nullish(),
  emails: z
    .array(
      z.object({ value: z.string().max(254), primary: ScimBoolean.nullish(), type: z.string().nullish() }),
    )
    .max(20)
    .nullish(),
  active: ScimBoolean.default(true),
});

export interface UserInput {
  userName: string;
  externalId: string | null;
  email: string;
  displayName: string;
  active: boolean;
}

function invalid(error: z.ZodError, what: string): ScimError {
  const issue = error.issues[0]!;
  const path = issue.path.join('.') || what;
  return new ScimError(400, 'invalidValue', `${path} ${issue.message}`);
}

/** A User as a provider sends it, reduced to what Bulwark keeps. */
export function userInput(body: unknown): UserInput {
  const parsed = UserBody.safeParse(body);
  if (!parsed.success) throw invalid(parsed.error, 'the user');
  const user = parsed.data;
  const emails = user.emails ?? [];
  const chosen = emails.find((email) => email.primary === true) ?? emails[0];
  // Okta and Entra ID name people by their email address; a userName that is one serves when no email is sent.
  const email = Email.safeParse(chosen?.value ?? user.userName);
  if (!email.success)
    throw new ScimError(
      400,
      'invalidValue',
      'The user needs an email address: send emails, or a userName that is one.',
    );
  const fromName = [user.name?.givenName, user.name?.familyName].filter(Boolean).join(' ');
  const displayName =
    user.displayName || user.name?.formatted || fromName || email.data.slice(0, email.data.indexOf('@'));
  return {
    userName: user.userName.toLowerCase(),
    externalId: user.externalId ?? null,
    email: email.data,
    displayName: displayName.slice(0, 100),
    active: user.active,
  };
}

const GroupBody = z.object({
  displayName: z.string().trim().min(1).max(100),
  externalId: z.string().max(256).nullish(),
  members: z
    .array(z.object({ value: z.string().max(64) }))
    .max(10_000)
    .nullish(),
});

export interface GroupInput {
  displayName: string;
  externalId: string | null;
  memberIds: string[];
}

export function groupInput(body: unknown): GroupInput {
  const parsed = GroupBody.safeParse(body);
  if (!parsed.success) throw invalid(parsed.error, 'the group');
  return {
    displayName: parsed.data.displayName,
    externalId: parsed.data.externalId ?? null,
    memberIds: [...new Set((parsed.data.members ?? []).map((member) => member.value))],
  };
}

type PatchOperation = z.infer<typeof PatchBody>['Operations'][number];

const PatchBody = z.object({
  schemas: z.array(z.string()).refine((list) => list.includes(SCIM.patch), `must include ${SCIM.patch}`),
  Operations: z
    .array(
      z.object({
        op: z.string().regex(/^(add|remove|replace)$/i, 'is not add, remove or replace'),
        path: z.string().max(512).optional(),
        value: z.unknown().optional(),
      }),
    )
    .min(1)
    .max(1000),
});

/**
 * RFC 7644 §3.5.2: the resource as the operations leave it, which the caller then applies like a
 * replacement. Operations as Okta and Entra ID send them: capitalized `op`s, a value object without a
 * path, and member removal by a path filter (`members[value eq "…"]`).
 */
export function patched<T extends object>(resource: T, body: unknown): T {
  const parsed = PatchBody.safeParse(body);
  if (!parsed.success) throw invalid(parsed.error, 'the patch');
  for (const operation of parsed.data.Operations)
    if (reachesPrototype(operation.path) || reachesPrototype(operation.value))
      throw new ScimError(400, 'invalidPath', 'The patch names an attribute no resource has.');
  try {
    return scimPatch(
      structuredClone(resource) as never,
      parsed.data.Operations.flatMap(byMemberValue) as never,
    ) as T;
  } catch (error) {
    const scimType = (error as { scimType?: string }).scimType;
    throw new ScimError(
      400,
      scimType === 'noTarget' ? 'noTarget' : 'invalidPath',
      `The patch cannot be applied: ${(error as Error).message}`.slice(0, 300),
    );
  }
}

/** Names that reach an object's prototype rather than an attribute. */
const PROTOTYPE_NAMES = /(^|[^A-Za-z0-9_$])(__proto__|constructor|prototype)([^A-Za-z0-9_$]|$)/;

/**
 * Whether a patch's path or value names the prototype anywhere: scim-patch walks paths and value
 * keys into whatever object they name, so `__proto__.x` (or a value `{ "constructor": … }`) would
 * change every object of the server, not the resource.
 */
function reachesPrototype(value: unknown, depth = 0): boolean {
  if (depth > 32) return true;
  if (typeof value === 'string') return depth === 0 && PROTOTYPE_NAMES.test(value);
  if (Array.isArray(value)) return value.some((item) => reachesPrototype(item, depth + 1));
  if (value !== null && typeof value === 'object')
    return Object.entries(value).some(
      ([key, inner]) => PROTOTYPE_NAMES.test(key) || reachesPrototype(inner, depth + 1),
    );
  return false;
}

const MEMBER_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Entra ID removes members with `path: "members"` and a value listing them by `value` alone; a member
 * as Bulwark lists it also has a `display`, so the removal is made one path filter per member.
 */
function byMemberValue(operation: PatchOperation): PatchOperation[] {
  if (
    operation.op.toLowerCase() !== 'remove' ||
    operation.path?.toLowerCase() !== 'members' ||
    !Array.isArray(operation.value)
  )
    return [operation];
  return operation.value.map((member: unknown) => {
    const id = (member as { value?: unknown } | null)?.value;
    if (typeof id !== 'string' || !MEMBER_ID.test(id))
      throw new ScimError(400, 'invalidValue', 'A member to remove is named by its id, as value.');
    return { op: 'remove', path: `members[value eq "${id}"]` };
  });
}

/** Attributes compared without regard to case (RFC 7643: userName, emails and displayName are caseExact false). */
const CASE_INSENSITIVE = new Set(['username', 'emails.value', 'emails', 'displayname']);

function lowered(node: Filter): Filter {
  switch (node.op) {
    case 'and':
    case 'or':
      return { ...node, filters: node.filters.map(lowered) };
    case 'not':
      return { ...node, filter: lowered(node.filter) };
    case '[]':
      return { ...node, valFilter: lowered(node.valFilter) };
    default:
      return 'compValue' in node &&
        typeof node.compValue === 'string' &&
        CASE_INSENSITIVE.has(node.attrPath.toLowerCase())
        ? { ...node, compValue: node.compValue.toLowerCase() }
        : node;
  }
}

/** A `filter` query (RFC 7644 §3.4.2.2) as a test over resources; userName and emails compare without case. */
export function filterOf(text: string | undefined): (resource: object) => boolean {
  if (text === undefined || text.trim() === '') return () => true;
  let parsed: Filter;
  try {
    parsed = parseFilter(text);
  } catch {
    throw new ScimError(
      400,
      'invalidFilter',
      `The filter ${JSON.stringify(text.slice(0, 200))} is not a SCIM filter.`,
    );
  }
  const test = matcher(lowered(parsed));
  return (resource) => test(caseFolded(resource) as never);
}

/** userName, displayName and emails lowercased, so that a filter's value meets them without case. */
function caseFolded(resource: object): object {
  const r = resource as Record<string, unknown>;
  return {
    ...r,
    ...(typeof r.userName === 'string' ? { userName: r.userName.toLowerCase() } : {}),
    ...(typeof r.displayName === 'string' ? { displayName: r.displayName.toLowerCase() } : {}),
    ...(Array.isArray(r.emails)
      ? { emails: r.emails.map((e: { value: string }) => ({ ...e, value: e.value.toLowerCase() })) }
      : {}),
  };
}

/** RFC 7644 §3.4.2.4: 1-based `startIndex`, `count` at most MAX_PAGE. */
export function page<T>(items: T[], startIndex: number | undefined, count: number | undefined) {
  const start = Math.max(1, startIndex ?? 1);
  const size = Math.min(MAX_PAGE, Math.max(0, count ?? MAX_PAGE));
  const resources = items.slice(start - 1, start - 1 + size);
  return {
    schemas: [SCIM.list],
    totalResults: items.length,
    startIndex: start,
    itemsPerPage: resources.length,
    Resources: resources,
  };
}
