import { hash } from 'node:crypto';
import { AppError } from '../errors.js';
import type { ScimPersonRow } from './scim.store.js';

/** The SCIM 2.0 schema URNs Bulwark speaks (RFC 7643, RFC 7644). */
export const SCIM = {
  user: 'urn:ietf:params:scim:schemas:core:2.0:User',
  group: 'urn:ietf:params:scim:schemas:core:2.0:Group',
  list: 'urn:ietf:params:scim:api:messages:2.0:ListResponse',
  patch: 'urn:ietf:params:scim:api:messages:2.0:PatchOp',
  error: 'urn:ietf:params:scim:api:messages:2.0:Error',
  serviceProviderConfig: 'urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig',
  resourceType: 'urn:ietf:params:scim:schemas:core:2.0:ResourceType',
  schema: 'urn:ietf:params:scim:schemas:core:2.0:Schema',
} as const;

export const SCIM_CONTENT_TYPE = 'application/scim+json; charset=utf-8';

/** The SCIM error types of RFC 7644 §3.12 that Bulwark answers with. */
export type ScimType =
  | 'invalidFilter'
  | 'tooMany'
  | 'uniqueness'
  | 'mutability'
  | 'invalidSyntax'
  | 'invalidPath'
  | 'noTarget'
  | 'invalidValue'
  | 'invalidVers';

/** A refusal in SCIM's terms: the error handler answers it with SCIM's error body. */
export class ScimError extends AppError {
  constructor(
    status: number,
    readonly scimType: ScimType | undefined,
    message: string,
  ) {
    super(status, scimType ? `scim_${scimType}` : 'scim_error', message);
  }
}

export const scimNotFound = (what: 'User' | 'Group') =>
  new ScimError(404, undefined, `No such ${what} in this organization.`);

export interface ScimUser {
  schemas: string[];
  id: string;
  externalId?: string;
  userName: string;
  displayName: string;
  name: { formatted: string };
  emails: Array<{ value: string; primary: boolean; type: string }>;
  active: boolean;
  groups: Array<{ value: string; display: string }>;
  meta: ScimMeta;
}

export interface ScimGroup {
  schemas: string[];
  id: string;
  externalId?: string;
  displayName: string;
  members?: Array<{ value: string; display: string }>;
  meta: ScimMeta;
}

interface ScimMeta {
  resourceType: 'User' | 'Group';
  created: string;
  lastModified: string;
  location: string;
  version: string;
}

/**
 * A weak ETag over the whole representation: it changes whenever anything SCIM sees changes,
 * including a change made in the console (a role, a team), which a stored counter would miss.
 */
const versionOf = (resource: object) =>
  `W/"${hash('sha256', JSON.stringify(resource), 'base64url').slice(0, 22)}"`;

function withVersion<T extends { meta: Omit<ScimMeta, 'version'> }>(resource: T): T & { meta: ScimMeta } {
  return { ...resource, meta: { ...resource.meta, version: versionOf(resource) } };
}

export function userResource(
  person: ScimPersonRow,
  groups: Array<{ value: string; display: string }>,
  base: string,
): ScimUser {
  return withVersion({
    schemas: [SCIM.user],
    id: person.id,
    ...(person.external_id ? { externalId: person.external_id } : {}),
    userName: person.user_name ?? person.email,
    displayName: person.display_name,
    name: { formatted: person.display_name },
    emails: [{ value: person.email, primary: true, type: 'work' }],
    // Active: a member here now (a person SCIM deactivated keeps only SCIM's record).
    active: person.role !== null && person.status === 'active',
    groups,
    meta: {
      resourceType: 'User' as const,
      created: new Date(person.user_created_at).toISOString(),
      lastModified: new Date(person.user_updated_at).toISOString(),
      location: `${base}/Users/${person.id}`,
    },
  });
}

export function groupResource(
  team: { id: string; name: string; external_id: string | null; created_at: number; updated_at: number },
  members: Array<{ value: string; display: string }>,
  base: string,
): ScimGroup {
  return withVersion({
    schemas: [SCIM.group],
    id: team.id,
    ...(team.external_id ? { externalId: team.external_id } : {}),
    displayName: team.name,
    members,
    meta: {
      resourceType: 'Group' as const,
      created: new Date(team.created_at).toISOString(),
      lastModified: new Date(team.updated_at).toISOString(),
      location: `${base}/Groups/${team.id}`,
    },
  });
}

/** RFC 7644 §3.14: a write that names a version must name the current one. */
export function assertVersion(resource: { meta: ScimMeta }, ifMatch: string | undefined): void {
  if (ifMatch === undefined || ifMatch.trim() === '*') return;
  const wanted = ifMatch.split(',').map((tag) => tag.trim());
  if (!wanted.includes(resource.meta.version))
    throw new ScimError(412, undefined, 'The resource changed since this version was read; read it again.');
}

/** RFC 7644 §4: what this service provider supports, as Okta and Entra ID read it. */
export function serviceProviderConfig(documentationUri: string) {
  return {
    schemas: [SCIM.serviceProviderConfig],
    documentationUri,
    patch: { supported: true },
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    filter: { supported: true, maxResults: MAX_PAGE },
    changePassword: { supported: false },
    sort: { supported: false },
    etag: { supported: true },
    authenticationSchemes: [
      {
        type: 'oauthbearertoken',
        name: 'Bearer token',
        description: "The organization's SCIM token, made under Security → SCIM in the console",
        primary: true,
      },
    ],
    meta: { resourceType: 'ServiceProviderConfig', location: '/ServiceProviderConfig' },
  };
}

/** The largest page a list answers with. */
export const MAX_PAGE = 200;

export function resourceTypes(base: string) {
  return [
    {
      schemas: [SCIM.resourceType],
      id: 'User',
      name: 'User',
      endpoint: '/Users',
      description: 'A member of the organization',
      schema: SCIM.user,
      meta: { resourceType: 'ResourceType', location: `${base}/ResourceTypes/User` },
    },
    {
      schemas: [SCIM.resourceType],
      id: 'Group',
      name: 'Group',
      endpoint: '/Groups',
      description: 'A team of the organization that SCIM manages',
      schema: SCIM.group,
      meta: { resourceType: 'ResourceType', location: `${base}/ResourceTypes/Group` },
    },
  ];
}

const attribute = (
  name: string,
  type: 'string' | 'boolean' | 'complex' | 'reference',
  options: Partial<{
    required: boolean;
    multiValued: boolean;
    mutability: string;
    uniqueness: string;
    subAttributes: unknown[];
  }> = {},
) => ({
  name,
  type,
  multiValued: options.multiValued ?? false,
  required: options.required ?? false,
  caseExact: false,
  mutability: options.mutability ?? 'readWrite',
  returned: 'default',
  uniqueness: options.uniqueness ?? 'none',
  ...(options.subAttributes ? { subAttributes: options.subAttributes } : {}),
});

/** RFC 7643 §7: the attributes Bulwark keeps; anything else a provider sends is ignored. */
export function schemas(base: string) {
  return [
    {
      schemas: [SCIM.schema],
      id: SCIM.user,
      name: 'User',
      description: 'A member of the organization',
      attributes: [
        attribute('userName', 'string', { required: true, uniqueness: 'server' }),
        attribute('externalId', 'string'),
        attribute('displayName', 'string'),
        attribute('name', 'complex', { subAttributes: [attribute('formatted', 'string')] }),
        attribute('emails', 'complex', {
          multiValued: true,
          subAttributes: [
            attribute('value', 'string'),
            attribute('primary', 'boolean'),
            attribute('type', 'string'),
          ],
        }),
        attribute('active', 'boolean'),
        attribute('groups', 'complex', { multiValued: true, mutability: 'readOnly' }),
      ],
      meta: { resourceType: 'Schema', location: `${base}/Schemas/${SCIM.user}` },
    },
    {
      schemas: [SCIM.schema],
      id: SCIM.group,
      name: 'Group',
      description: 'A team of the organization that SCIM manages',
      attributes: [
        attribute('displayName', 'string', { required: true, uniqueness: 'server' }),
        attribute('externalId', 'string'),
        attribute('members', 'complex', {
          multiValued: true,
          subAttributes: [
            attribute('value', 'string'),
            attribute('display', 'string', { mutability: 'readOnly' }),
          ],
        }),
      ],
      meta: { resourceType: 'Schema', location: `${base}/Schemas/${SCIM.group}` },
    },
  ];
}
